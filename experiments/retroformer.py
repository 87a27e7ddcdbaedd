"""Retroformer: a small retrospective LLM, trained by policy gradient, writes reflections that
help a frozen Flax actor on its retry.

  python experiments/retroformer.py --config=experiments/configs/retroformer.py \
    --workdir=/tmp/retroformer
  python experiments/retroformer.py --config=experiments/configs/retroformer.py:smoke \
    --workdir=/tmp/retroformer_smoke

Writes metrics.jsonl, curves.png, summary.json (success within two attempts with Retroformer's
reflection vs the no-reflection retry, plus random / untrained / oracle reflections) into
--workdir, shows a progress bar and prints the final table. The trained actor is cached under
--config.actor.cache_dir (default <workdir>/actor_cache). All logic lives in
rlpost.llm.agents.retroformer_experiment.
"""
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from rlpost.llm.agents import retroformer_experiment

_CONFIG = config_flags.DEFINE_config_file("config", None, "retroformer config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  retroformer_experiment.run(_CONFIG.value, _WORKDIR.value, log=lambda s: print(s, flush=True))


if __name__ == "__main__":
  app.run(main)
