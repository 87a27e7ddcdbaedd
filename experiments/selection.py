"""GRPO vs D3S, VADE, V0 and a difficulty curriculum on the synthetic task (issue 6).

  python experiments/selection.py --config=experiments/configs/selection.py \
    --workdir=/tmp/selection
  python experiments/selection.py --config=experiments/configs/selection.py:smoke \
    --workdir=/tmp/selection_smoke

Writes metrics.jsonl (one line per method, seed and step, plus evals), curves.png and
summary.json (per-method means/stds and each paper's mechanism metric beside GRPO's), and prints
the table. Logic: rlpost.llm.selection_experiment.run_selection.
"""
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from rlpost.llm import selection_experiment

_CONFIG = config_flags.DEFINE_config_file("config", None, "selection config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  selection_experiment.run_selection(_CONFIG.value, _WORKDIR.value, progress=True,
                                     log=lambda s: print(s, flush=True))


if __name__ == "__main__":
  app.run(main)
