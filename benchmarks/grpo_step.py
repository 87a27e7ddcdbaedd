"""One full GRPO iteration (64 completions x 64 tokens, G = 8) on the tiny Qwen2 config, rlpost vs
TRL's GRPOTrainer on the same config and the same initial weights.

  python benchmarks/grpo_step.py [--reps 5]

GRPO: Shao et al., "DeepSeekMath", 2024, arXiv:2402.03300 (group-normalised advantages, PPO clip
eps 0.2, k3 KL to a frozen reference with beta 0.04, per-sequence token-mean loss).

rlpost side: `rlpost.llm.rl.RLTrainer.step` = KV-cache rollout (8 prompts x 8 completions, forced to
64 new tokens: no stop token; two concurrent chunks of 4 prompts, `RLConfig.rollout_shards`) + rewards + GRPO advantages + reference log-probs (the grpo preset
has KL 0.04) + one jitted, donated update; the time is split by phase. One warm-up (compile) step,
then `reps` timed steps; s_per_step and the phase times are medians over the timed steps (this
shared machine's step times spread by +-15 % within one run; the means and every step time are
printed too). The default layout runs each prompt once per group of 8 completions
(`RLConfig.shared_prompt`, exact up to float rounding); a second rlpost run with
shared_prompt=False (every completion runs its whole 64 + 64 token sequence, as TRL does) is
printed too, and the ratio uses the default layout. The update accumulates gradients over
micro-batches of 16 completions (`--micro_batch_size`; the gradient equals the one-batch gradient,
and on this CPU slices of 16 ran the update ~10 % faster than one slice of 64). TRL updates on its
64 completions in one batch (per_device_train_batch_size=64), its faster setting here:
`bench_trl(..., micro_batch_size=16)` (batch 16, 4 accumulation steps, one 64-completion
generation) measured 6.15 vs 5.80 s/step in one run.

TRL side (runs only when `import trl` works, the optional [peers] extra; otherwise it prints
{"trl": "absent"} and no ratio): `trl.GRPOTrainer` on CPU in float32 (use_cpu, bf16=False), torch
Qwen2ForCausalLM loaded from an HF checkpoint that `save_hf_checkpoint` writes from the same
`init_model(seed=0)` weights; the reference model is a second copy of it (beta 0.04). Settings:
num_generations=8, per_device_train_batch_size=64, gradient_accumulation_steps=1,
steps_per_generation=1, num_iterations=1 (one optimizer step per 64-completion generation batch),
loss_type="grpo", scale_rewards="group", epsilon=0.2, AdamW lr 1e-5 constant, no weight decay,
gradient_checkpointing=False (TRL's default is True), max_completion_length=64 with
generation_kwargs={"min_new_tokens": 64} (EOS masked, so every completion is 64 tokens),
temperature 1, no top-k/top-p, prompts = "<bos>" + rlpost's prompt text, left-padded to 64 tokens
(pad_to_multiple_of=64), dummy random 0/1 reward, no logging or saving. One trainer.train() call
runs 1 + reps steps; a TrainerCallback stamps on_step_end, and s_per_step is the mean gap between
consecutive on_step_end stamps (the whole loop iteration, the first step is the warm-up), and the
phase times are medians too.
`generate_s` is the wall time of the policy's `generate` call (wrapped), `score_and_ref_logprob_s`
the rest of `_generate_and_score_completions` (tokenise, decode, reward, reference log-probs,
advantages), `update_s` the rest of the step (policy forward/backward, clip, AdamW step, loop).

Prints one JSON line per side and then the ratio TRL / rlpost seconds per step with target 2.0.
Both sides run in one process on the same CPU threads; torch uses its default thread count
(reported as torch_threads).
"""
import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from typing import Optional

import jax
import numpy as np
from flax import nnx

from rlpost.llm import rl
from rlpost.llm import train
from rlpost.llm.config import ModelConfig
from rlpost.llm.hf import save_hf_checkpoint
from rlpost.llm.model import init_model
from rlpost.llm.tasks import format_prompt
from rlpost.llm.tasks import generate_dataset
from rlpost.llm.tasks import load_tokenizer

GROUP, COMPLETIONS, NEW_TOKENS, PROMPT_LEN = 8, 64, 64, 64
MICRO_BATCH = 16  # rlpost's gradient-accumulation slice (same gradient; faster than 64 on XLA:CPU)
TARGET_RATIO = 2.0  # rlpost should take at most half of TRL's time per GRPO iteration


class _NoStop:
  """The shipped tokenizer with no EOS, so every completion is exactly 64 tokens long."""

  def __init__(self, tok):
    self._tok = tok
    self.eos_token_id = -1
    self.pad_token_id = tok.pad_token_id
    self.bos_token_id = tok.bos_token_id

  def __getattr__(self, name):
    return getattr(self._tok, name)


