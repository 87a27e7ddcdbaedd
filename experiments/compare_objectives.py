"""Compare RL objectives from the same SFT start and seeds (accuracy, entropy, zero-spread).

  python experiments/compare_objectives.py \
    --config=experiments/configs/compare_objectives.py --workdir=/tmp/compare_objectives
  python experiments/compare_objectives.py \
    --config=experiments/configs/compare_objectives.py:smoke --workdir=/tmp/compare_smoke

Writes <workdir>/<objective>/ (a full train_llm run each: metrics.jsonl, curves.png,
summary.json, ...), comparison.png, comparison.md / comparison.json, and prints the table.
Logic: rlpost.llm.train.compare_objectives.

Issue 5 (seed objectives vs grpo, N seeds each, mechanism metrics, summary.json with one entry
per objective; logic in rlpost.llm.compare):
  python experiments/compare_objectives.py \
    --config=experiments/configs/compare_objectives.py:seed --workdir=/tmp/cmp_seed
  python experiments/compare_objectives.py \
    --config=experiments/configs/compare_objectives.py:seed_smoke --workdir=/tmp/cmp_seed_smoke
"""
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from rlpost.llm import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "compare_objectives config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  train.compare_objectives(_CONFIG.value, _WORKDIR.value, progress=True,
                           log=lambda s: print(s, flush=True))


if __name__ == "__main__":
  app.run(main)
