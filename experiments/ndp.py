"""Neural Dynamic Policies: imitation (NDP vs raw-waypoint MLP) and RL (NDP vs per-step MLP).

  python experiments/ndp.py --config=experiments/configs/ndp.py:smoke --workdir=/tmp/ndp_smoke

Writes metrics.jsonl, summary.json, curves.png and rollouts.png under --workdir.
"""
from absl import app
from absl import flags
from ml_collections import config_flags

from rlpost.control import ndp

_CONFIG = config_flags.DEFINE_config_file("config", None, "ml_collections config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  ndp.run_experiment(_CONFIG.value, _WORKDIR.value, log=lambda s: print(s, flush=True))


if __name__ == "__main__":
  app.run(main)