def bench_rlpost(reps: int, *, shared_prompt: bool = True,
                 micro_batch_size: int = MICRO_BATCH) -> dict:
  config = ModelConfig.tiny(model_type="qwen2", attention_bias=True)
  graphdef, params = nnx.split(init_model(config, seed=0))
  tok = _NoStop(load_tokenizer())
  pool = generate_dataset(256, split="train", level=1, families=("sum", "difference"))
  rcfg = rl.RLConfig(batch_size=COMPLETIONS, group_size=GROUP, micro_batch_size=micro_batch_size,
                     max_new_tokens=NEW_TOKENS, shared_prompt=shared_prompt)
  obj = rl.make_objective("grpo", max_new_tokens=NEW_TOKENS)
  opt = train.make_optimizer(learning_rate=1e-5)
  rng = np.random.default_rng(0)
  reward_fn = lambda texts, recs: rng.integers(0, 2, size=len(texts)).astype(np.float32)
  trainer = rl.RLTrainer(graphdef=graphdef, params=params, tokenizer=tok, objective=obj,
                         rl_config=rcfg, optimizer=opt, pool=pool, data_seed=0,
                         prompt_len=PROMPT_LEN, reward_fn=reward_fn, ref_params=params)
  state = train.init_train_state(params, opt, seed=0)
  t0 = time.perf_counter()
  state, _ = trainer.step(state)  # compile
  compile_s = time.perf_counter() - t0
  rows = []
  for _ in range(reps):
    t0 = time.perf_counter()
    state, met = trainer.step(state)
    jax.block_until_ready(state["params"])
    rows.append({"step_s": time.perf_counter() - t0, **met})
  mean = lambda k: float(np.mean([r[k] for r in rows]))
  med = lambda k: float(np.median([r[k] for r in rows]))
  return {"side": "rlpost", "shared_prompt": shared_prompt, "micro_batch_size": micro_batch_size,
          "config": "ModelConfig.tiny(qwen2)",
          "params": config.num_params(),
          "completions": COMPLETIONS, "new_tokens": NEW_TOKENS, "group_size": GROUP,
          "s_per_step": med("step_s"), "s_per_step_mean": mean("step_s"),
          "step_s_all": [round(r["step_s"], 3) for r in rows],
          "rollout_s": med("time_rollout"), "logprob_s": med("time_logprob"),
          "train_s": med("time_train"),
          "response_len_mean": mean("response_len_mean"),
          "completion_tokens_per_s": COMPLETIONS * mean("response_len_mean") / mean("step_s"),
          "first_step_s_incl_compile": compile_s, "reps": reps, "device": jax.devices()[0].platform}


def _trl_prompts(n: int) -> list[str]:
  """rlpost's prompts as text, "<bos>" + format_prompt(record).

  The tokenizer parses "<bos>" as the BOS special token, so the ids equal rlpost's `encode_prompts`.
  """
  pool = generate_dataset(256, split="train", level=1, families=("sum", "difference"))
  return ["<bos>" + format_prompt(r) for r in pool[:n]]


