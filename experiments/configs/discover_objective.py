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

LPG family (TA-LPG, Jackson et al. 2024, arXiv 2402.05828; LPG, Oh et al. 2020): config args
`ta_lpg`, `lpg` (and `ta_lpg_smoke`, `lpg_smoke`), e.g.
  python experiments/discover_objective.py \
    --config=experiments/configs/discover_objective.py:ta_lpg --workdir=/tmp/discover_ta_lpg
meta-trains the reverse-GRU LPG on CartPole agents (8 envs x 16 steps per update) with Open_ES
(population 8, 6 generations, lifetimes 8-32 updates), then compares with PPO at the same envs x
steps on lifetimes 4, 16, 32, 64 (4 and 64 held out). Expected runtime: ~5-10 min on an idle
2-core CPU (smoke: ~1-2 min, mostly compilation); several times longer on a shared, loaded box. `lpg_progress_mode="raw"` feeds groove's raw step and
lifetime instead of the paper's n/N and log N.
"""
import ml_collections


ARGS = ("default", "smoke", "ta_lpg", "ta_lpg_smoke", "lpg", "lpg_smoke")


def get_config(arg: str = "default") -> ml_collections.ConfigDict:
  if arg not in ARGS:
    raise ValueError(f"config arg must be one of {ARGS}; got {arg!r}")
  if arg not in ("default", "smoke"):
    return _lpg_config(arg)
  smoke = arg == "smoke"
  c = ml_collections.ConfigDict()
  c.family = "lpo"
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
  c.es = _es_config(smoke, population_size=16, num_generations=16)
  c.eval = ml_collections.ConfigDict(dict(
      num_seeds=2 if smoke else 4,
      # In-distribution (8, 16, 32) and held-out (4 shorter, 64 longer) lifetimes.
      train_env_lifetimes=(2, 4) if smoke else (4, 8, 16, 32, 64),
      heldout_env="Acrobot-v1",
      heldout_env_lifetimes=() if smoke else (32, 64),
  ))
  return c


def _lpg_config(arg: str) -> ml_collections.ConfigDict:
  """LPG / TA-LPG meta-training (family "lpg")."""
  smoke = arg.endswith("_smoke")
  name = arg.removesuffix("_smoke")
  c = ml_collections.ConfigDict()
  c.family = "lpg"
  c.seed = 0
  c.fast_compile = True  # XLA -O0: the GRU-heavy program compiles ~3x faster on CPU
  c.train_env = "CartPole-v1"
  c.objectives = (name,)
  c.lpg_progress_mode = "paper"  # "paper": n/N, log N; "raw": groove's raw step and lifetime
  # Inner agent (paper: 64 envs, rollout 20, GRU 256); CPU-sized here.
  c.lpg = ml_collections.ConfigDict(dict(
      num_envs=2 if smoke else 8,
      num_steps=8 if smoke else 16,
      hidden_size=16 if smoke else 32,
      target_width=8,
      gru_width=8 if smoke else 32,
      lr=1e-3,
      target_coef=0.5,
  ))
  # PPO baseline at the same envs x steps per update (other fields: PureJaxRL CartPole).
  c.ppo = ml_collections.ConfigDict(dict(
      update_epochs=1 if smoke else 4,
      num_minibatches=1 if smoke else 4,
      hidden_size=16 if smoke else 32,
      lr=2.5e-4,
      anneal_lr=True,
  ))
  c.es = _es_config(smoke, population_size=8, num_generations=6)
  c.eval = ml_collections.ConfigDict(dict(
      num_seeds=2 if smoke else 4,
      train_env_lifetimes=(2, 4) if smoke else (4, 16, 32, 64),
      heldout_env="Acrobot-v1",
      heldout_env_lifetimes=(),  # LPG family: held-out lifetimes only
  ))
  return c


def _es_config(smoke: bool, *, population_size: int, num_generations: int):
  """Open_ES settings; lifetimes are log-uniform in [min_lifetime, max_lifetime] updates."""
  return ml_collections.ConfigDict(dict(
      population_size=2 if smoke else population_size,
      num_generations=2 if smoke else num_generations,
      learning_rate=1e-2,
      lr_decay=0.999,
      sigma_init=0.1,
      seeds_per_member=1,
      min_lifetime=2 if smoke else 8,
      max_lifetime=3 if smoke else 32,
      fitness_shaping="centered_rank",
  ))
