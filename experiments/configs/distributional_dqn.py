"""Stock-augmented categorical DQN on CartPole: expectation vs CVaR agent (arXiv 2501.13028).

Launch (default, CPU-sized):
  python experiments/distributional_dqn.py \
    --config=experiments/configs/distributional_dqn.py --workdir=/tmp/dist_dqn
Smoke (CI-sized, ~1 min on a loaded 2-core CPU, mostly compilation):
  python experiments/distributional_dqn.py \
    --config=experiments/configs/distributional_dqn.py:smoke --workdir=/tmp/dist_dqn_smoke

Expected runtime of the default on a 2-core CPU: ~3-6 min (2 objectives x 2 seeds vmapped x
4 envs x 5000 steps, then 64 greedy evaluation episodes per seed).
"""
import ml_collections


def get_config(arg: str = "default") -> ml_collections.ConfigDict:
  if arg not in ("default", "smoke"):
    raise ValueError(f"config arg must be 'default' or 'smoke'; got {arg!r}")
  smoke = arg == "smoke"
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.fast_compile = smoke
  c.objectives = ("expectation", "cvar")
  c.tau = 0.25  # CVaR level (agent objective and reported statistic)
  c.num_seeds = 1 if smoke else 2
  c.num_eval_episodes = 4 if smoke else 64
  c.dqn = ml_collections.ConfigDict(dict(
      env_name="CartPole-v1",
      num_atoms=11 if smoke else 51,
      v_min=0.0,
      v_max=100.0,
      num_stocks=3 if smoke else 11,
      gamma=0.99,
      num_envs=2 if smoke else 4,
      num_iterations=50 if smoke else 5000,
      buffer_size=500 if smoke else 20_000,
      batch_size=16 if smoke else 64,
      learning_starts=20 if smoke else 1000,
      target_update_every=10 if smoke else 250,
      lr=5e-4,
      hidden_size=16 if smoke else 64,
  ))
  return c
