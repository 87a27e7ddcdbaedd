"""Config for experiments/lpn.py (action-Jacobian penalty and Linear Policy Nets).

Launch:
  python experiments/lpn.py --config=experiments/configs/lpn.py --workdir=/tmp/lpn
  python experiments/lpn.py --config=experiments/configs/lpn.py:smoke --workdir=/tmp/lpn_smoke
Args: "" (full: 4 variants x 150 PPO iterations x 1600 steps), "smoke" (CI-sized: LPN only,
2 iterations) or "jacobian_coef=<float>" (full run with another Jacobian coefficient), e.g.
  python experiments/lpn.py --config=experiments/configs/lpn.py:jacobian_coef=0.01 --workdir=/tmp/lpn_j

Expected runtime on a 2-core CPU: full about 6-10 min (XLA compile is ~15-50 s per variant on a
busy machine), smoke about 1 min.
"""
import ml_collections


def get_config(arg: str = ""):
  jac = None
  if arg.startswith("jacobian_coef="):
    jac, arg = float(arg.split("=", 1)[1]), ""
  if arg not in ("", "smoke"):
    raise ValueError(f"config arg must be '', 'smoke' or 'jacobian_coef=<float>'; got {arg!r}")
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.variants = ("mlp", "mlp_action_change", "mlp_jacobian", "lpn_jacobian")
  c.jacobian_coef = 1e-3  # not given by the paper; one setting for both Jacobian variants
  c.action_change_coef = 1.0
  c.hidden = (64, 64)
  c.init_log_std = -1.0
  c.eval_episodes = 16
  c.cutoff_hz = 3.0  # reference harmonics are 0.4 and 0.8 Hz; Nyquist is 10 Hz
  c.log_every = 10
  c.ppo = dict(num_envs=16, num_iterations=150, learning_rate=3e-4, clip_eps=0.2,
               update_epochs=10, num_minibatches=4, gamma=0.99, gae_lambda=0.95)
  c.task = dict(horizon=100, dt=0.05, obs_noise=0.02)
  if jac is not None:
    c.jacobian_coef = jac
    c.variants = ("mlp_jacobian", "lpn_jacobian")
  if arg == "smoke":
    c.variants = ("lpn_jacobian",)
    c.hidden = (16,)
    c.eval_episodes = 2
    c.log_every = 1
    c.ppo = dict(num_envs=4, num_iterations=2, update_epochs=1, num_minibatches=2)
    c.task = dict(horizon=20, dt=0.05, obs_noise=0.02)
  return c
