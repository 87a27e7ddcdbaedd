"""IWOCS robust MDPs (Zouitine, Geist, Rachelson 2024, arXiv 2410.06212): tabular and deep.

Launch:
  python experiments/iwocs.py --config=experiments/configs/iwocs.py:tabular --workdir=/tmp/iwocs_tab
  python experiments/iwocs.py --config=experiments/configs/iwocs.py:deep --workdir=/tmp/iwocs_deep
Smoke (CI-sized; both variants, tiny; ~2-4 min on a loaded 2-core CPU, mostly compilation):
  python experiments/iwocs.py --config=experiments/configs/iwocs.py:smoke --workdir=/tmp/iwocs_smoke

Expected runtime on a 2-core CPU: tabular ~1-2 min (4 random RMDPs, 5 states, 2 actions, 3
vertices, 4 worst-case searches); deep ~5-10 min (PPO 3 x 40k CartPole steps, CMA-ES population 8
x 8 generations x 16 episodes over pole length / pole mass / force magnitude).
"""
import ml_collections

ARGS = ("tabular", "deep", "smoke", "tabular_smoke", "deep_smoke")


def get_config(arg: str = "deep") -> ml_collections.ConfigDict:
  if arg not in ARGS:
    raise ValueError(f"config arg must be one of {ARGS}; got {arg!r}")
  smoke = arg.endswith("smoke")
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.variants = {"tabular": ("tabular",), "deep": ("deep",), "smoke": ("tabular", "deep"),
                "tabular_smoke": ("tabular",), "deep_smoke": ("deep",)}[arg]
  c.tabular = ml_collections.ConfigDict(dict(
      num_problems=1 if smoke else 4, num_states=5, num_actions=2, num_vertices=3,
      num_iterations=1 if smoke else 4, population_size=8 if smoke else 16,
      num_generations=5 if smoke else 60))
  c.deep = ml_collections.ConfigDict(dict(
      seed=0,
      num_iterations=1 if smoke else 2,
      population_size=4 if smoke else 8,
      num_generations=2 if smoke else 8,
      num_episodes=2 if smoke else 16,
      ppo=dict(num_envs=2 if smoke else 4, num_steps=16 if smoke else 128,
               total_timesteps=64 if smoke else 40_960, update_epochs=1 if smoke else 4,
               num_minibatches=1 if smoke else 4, hidden_size=8 if smoke else 64,
               lr=2.5e-4 if smoke else 1e-3),
      uncertainty=dict(names=("length", "masspole", "force_mag"), low=(0.25, 0.05, 5.0),
                       high=(1.0, 0.5, 15.0), max_steps=50 if smoke else 200),
  ))
  return c
