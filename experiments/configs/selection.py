"""Configs for experiments/selection.py: GRPO vs D3S, VADE, V0 and a curriculum (issue 6).

Args (`--config=experiments/configs/selection.py:<arg>`):
  default  every method from the shipped SFT checkpoint (rlpost/assets/sft) on a pool of level-1
           and level-2 sum/difference problems (500 each), 3 seeds, 10 RL steps of 8 prompts x 4
           completions each, greedy held-out accuracy on 100 test problems per level:
             python experiments/selection.py --config=experiments/configs/selection.py \
               --workdir=/tmp/selection
           Measured: 156 s wall (132 s user CPU) on the 2-core CPU at load ~3.
  smoke    CI-sized (tiny random model, 1 seed, 1 step per method, 4 eval problems per level):
           48 s of CPU (16 min wall at load ~20).
Method hyperparameters live in config.selection.{vade,v0,curriculum} and d3s_*; train_llm fields
(rl.*, objective_overrides, prompt_len, ...) apply as in experiments/configs/train_llm.py.
"""
import importlib.util
import pathlib

import ml_collections


def _train_llm_config(arg: str) -> ml_collections.ConfigDict:
  path = pathlib.Path(__file__).resolve().parent / "train_llm.py"
  spec = importlib.util.spec_from_file_location("train_llm_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  # "default" here is the rows-only start (rlpost/assets/sft), not the main job's mixed start.
  return module.get_config("rows" if arg == "default" else arg)


def get_config(arg: str = "default") -> ml_collections.ConfigDict:
  if arg not in ("default", "smoke"):
    raise ValueError(f"config arg must be 'default' or 'smoke'; got {arg!r}")
  c = _train_llm_config(arg)
  c.control = False
  c.objective = "grpo"
  c.prompt_len = 64  # a power of two (the sampler bucket); longer prompts are dropped
  c.task.levels = (1, 2)
  c.task.train_size = 8  # build()'s own single-level pool is unused (the selection pool replaces it)
  c.sft.steps = 0
  c.rl.update(steps=10, batch_size=32, group_size=4, micro_batch_size=32, max_new_tokens=32,
              learning_rate=5e-4, eval_every=0)
  c.selection = ml_collections.ConfigDict(dict(
      methods=("grpo", "d3s", "vade", "v0", "curriculum"), seeds=(0, 1, 2),
      train_per_level=500, eval_per_level=100,
      d3s_sample_keep=2, d3s_token_keep_frac=0.5,
      vade=dict(alpha0=1.0, beta0=1.0, rho_glob=0.99, rho_loc=0.9, thompson=True),
      # candidate_factor 1: the 8 prompts share 32 completions, so budgets vary in [2, 18]
      # (factor 2 would give 16 candidates x b_min 2 = the whole batch: every group of 2).
      v0=dict(candidate_factor=1, b_min=2, b_max=128, history=512, fit_steps=50, lr=0.5, l2=1e-3,
              variable_groups=True),
      curriculum=dict(focus=0.5, momentum=0.9, promote_at=0.25, min_visits=64)))
  c.eval.update(size=8, batch_size=100)
  if arg == "smoke":
    c.rl.update(steps=1, batch_size=8, group_size=4, micro_batch_size=8, max_new_tokens=8)
    c.selection.update(seeds=(0,), train_per_level=8, eval_per_level=4)
    c.selection.curriculum.min_visits = 4
    c.eval.update(size=4, batch_size=4)
  return c