def bench_trl(reps: int, *, completions: int = COMPLETIONS, new_tokens: int = NEW_TOKENS,
              group: int = GROUP, prompt_len: int = PROMPT_LEN,
              micro_batch_size: Optional[int] = None) -> Optional[dict]:
  """TRL GRPOTrainer on CPU, same initial weights; None when trl is not importable."""
  try:
    import trl  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  import datasets  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  config = ModelConfig.tiny(model_type="qwen2", attention_bias=True)
  tok = load_tokenizer()
  rng = np.random.default_rng(0)
  lengths = []
  micro = micro_batch_size or completions

  def reward_fn(prompts, completions, completion_ids, **kwargs):  # pylint: disable=unused-argument
    lengths.extend(len(c) for c in completion_ids)
    return rng.integers(0, 2, size=len(prompts)).astype(float).tolist()

  marks = {"begin": [], "end": [], "generate": [], "score": []}

  class _Clock(transformers.TrainerCallback):

    def on_step_begin(self, args, state, control, **kwargs):
      marks["begin"].append(time.perf_counter())

    def on_step_end(self, args, state, control, **kwargs):
      marks["end"].append(time.perf_counter())

  with tempfile.TemporaryDirectory() as tmp:
    model_dir = os.path.join(tmp, "model")
    save_hf_checkpoint(init_model(config, seed=0), config, model_dir, tokenizer=tok)
    args = trl.GRPOConfig(
        output_dir=os.path.join(tmp, "out"), use_cpu=True, bf16=False, fp16=False,
        model_init_kwargs={"dtype": torch.float32},
        gradient_checkpointing=False,  # TRL's default is True; rlpost does not remat the model
        per_device_train_batch_size=micro, gradient_accumulation_steps=completions // micro,
        steps_per_generation=completions // micro, num_iterations=1, num_generations=group,
        max_completion_length=new_tokens, pad_to_multiple_of=prompt_len,
        generation_kwargs={"min_new_tokens": new_tokens},  # EOS masked: every completion is full
        temperature=1.0, top_p=1.0, top_k=0, beta=0.04, epsilon=0.2, loss_type="grpo",
        scale_rewards="group", learning_rate=1e-5, lr_scheduler_type="constant",
        adam_beta1=0.9, adam_beta2=0.99, max_grad_norm=1.0,  # = rlpost make_optimizer
        warmup_steps=0, weight_decay=0.0, max_steps=reps + 1, logging_strategy="no",
        save_strategy="no", report_to="none", disable_tqdm=True, seed=0,
        dataloader_num_workers=0)
    data = datasets.Dataset.from_dict({"prompt": _trl_prompts(completions)})
    trainer = trl.GRPOTrainer(model=model_dir, reward_funcs=reward_fn, args=args,
                              train_dataset=data, processing_class=tok, callbacks=[_Clock()])
    policy = trainer.model
    generate = policy.generate
    score = trainer._generate_and_score_completions  # pylint: disable=protected-access

    def timed_generate(*a, **k):
      t0 = time.perf_counter()
      out = generate(*a, **k)
      marks["generate"].append(time.perf_counter() - t0)
      return out

    def timed_score(*a, **k):
      t0 = time.perf_counter()
      out = score(*a, **k)
      marks["score"].append(time.perf_counter() - t0)
      return out

    policy.generate = timed_generate
    trainer._generate_and_score_completions = timed_score  # pylint: disable=protected-access
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # Trainer prints its end-of-train metrics dict
      trainer.train()
    train_call_s = time.perf_counter() - t0
  ends, begins = np.asarray(marks["end"]), np.asarray(marks["begin"])
  if len(ends) != reps + 1 or len(marks["generate"]) != reps + 1:
    raise RuntimeError(f"expected {reps + 1} TRL steps with one generate each, got "
                       f"{len(ends)} steps and {len(marks['generate'])} generate calls")
  step_s = np.diff(ends)  # on_step_end to on_step_end: the whole loop iteration, steps 1..reps
  gen_s = np.asarray(marks["generate"][1:])
  score_s = np.asarray(marks["score"][1:]) - gen_s
  resp_len = float(np.mean(lengths[completions:]))
  return {"side": "trl", "trl_version": trl.__version__, "torch_version": torch.__version__,
          "transformers_version": transformers.__version__, "config": "ModelConfig.tiny(qwen2)",
          "params": sum(p.numel() for p in policy.parameters()), "completions": completions,
          "new_tokens": new_tokens, "group_size": group,
          "s_per_step": float(np.median(step_s)), "s_per_step_mean": float(step_s.mean()),
          "step_s_all": [round(float(x), 3) for x in step_s],
          "generate_s": float(np.median(gen_s)),
          "score_and_ref_logprob_s": float(np.median(score_s)),
          "update_s": float(np.median(step_s - np.asarray(marks["score"][1:]))),
          "step_begin_to_end_s": float((ends - begins)[1:].mean()),
          "response_len_mean": resp_len,
          "completion_tokens_per_s": completions * resp_len / float(step_s.mean()),
          "first_step_s": float(ends[0] - begins[0]), "train_call_s": train_call_s, "reps": reps,
          "torch_threads": torch.get_num_threads(), "device": str(policy.device)}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--reps", type=int, default=5)
  parser.add_argument("--micro_batch_size", type=int, default=MICRO_BATCH,
                      help="rlpost's micro-batch (a multiple of 8 dividing 64)")
  parser.add_argument("--no_full_layout", action="store_true",
                      help="skip the rlpost run with shared_prompt=False (every completion runs "
                           "its whole prompt, as TRL does)")
  args = parser.parse_args()
  ours = bench_rlpost(args.reps, micro_batch_size=args.micro_batch_size)
  print(json.dumps(ours), flush=True)
  if not args.no_full_layout:
    print(json.dumps(bench_rlpost(args.reps, shared_prompt=False,
                                  micro_batch_size=args.micro_batch_size)), flush=True)
  theirs = bench_trl(args.reps)
  if theirs is None:
    print(json.dumps({"side": "trl", "trl": "absent",
                      "note": "pip install trl (the [peers] extra) to measure the TRL side; no "
                              "ratio is reported without it"}), flush=True)
  else:
    print(json.dumps(theirs), flush=True)
    if "s_per_step" in theirs:
      ratio = theirs["s_per_step"] / ours["s_per_step"]
      print(json.dumps({"ratio_trl_over_rlpost": ratio, "target": TARGET_RATIO,
                        "met": bool(ratio >= TARGET_RATIO)}), flush=True)


if __name__ == "__main__":
  main()
