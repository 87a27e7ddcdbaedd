"""DMLR: test-time latent "think"-token optimisation of the shipped SFT policy (synthetic TabMWP).

  python experiments/dmlr.py --config=experiments/configs/dmlr.py --workdir=/tmp/dmlr
  python experiments/dmlr.py --config=experiments/configs/dmlr.py:smoke --workdir=/tmp/dmlr_smoke

Writes metrics.jsonl, curves.png and summary.json (DMLR accuracy and confidence beside the plain
prompt baseline) into --workdir, shows a progress bar and prints a final table. All logic lives in
rlpost.llm.agents.dmlr_experiment.run_experiment.
"""
from absl import app
from absl import flags
from ml_collections import config_flags

from rlpost.llm.agents import dmlr_experiment

_CONFIG = config_flags.DEFINE_config_file("config", None, "dmlr config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  dmlr_experiment.run_experiment(_CONFIG.value, _WORKDIR.value, log=lambda s: print(s, flush=True))


if __name__ == "__main__":
  app.run(main)
