"""Configs for experiments/dr_rl.py (DR-RL dynamic-rank attention, arXiv 2512.15973).

Args (`--config=experiments/configs/dr_rl.py:<arg>`):
  default  the shipped SFT policy (rlpost/assets/sft, head_dim 16) with per-head SVD of q/k/v/o,
           ranks {2, 4, ..., 16}, the paper's reward weights (alpha 1, beta 0.05, gamma 0.1; FLOPs
           and tail energy normalised, see rlpost/llm/agents/dr_rl.py), 150 REINFORCE steps of 32
           train sequences, epsilon 0.5 decaying 0.99 (the official train.py override), held-out
           perplexity on 256 test problems.
             python experiments/dr_rl.py --config=experiments/configs/dr_rl.py --workdir=/tmp/dr_rl
           Expected runtime on a 2-core CPU: a few minutes. Measured: 821 s wall on the shared
           2-core CPU at load ~30; the policy converges to full rank in every layer (perplexity
           1.4244 = full rank, FLOPs 100 %): with these weights full rank maximises the reward.
  budget   as default with a FLOPs-heavy reward (beta 0.5, gamma 0.05), so the policy trades
           perplexity for FLOPs. Measured (load ~30): the policy picks rank 4 in every layer;
           perplexity 1.519 vs 1.424 at full rank, attention FLOPs 60.1 %, model FLOPs 87.3 %.
  smoke    CI-sized: 3 policy steps of 4 sequences, 8 eval problems.
"""
import pathlib

import ml_collections

SHIPPED_SFT = pathlib.Path(__file__).resolve().parents[2] / "rlpost" / "assets" / "sft"


def get_config(arg: str = "default") -> ml_collections.ConfigDict:
  if arg not in ("default", "budget", "smoke"):
    raise ValueError(f"config arg must be 'default', 'budget' or 'smoke'; got {arg!r}")
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.checkpoint = str(SHIPPED_SFT)
  c.matrices = ("q", "k", "v", "o")
  c.r_min = 2
  c.r_step = 2
  c.reward = ml_collections.ConfigDict(dict(alpha=1.0, beta=0.05, gamma=0.1))
  c.safety_threshold = None  # relative tail energy above which a rank is masked; None = off
  c.baseline = True  # per-layer batch-mean baseline (the paper has none)
  c.steps = 150
  c.batch_size = 32
  c.learning_rate = 3e-3
  c.epsilon_start = 0.5
  c.epsilon_decay = 0.99
  c.policy_hidden = 64
  c.train_size = 2000
  c.eval_size = 256
  c.eval_batch_size = 64
  c.seq_len = 96
  if arg == "budget":
    c.reward.update(beta=0.5, gamma=0.05)
  elif arg == "smoke":
    c.steps = 3
    c.batch_size = 4
    c.train_size = 16
    c.eval_size = 8
    c.eval_batch_size = 8
  return c
