"""Discover a PPO objective (LPO and TA-LPO drifts) with Open_ES, then test how it generalises.

Launch (the default, CPU-sized run):
  python experiments/discover_objective.py \
    --config=experiments/configs/discover_objective.py --workdir=/tmp/discover_objective
Smoke (CI-sized, ~1 min on a 2-core CPU, mostly compilation):
  python experiments/discover_objective.py \
    --config=experiments/configs/discover_objective.py:smoke --workdir=/tmp/discover_smoke

Expected runtime of the default on a 2-core CPU: about 10-15 min (meta-training: 2 objectives x
population 16 x 16 generations x 32 updates of 256 CartPole steps; evaluation on CartPole and
Acrobot), longer when the CPU is shared. The smoke skips the held-out env (one compile less).
Paper scale (population 32-512, 1000+ generations, GPU) is far beyond this.
"""
import ml_collections


def get_config(arg: str = "default") -> ml_collections.ConfigDict:
  if arg not in ("default", "smoke"):
    raise ValueError(f"config arg must be 'default' or 'smoke'; got {arg!r}")
  smoke = arg == "smoke"
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.fast_compile = smoke  # XLA -O0: ~3x faster CPU compilation, slower steps
  c.train_env = "CartPole-v1"
  c.objectives = ("lpo", "ta_lpo")
  c.ppo_init = True  # D = ReLU(D_PPO + net - 1e-4): the search starts at PPO
  c.drift_hidden_size = 16 if smoke else 128
  c.init_output_scale = 0.0  # zero output layer: the initial ES mean is exactly PPO-clip
  # Inner PPO (PureJaxRL CartPole defaults, fewer envs and shorter rollouts).
  c.ppo = ml_collections.ConfigDict(dict(
      num_envs=2 if smoke else 8,
      num_steps=8 if smoke else 32,
      update_epochs=1 if smoke else 4,
      num_minibatches=1 if smoke else 4,
      hidden_size=16 if smoke else 64,
      lr=2.5e-4,
      anneal_lr=True,
  ))
  # Open_ES; lifetimes are log-uniform in [min_lifetime, max_lifetime] updates.
  c.es = ml_collections.ConfigDict(dict(
      population_size=2 if smoke else 16,
      num_generations=2 if smoke else 16,
      learning_rate=1e-2,
      lr_decay=0.999,
      sigma_init=0.1,
      seeds_per_member=1,
      min_lifetime=2 if smoke else 8,
      max_lifetime=3 if smoke else 32,
      fitness_shaping="centered_rank",
  ))
  c.eval = ml_collections.ConfigDict(dict(
      num_seeds=2 if smoke else 4,
      # In-distribution (8, 16, 32) and held-out (4 shorter, 64 longer) lifetimes.
      train_env_lifetimes=(2, 4) if smoke else (4, 8, 16, 32, 64),
      heldout_env="Acrobot-v1",
      heldout_env_lifetimes=() if smoke else (32, 64),
  ))
  return c
