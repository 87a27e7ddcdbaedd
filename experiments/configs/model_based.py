"""Configs for experiments/model_based.py (COPlanner / MBPO loops, ScaleZero multi-task learner).

Launch:
  python experiments/model_based.py --config=experiments/configs/model_based.py:<arg> --workdir=<dir>

`arg` is `+`-separated methods, optionally followed by `:smoke`:
  coplanner          Dyna/MBPO loop with COPlanner (conservative rollouts, optimistic exploration)
  mbpo               the same loop without COPlanner (baseline)
  scalezero          multi-task PPO learner with MoE feed-forward + Dynamic Parameter Scaling
  scalezero_dense    the same learner, dense feed-forward, no DPS
  e.g. `coplanner+mbpo`, `scalezero+scalezero_dense`, `coplanner:smoke`; `smoke` alone runs all
  four methods at CI size. Empty = coplanner+mbpo.

Expected runtime on a 2-core CPU: XLA compilation dominates. Measured on a heavily shared box
(load average 15-30): full coplanner 2,038 s and full mbpo 1,654 s (Pendulum-v1, 2 seeds vmapped,
4,000 env steps each; about 10 minutes of that is compiling the epoch program); expect several
times less on an idle machine. Full scalezero + scalezero_dense: 149 s on an idle machine.
Smoke runs are mostly compilation (minutes when the machine is loaded). Normalised-score
references for Pendulum come from the cached offline datasets (`rlpost.offline.datasets`,
generated on first use: about 10 CPU-minutes for the default preset, seconds for smoke).
"""
import ml_collections

METHODS = ("coplanner", "mbpo", "scalezero", "scalezero_dense")


def get_config(arg: str = ""):
  config = ml_collections.ConfigDict()
  config.methods = ["coplanner", "mbpo"]
  config.seeds = [0, 1]
  config.reference_preset = "default"  # dataset preset for the D4RL reference returns

  config.mbpo = ml_collections.ConfigDict()
  m = config.mbpo
  m.env_name = "pendulum"
  m.num_epochs = 14
  m.epoch_length = 250
  m.initial_random_steps = 500
  m.num_members = 5
  m.model_hidden = 64
  m.model_train_steps = 300
  m.model_batch_size = 256
  m.model_lr = 1e-3
  m.rollout_batch = 512
  m.rollout_length = 3
  m.model_retain_epochs = 4
  m.real_ratio = 0.1
  m.updates_per_step = 10
  m.batch_size = 256
  m.hidden_sizes = (64, 64)
  m.exploration_noise = 0.1
  m.candidate_noise = 0.2
  m.num_candidates = 5        # COPlanner MBPO defaults
  m.plan_horizon = 5
  m.gamma_r = 0.97
  m.gamma_u = 0.97
  m.conservative_rate = 2.0
  m.optimistic_rate = 1.0
  m.eval_episodes = 10

  config.scalezero = ml_collections.ConfigDict()
  s = config.scalezero
  s.tasks = ("CartPole-v1", "Acrobot-v1", "MountainCar-v0")
  s.target_returns = (475.0, -100.0, -110.0)
  s.num_updates = 120
  s.num_envs = 16
  s.rollout_steps = 64
  s.hidden = 64
  s.num_experts = 4
  s.num_stages = 3
  s.lora_rank = 8
  s.min_stage0_updates = 30
  s.max_stage_updates = 40
  s.load_balance_coef = 0.01
  s.learning_rate = 1e-3
  s.num_epochs = 4
  s.num_minibatches = 4
  s.eval_every = 10

  method_part, _, size = arg.partition(":")
  if method_part == "smoke" and not size:
    method_part, size = "+".join(METHODS), "smoke"
  if size not in ("", "smoke"):
    raise ValueError(f"config arg must be '<methods>[:smoke]' or 'smoke', got {arg!r}")
  if method_part:
    methods = method_part.split("+")
    for name in methods:
      if name not in METHODS:
        raise ValueError(f"config arg: unknown method {name!r}; choose from {METHODS}")
    config.methods = methods
  if size == "smoke":
    config.seeds = [0]
    config.reference_preset = "smoke"
    m.env_name = "point_mass"
    m.num_epochs = 2
    m.epoch_length = 10
    m.initial_random_steps = 20
    m.num_members = 2
    m.model_hidden = 8
    m.model_train_steps = 5
    m.model_batch_size = 16
    m.rollout_batch = 8
    m.rollout_length = 2
    m.model_retain_epochs = 2
    m.updates_per_step = 1
    m.batch_size = 16
    m.hidden_sizes = (8,)
    m.num_candidates = 2
    m.plan_horizon = 2
    m.eval_episodes = 1
    s.num_updates = 4
    s.num_envs = 2
    s.rollout_steps = 8
    s.hidden = 8
    s.num_experts = 2
    s.lora_rank = 2
    s.min_stage0_updates = 1
    s.max_stage_updates = 2
    s.num_epochs = 1
    s.num_minibatches = 1
    s.eval_every = 2
  return config
