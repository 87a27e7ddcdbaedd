"""Pareto fronts of fixed, HV-guided, gradient-based, hierarchical and contrastive reward weighting.

Logic: rlpost.llm.selection_toys.run_multiobjective_experiment (issue 6).

  python experiments/multiobjective.py --config=experiments/configs/multiobjective.py --workdir=/tmp/multiobjective
  python experiments/multiobjective.py --config=experiments/configs/multiobjective.py:smoke \
    --workdir=/tmp/multiobjective_smoke

Writes metrics.jsonl, curves.png and summary.json, and prints the final table.
"""
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from rlpost.llm import selection_toys

_CONFIG = config_flags.DEFINE_config_file("config", None, "multiobjective config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  selection_toys.run_multiobjective_experiment(_CONFIG.value, _WORKDIR.value, progress=True,
                        log=lambda s: print(s, flush=True))


if __name__ == "__main__":
  app.run(main)
