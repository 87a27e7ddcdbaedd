"""Action-Jacobian penalty: MLP (none / action-change / Jacobian) vs Linear Policy Net on tracking.

  python experiments/lpn.py --config=experiments/configs/lpn.py:smoke --workdir=/tmp/lpn_smoke

Writes metrics.jsonl, summary.json, curves.png and smoothness.png under --workdir.
"""
from absl import app
from absl import flags
from ml_collections import config_flags

from rlpost.control import lpn

_CONFIG = config_flags.DEFINE_config_file("config", None, "ml_collections config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  lpn.run_experiment(_CONFIG.value, _WORKDIR.value, log=lambda s: print(s, flush=True))


if __name__ == "__main__":
  app.run(main)
