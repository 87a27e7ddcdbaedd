"""Configs for experiments/multiobjective.py: Pareto fronts of reward-weighting schemes.

Args (`--config=experiments/configs/multiobjective.py:<arg>`):
  default  7 response templates (accuracy, length, format), 5 initial weight vectors, 3 seeds,
           300 steps of 8 queries x 16 samples; methods linear, hv_guided, gradient, hierarchical,
           contrastive:
             python experiments/multiobjective.py \
               --config=experiments/configs/multiobjective.py --workdir=/tmp/multiobjective
           Measured: 8 min wall on the shared 2-core CPU at load ~20 (mostly compilation).
  smoke    30 steps, 1 seed, 2 weight vectors: ~30 s of CPU (68 s wall under load).
"""
import ml_collections


def get_config(arg: str = "default") -> ml_collections.ConfigDict:
  if arg not in ("default", "smoke"):
    raise ValueError(f"config arg must be 'default' or 'smoke'; got {arg!r}")
  c = ml_collections.ConfigDict()
  c.methods = ("linear", "hv_guided", "gradient", "hierarchical", "contrastive")
  c.seeds = (0, 1, 2)
  # (success probability, length in tokens, format flag) per template.
  c.templates = ((0.9, 60.0, 0.0), (0.8, 40.0, 1.0), (0.6, 20.0, 1.0), (0.3, 10.0, 0.0),
                 (0.5, 30.0, 0.0), (0.2, 50.0, 0.0), (0.7, 25.0, 0.0))
  c.weights = ((1 / 3, 1 / 3, 1 / 3), (0.5, 0.25, 0.25), (0.25, 0.375, 0.375), (0.8, 0.1, 0.1),
               (0.1, 0.8, 0.1))
  c.num_queries = 8
  c.group_size = 16  # K (ChatShopBuddy keeps K / 2)
  c.steps = 300
  c.learning_rate = 0.5
  c.lam = 5.0  # lr / lam = 0.1 as in the paper (1e-6 / 1e-5)
  c.log_every = 10
  if arg == "smoke":
    c.seeds = (0,)
    c.steps = 30
    c.weights = c.weights[:2]
  return c
