"""Sample complexity of variance-reduced policy-gradient optimizers (N-PG-IGT, N-HARPG).

Compares vanilla REINFORCE (GPOMDP + SGD), normalised momentum (N-MPG), N-PG-IGT and N-HARPG
(Fatkhullin et al., ICML 2023, arXiv 2302.01734) on gymnax CartPole-v1 and a linear-quadratic
control task; plots return against trajectories sampled.

Launch (default, CPU-sized):
  python experiments/pg_optimizers.py \
    --config=experiments/configs/pg_optimizers.py --workdir=/tmp/pg_optimizers
Smoke (CI-sized, < 1 min on a 2-core CPU, mostly compilation):
  python experiments/pg_optimizers.py \
    --config=experiments/configs/pg_optimizers.py:smoke --workdir=/tmp/pg_optimizers_smoke

Expected runtime of the default on an idle 2-core CPU: about 3-6 minutes (2 envs x 4 methods,
4 seeds vmapped, 300 iterations of 8 trajectories; N-HARPG samples a second batch per iteration).
"""
import ml_collections

METHODS = ("reinforce", "n_momentum", "n_pg_igt", "n_harpg")
ENVS = ("cartpole", "lq")


def get_config(arg: str = "default") -> ml_collections.ConfigDict:
  if arg not in ("default", "smoke"):
    raise ValueError(f"config arg must be 'default' or 'smoke'; got {arg!r}")
  smoke = arg == "smoke"
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.envs = ENVS
  c.methods = METHODS
  c.num_seeds = 2 if smoke else 4
  c.num_iterations = 4 if smoke else 300
  c.batch_size = 2 if smoke else 8  # trajectories per gradient (N-HARPG uses 2x: tau and tau^)
  c.discount = 0.99
  # Learning rates: best of a 2-point sweep per method on these same 4 seeds (BUILD_NOTES), so
  # the comparison is tuned, not held-out: CartPole REINFORCE {5e-4, 2e-3}, normalised
  # {0.05, 0.2, 0.5}; LQ REINFORCE {5e-4, 2e-3}, normalised {0.02, 0.05}.
  c.cartpole = ml_collections.ConfigDict(dict(
      horizon=16 if smoke else 200,
      threshold=150.0,  # return for the "trajectories to threshold" sample-complexity column
      # gamma_t: learning rate of SGD (REINFORCE) / step length of the normalised methods.
      lr=dict(reinforce=2e-3, n_momentum=0.2, n_pg_igt=0.2, n_harpg=0.2),
  ))
  c.lq = ml_collections.ConfigDict(dict(
      horizon=8 if smoke else 20,
      action_std=0.3,
      threshold=-15.0,
      lr=dict(reinforce=5e-4, n_momentum=0.05, n_pg_igt=0.05, n_harpg=0.02),
  ))
  # eta_t: "paper" uses the defaults of rlpost.core.optim ((2/(t+2))^{4/5} for IGT, 2/(t+2) for
  # HARPG and N-MPG); a float gives a constant eta (eta_0 is always 1).
  c.momentum = "paper"
  c.lr_decay_power = 0.5  # gamma_t = lr / (1 + t)^power for the normalised methods (0 = constant)
  return c
