"""Offline RL on rlpost's own D4RL-style datasets: TD3, TD3+BC, PRDC, CDSA, policy-guided diffusion.

  python experiments/offline.py --config=experiments/configs/offline.py:smoke --workdir=/tmp/off

Writes metrics.jsonl, summary.json (D4RL normalised scores: 0 = random, 100 = expert) and
curves.png to --workdir and prints the final table. The logic is in rlpost.offline.experiment.
"""
from absl import app
from absl import flags
from ml_collections import config_flags

from rlpost.offline import experiment

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  summary = experiment.run_experiment(_CONFIG.value, _WORKDIR.value)
  print(experiment.format_table(summary["rows"]))
  print(f"wall time {summary['wall_s']} s; summary in {_WORKDIR.value}/summary.json")


if __name__ == "__main__":
  app.run(main)
