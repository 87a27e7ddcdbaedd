"""PromptPG: learn which in-context example to show a frozen Flax solver, by REINFORCE.

  python experiments/promptpg.py --config=experiments/configs/promptpg.py --workdir=/tmp/promptpg
  python experiments/promptpg.py --config=experiments/configs/promptpg.py:smoke \
    --workdir=/tmp/promptpg_smoke

Writes metrics.jsonl, curves.png, summary.json (PromptPG vs random selection, mean and std over
seeds) into --workdir, shows a progress bar and prints the final table. The trained solver is
cached under --config.solver.cache_dir (default <workdir>/solver_cache). All logic lives in
rlpost.llm.agents.promptpg_experiment.
"""
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from rlpost.llm.agents import promptpg_experiment

_CONFIG = config_flags.DEFINE_config_file("config", None, "promptpg config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  promptpg_experiment.run(_CONFIG.value, _WORKDIR.value, log=lambda s: print(s, flush=True))


if __name__ == "__main__":
  app.run(main)
