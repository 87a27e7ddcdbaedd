"""SFT-RL hybrids (OTR-SFT, HPT, DYPO, CoPG) vs their baselines, from the shipped SFT policy.

  python experiments/hybrids.py --config=experiments/configs/hybrids.py:hpt \
    --workdir=/tmp/hybrids_hpt
  python experiments/hybrids.py --config=experiments/configs/hybrids.py:smoke \
    --workdir=/tmp/hybrids_smoke

Writes metrics.jsonl, curves.png and summary.json into --workdir (overwritten), shows a progress
bar and prints a start / method / baseline table. All logic lives in rlpost.llm.hybrid.
"""
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from rlpost.llm import hybrid

_CONFIG = config_flags.DEFINE_config_file("config", None, "hybrids config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  hybrid.run_hybrids(_CONFIG.value, _WORKDIR.value, log=lambda s: print(s, flush=True))


if __name__ == "__main__":
  app.run(main)
