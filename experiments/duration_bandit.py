"""Asynchronous PG on a bandit whose slow arm pays more: unweighted vs duration-weighted (issue 6).

Logic: rlpost.llm.selection_toys.run_duration_bandit_experiment.

  python experiments/duration_bandit.py --config=experiments/configs/duration_bandit.py --workdir=/tmp/duration_bandit
  python experiments/duration_bandit.py --config=experiments/configs/duration_bandit.py:smoke \
    --workdir=/tmp/duration_bandit_smoke

Writes metrics.jsonl, curves.png and summary.json, and prints the final table.
"""
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from rlpost.llm import selection_toys

_CONFIG = config_flags.DEFINE_config_file("config", None, "duration_bandit config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  selection_toys.run_duration_bandit_experiment(_CONFIG.value, _WORKDIR.value, progress=True,
                   log=lambda s: print(s, flush=True))


if __name__ == "__main__":
  app.run(main)
