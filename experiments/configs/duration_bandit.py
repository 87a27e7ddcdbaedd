"""Configs for experiments/duration_bandit.py: asynchronous PG on a bandit whose slow arm pays more.

Args (`--config=experiments/configs/duration_bandit.py:<arg>`):
  default  2 arms (durations 1 and 4, mean rewards 1 and 2); each of 300 updates launches 128
           rollouts and trains on the first 16 to finish; 3 seeds; unweighted vs duration-weighted
           REINFORCE (A = r):
             python experiments/duration_bandit.py \
               --config=experiments/configs/duration_bandit.py --workdir=/tmp/duration_bandit
           Measured: ~25 s of simulation at load ~20 (plus start-up).
  smoke    60 updates, 1 seed: a few seconds.
"""
import ml_collections


def get_config(arg: str = "default") -> ml_collections.ConfigDict:
  if arg not in ("default", "smoke"):
    raise ValueError(f"config arg must be 'default' or 'smoke'; got {arg!r}")
  c = ml_collections.ConfigDict()
  c.seeds = (0, 1, 2)
  c.durations = (1.0, 4.0)  # arm 0 fast, arm 1 slow
  c.rewards = (1.0, 2.0)  # the slow arm pays more (but less per unit of time)
  c.reward_noise = 0.1
  c.num_workers = 128
  c.batch_size = 16
  c.num_updates = 300
  c.learning_rate = 0.1
  c.log_every = 5
  if arg == "smoke":
    c.seeds = (0,)
    c.num_updates = 60
  return c
