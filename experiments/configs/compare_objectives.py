"""Configs for experiments/compare_objectives.py: several objectives, one SFT start, same seeds.

Args:
  default  grpo, dr_grpo, dapo, gspo, cispo, rloo, reinforce_pp from the shipped SFT checkpoint
           (rlpost/assets/sft), 40 RL steps each, 500 held-out test problems:
             python experiments/compare_objectives.py \
               --config=experiments/configs/compare_objectives.py --workdir=/tmp/compare
           Expected runtime on a 2-core CPU: about 7 x 4 min.
  smoke    two objectives (grpo, dapo), tiny model, a shared 4-step SFT start: < 1.5 min.
All train_llm fields apply (see experiments/configs/train_llm.py).
"""
import importlib.util
import pathlib

import ml_collections


def _train_llm_config(arg: str) -> ml_collections.ConfigDict:
  path = pathlib.Path(__file__).resolve().parent / "train_llm.py"
  spec = importlib.util.spec_from_file_location("train_llm_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def get_config(arg: str = "default") -> ml_collections.ConfigDict:
  if arg not in ("default", "smoke"):
    raise ValueError(f"config arg must be 'default' or 'smoke'; got {arg!r}")
  c = _train_llm_config(arg)
  c.control = False
  if arg == "default":
    c.objectives = ("grpo", "dr_grpo", "dapo", "gspo", "cispo", "rloo", "reinforce_pp")
    c.rl.steps = 40
  else:
    c.objectives = ("grpo", "dapo")
    c.rl.eval_every = 0
  return c
