"""Model-based RL: COPlanner vs MBPO (Dyna loop on a JAX env) and the ScaleZero multi-task learner.

  python experiments/model_based.py --config=experiments/configs/model_based.py:smoke --workdir=/tmp/mb

Writes metrics.jsonl, summary.json (D4RL-style normalised scores: 0 = random, 100 = expert) and
curves.png to --workdir, shows a progress bar per method and prints the final table. The logic is
in rlpost.planning.experiment.
"""
from absl import app
from absl import flags
from ml_collections import config_flags

from rlpost.planning import experiment

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
