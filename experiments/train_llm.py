"""SFT warm-start then RL post-training of a Flax LLM policy on (synthetic) TabMWP.

  python experiments/train_llm.py --config=experiments/configs/train_llm.py \
    --workdir=/tmp/train_llm
  python experiments/train_llm.py --config=experiments/configs/train_llm.py:smoke \
    --workdir=/tmp/train_llm_smoke --config.objective=dapo

Writes metrics.jsonl, tensorboard/, curves.png, summary.json, policy/ (HF safetensors) and orbax
checkpoints into --workdir, shows a progress bar and prints a before/after table. Re-running with
the same --workdir resumes (exactly) from the last checkpoint. All logic lives in
rlpost.llm.train.run_experiment.
"""
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from rlpost.llm import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "train_llm config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (resumed when it exists).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  train.run_experiment(_CONFIG.value, _WORKDIR.value, log=lambda s: print(s, flush=True))


if __name__ == "__main__":
  app.run(main)
