"""HDPO inventory control experiment (arXiv:2306.11246); see experiments/configs/inventory.py."""
from absl import app, flags
from ml_collections import config_flags

from rlpost.control.inventory import experiment

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to an inventory config file.")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/rlpost_inventory", "Output directory.")


def main(argv):
  del argv
  summary = experiment.run(_CONFIG.value, _WORKDIR.value)
  print(experiment.format_table(summary))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
