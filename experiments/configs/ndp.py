"""Config for experiments/ndp.py (Neural Dynamic Policies: imitation + RL).

Launch:
  python experiments/ndp.py --config=experiments/configs/ndp.py --workdir=/tmp/ndp
  python experiments/ndp.py --config=experiments/configs/ndp.py:smoke --workdir=/tmp/ndp_smoke
  python experiments/ndp.py --config=experiments/configs/ndp.py:rl --workdir=/tmp/ndp_rl
Args: "" (full: imitation + RL), "imitation", "rl", "smoke" (CI-sized, both parts).
Expected runtime on a 2-core CPU: full about 10 min (XLA compile is ~20-40 s per model on a busy
machine), smoke about 1 min.
"""
import ml_collections


def get_config(arg: str = ""):
  arg = arg or "all"
  if arg not in ("all", "imitation", "rl", "smoke"):
    raise ValueError(f"config arg must be '', 'imitation', 'rl' or 'smoke'; got {arg!r}")
  c = ml_collections.ConfigDict()
  c.mode = "all" if arg == "smoke" else arg
  c.seed = 0

  c.imitation = ml_collections.ConfigDict()
  c.imitation.train_sizes = (20, 100, 500)
  c.imitation.test_size = 500
  c.imitation.steps = 1500
  c.imitation.hidden = (128, 128)
  c.imitation.weight_scale = 100.0
  c.imitation.dmp = dict(num_basis=20, chunk_len=40, substeps=5, a_z=25.0,
                         forcing_scaling="unit")

  c.rl = ml_collections.ConfigDict()
  c.rl.seed = 0
  c.rl.tasks = ("reacher", "throwing")
  c.rl.policies = ("ndp", "mlp")
  c.rl.hidden = (100, 100)
  c.rl.init_log_std = -1.0
  c.rl.log_every = 10
  # NDP paper PPO: lr 3e-4, gamma .99, lambda .95, clip 0.1, 10 epochs; 32 minibatches -> 4 here.
  c.rl.ppo = dict(num_envs=32, num_iterations=150, learning_rate=3e-4, clip_eps=0.1,
                  update_epochs=10, num_minibatches=4, gamma=0.99, gae_lambda=0.95)
  # DMPNet class defaults for the reacher; the paper's throw script uses T 5, N 5, a_z 5.
  c.rl.dmp = dict(reacher=dict(num_basis=5, chunk_len=10, substeps=10, a_z=25.0),
                  throwing=dict(num_basis=5, chunk_len=5, substeps=10, a_z=5.0))

  if arg == "smoke":
    c.imitation.train_sizes = (8,)
    c.imitation.test_size = 32
    c.imitation.steps = 20
    c.imitation.hidden = (32,)
    c.imitation.dmp = dict(num_basis=5, chunk_len=10, substeps=2, a_z=25.0,
                           forcing_scaling="unit")
    c.rl.tasks = ("throwing",)
    c.rl.hidden = (16,)
    c.rl.log_every = 1
    c.rl.ppo = dict(num_envs=4, num_iterations=2, update_epochs=1, num_minibatches=2,
                    clip_eps=0.1)
  return c
