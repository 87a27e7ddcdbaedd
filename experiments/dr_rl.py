"""DR-RL: a small RL policy picks per-layer attention ranks (truncated per-head SVD) of the shipped
SFT policy, rewarded by fidelity on real activations minus FLOPs and the perturbation bound.

  python experiments/dr_rl.py --config=experiments/configs/dr_rl.py --workdir=/tmp/dr_rl
  python experiments/dr_rl.py --config=experiments/configs/dr_rl.py:smoke --workdir=/tmp/dr_rl_smoke

Writes metrics.jsonl, curves.png and summary.json (perplexity and FLOPs of the learned ranks
beside full rank and every fixed rank) into --workdir, shows a progress bar and prints a final
table. All logic lives in rlpost.llm.agents.dr_rl_experiment.run_experiment.
"""
from absl import app
from absl import flags
from ml_collections import config_flags

from rlpost.llm.agents import dr_rl_experiment

_CONFIG = config_flags.DEFINE_config_file("config", None, "dr_rl config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  dr_rl_experiment.run_experiment(_CONFIG.value, _WORKDIR.value,
                                  log=lambda s: print(s, flush=True))


if __name__ == "__main__":
  app.run(main)
