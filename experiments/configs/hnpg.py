"""HNPG on a combination lock: hybrid NPG vs on-policy NPG vs offline-only fitting.

Launch:
  python experiments/hnpg.py --config=experiments/configs/hnpg.py --workdir=runs/hnpg
  python experiments/hnpg.py --config=experiments/configs/hnpg.py:smoke --workdir=/tmp/hnpg_smoke
Expected runtime on a 2-core CPU: default about 6 minutes (3 variants x 2 seeds x 30 iterations,
H=10); smoke under 1 minute.
"""
import ml_collections


def get_config(arg: str = "default") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.horizon = 10
  c.num_actions = 4
  c.noise_dims = 2
  c.iterations = 30
  c.batch = 256
  c.offline_episodes = 256
  c.critic_steps = 30
  c.max_kl = 0.01
  c.seeds = 2
  c.variants = ("hnpg", "npg", "offline")
  if arg == "smoke":
    c.horizon, c.num_actions, c.noise_dims = 3, 2, 1
    c.iterations, c.batch, c.offline_episodes, c.critic_steps, c.seeds = 2, 32, 32, 5, 1
  elif arg != "default":
    raise ValueError(f"unknown config arg {arg!r}; valid: default, smoke")
  return c
