"""One full GRPO iteration (64 completions x 64 tokens, G = 8) on the tiny Qwen2 config, rlpost vs
TRL's GRPOTrainer on the same config.

  python benchmarks/grpo_step.py [--reps 3]

rlpost side: `rlpost.llm.rl.RLTrainer.step` = KV-cache rollout (8 prompts x 8 completions, forced to
64 new tokens: no stop token) + rewards + GRPO advantages + reference log-probs (the grpo preset
has KL 0.04) + one jitted, donated update; the time is split by phase. TRL side: runs only when
`import trl` works (the optional [peers] extra); otherwise it prints {"trl": "absent"} and no
ratio. Prints one JSON line per measurement.
"""
import argparse
import json
import time

import jax
import numpy as np
from flax import nnx

from rlpost.llm import rl
from rlpost.llm import train
from rlpost.llm.config import ModelConfig
from rlpost.llm.model import init_model
from rlpost.llm.tasks import generate_dataset
from rlpost.llm.tasks import load_tokenizer

GROUP, COMPLETIONS, NEW_TOKENS, PROMPT_LEN = 8, 64, 64, 64


class _NoStop:
  """The shipped tokenizer with no EOS, so every completion is exactly 64 tokens long."""

  def __init__(self, tok):
    self._tok = tok
    self.eos_token_id = -1
    self.pad_token_id = tok.pad_token_id
    self.bos_token_id = tok.bos_token_id

  def __getattr__(self, name):
    return getattr(self._tok, name)


def bench_rlpost(reps: int) -> dict:
  config = ModelConfig.tiny(model_type="qwen2", attention_bias=True)
  graphdef, params = nnx.split(init_model(config, seed=0))
  tok = _NoStop(load_tokenizer())
  pool = generate_dataset(256, split="train", level=1, families=("sum", "difference"))
  rcfg = rl.RLConfig(batch_size=COMPLETIONS, group_size=GROUP, micro_batch_size=COMPLETIONS,
                     max_new_tokens=NEW_TOKENS)
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
  return {"side": "rlpost", "config": "ModelConfig.tiny(qwen2)", "params": config.num_params(),
          "completions": COMPLETIONS, "new_tokens": NEW_TOKENS, "group_size": GROUP,
          "s_per_step": mean("step_s"), "rollout_s": mean("time_rollout"),
          "logprob_s": mean("time_logprob"), "train_s": mean("time_train"),
          "response_len_mean": mean("response_len_mean"),
          "completion_tokens_per_s": COMPLETIONS * mean("response_len_mean") / mean("step_s"),
          "first_step_s_incl_compile": compile_s, "reps": reps, "device": jax.devices()[0].platform}


def bench_trl(reps: int):
  try:
    import trl  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    return None
  # Not written: trl was absent where this benchmark was developed, and untested timing code would
  # be worse than none. Plan: Qwen2ForCausalLM(Qwen2Config(**ModelConfig.tiny(model_type="qwen2",
  # attention_bias=True).to_hf_dict())), GRPOTrainer with num_generations=8,
  # per_device_train_batch_size=64, max_completion_length=64, use_cpu=True; time train() steps.
  return {"side": "trl", "trl": "present", "status": "TRL side not implemented; no ratio"}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--reps", type=int, default=3)
  args = parser.parse_args()
  ours = bench_rlpost(args.reps)
  print(json.dumps(ours), flush=True)
  theirs = bench_trl(args.reps)
  if theirs is None:
    print(json.dumps({"side": "trl", "trl": "absent",
                      "note": "pip install trl (the [peers] extra) to measure the TRL side; no "
                              "ratio is reported without it"}), flush=True)
  else:
    print(json.dumps(theirs), flush=True)
    if "s_per_step" in theirs:
      print(json.dumps({"ratio_trl_over_rlpost": theirs["s_per_step"] / ours["s_per_step"]}))


if __name__ == "__main__":
  main()
