"""Configs for experiments/hybrids.py (SFT-RL hybrids from the shipped SFT policy).

Arg (`--config=experiments/configs/hybrids.py:<method>[,smoke]`), method one of
  otr_sft  One-Token Rollout SFT (arXiv 2509.26313)      baseline: plain SFT continuation
  sft      plain SFT continuation (cross-entropy)        baseline: none
  hpt      Hybrid Post-Training switch (arXiv 2509.04419) baseline: GRPO
  dypo     Dynamic Policy Optimization (arXiv 2604.08926) baseline: GRPO
  copg     Contrastive Policy Gradient (arXiv 2406.19185) baseline: GRPO
  grpo     GRPO (the codebase's RL loop)                  baseline: none
and `smoke` (alone = dypo,smoke) for a CI-sized run (< 60 s on a quiet 2-core CPU).

Both the method and its baseline train `steps` steps from rlpost/assets/sft (0.16M params,
level-1 sum/difference, ~36% greedy test accuracy) with the same data seed; held-out greedy
accuracy on `eval.size` test problems. The sft.* section is used by otr_sft / sft (batch of gold
solutions), rl.* by hpt / dypo / copg / grpo (P x G rollouts).

  python experiments/hybrids.py --config=experiments/configs/hybrids.py:hpt \
    --workdir=/tmp/hybrids_hpt

Runtime: only measured on the shared 2-core CPU under load 20-35 (other jobs): with
--config.steps=20 --config.eval_every=0, hpt + grpo baseline 1352 s, otr_sft + sft 1130 s,
dypo alone 1167 s (mostly compile and contention; a quiet CPU is several times faster). The
smoke run (dypo,smoke) took 161 s at load 17; its user CPU time was ~44 s.
"""
import pathlib

import ml_collections

SHIPPED_SFT = pathlib.Path(__file__).resolve().parents[2] / "rlpost" / "assets" / "sft"
METHODS = ("otr_sft", "sft", "hpt", "dypo", "copg", "grpo")


def get_config(arg: str = "hpt") -> ml_collections.ConfigDict:
  parts = [p for p in arg.split(",") if p]
  smoke = "smoke" in parts
  parts = [p for p in parts if p != "smoke"]
  method = parts[0] if parts else "dypo"
  if len(parts) > 1 or method not in METHODS:
    raise ValueError(f"config arg must be '<method>[,smoke]' or 'smoke' with method in "
                     f"{METHODS}; got {arg!r}")
  c = ml_collections.ConfigDict()
  c.method = method
  c.baseline = True  # also train the method's baseline (see the table above) from the same start
  c.seed = 0
  c.init_checkpoint = str(SHIPPED_SFT)
  c.tokenizer_dir = ""  # "" = the shipped synthetic-task tokenizer
  c.prompt_len = 64
  c.steps = 40
  c.eval_every = 20  # held-out eval every k steps (0 = start and end only)
  c.task = ml_collections.ConfigDict(dict(
      seed=0, level=1, families=("sum", "difference"), style="rows", train_size=4000))
  c.eval = ml_collections.ConfigDict(dict(split="test", size=500, batch_size=250))
  # SFT-type runs. OTR: K candidates per gold position from softmax(z / otr_temperature); the
  # gold token earns 1, others otr_wrong_reward (the paper's K = 256 is cut to 16 for memory).
  c.sft = ml_collections.ConfigDict(dict(
      batch_size=32, learning_rate=2e-4, otr_num_samples=16, otr_temperature=1.0,
      otr_wrong_reward=0.0))
  # RL-type runs: P = batch_size / group_size prompts, G completions each.
  c.rl = ml_collections.ConfigDict(dict(
      batch_size=64, group_size=8, max_new_tokens=32, temperature=1.0, learning_rate=1e-4,
      max_grad_norm=1.0))
  c.grpo_overrides = ml_collections.ConfigDict({"tis_cap": 2.0})  # as train_llm's GRPO
  # Paper defaults: HPT gate 0, coef 1; DYPO alpha 0.5, beta_GAL 1, gamma 1; CoPG beta swept.
  # teachers: DYPO's several teachers = synthetic solution styles that fit max_new_tokens
  # ("verbose" needs ~38 tokens > 32). demo_style: HPT's demonstration ("" = the task style).
  c.hybrid = ml_collections.ConfigDict(dict(
      switch_gate=0, sft_coef=1.0, alpha=0.5, gal_beta=1.0, gamma=1.0, copg_beta=0.1,
      teachers=("rows", "terse"), demo_style=""))
  if smoke:
    c.steps = 2
    c.eval_every = 0
    c.task.train_size = 64
    c.eval.update(size=16, batch_size=16)
    c.sft.update(batch_size=8, otr_num_samples=4)
    c.rl.update(batch_size=16, group_size=4)
  return c
