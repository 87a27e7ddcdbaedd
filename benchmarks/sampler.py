"""Sampler throughput: rlpost KV-cache sampler vs HF `generate` (torch CPU), side by side.

Tiny config (vocab 512, hidden 256, 4 layers, 4 heads, 2 KV heads, intermediate 688, tied
embeddings); batch 16, prompt 32, 128 new tokens forced (no EOS), sampling at T=1 with no top-k /
top-p. Both run the SAME weights (rlpost init -> save_hf_checkpoint -> transformers load). Each side
is warmed up once (jit compile / torch first call), then the two are timed alternately over --reps
runs and the best run of each is reported, as wall-clock tokens/s and as tokens per process CPU
second (the latter is the fairer figure on a machine shared with other jobs). `rlpost_shards2` is
the same call with `shards=2`: two chunks of 8 prompts decoded concurrently from two host threads
(a different sampling stream, the same distribution).

  python benchmarks/sampler.py [--reps 3]

Prints one JSON line per implementation and one with the ratio (target >= 3x).
"""
import argparse
import json
import tempfile
import time

import jax
import numpy as np

from rlpost.llm import hf
from rlpost.llm import model as model_lib
from rlpost.llm import sampler as sampler_lib
from rlpost.llm.config import ModelConfig

BATCH, PROMPT, NEW = 16, 32, 128


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--reps", type=int, default=3)
  parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
  args = parser.parse_args()
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  if args.threads:
    torch.set_num_threads(args.threads)

  cfg = ModelConfig.tiny()
  model = model_lib.init_model(cfg, seed=0)
  rng = np.random.default_rng(0)
  prompts = rng.integers(1, cfg.vocab_size, size=(BATCH, PROMPT)).astype(np.int32)
  mask = np.ones_like(prompts)
  new_tokens = BATCH * NEW

  sampler = sampler_lib.Sampler(model)

  def run_rlpost(seed, shards=1):
    out = sampler.generate(prompts, mask, max_new_tokens=NEW, temperature=1.0, seed=seed,
                           shards=shards)
    jax.block_until_ready(out.response_tokens)
    assert int(out.lengths.min()) == NEW
    return out

  with tempfile.TemporaryDirectory() as d:
    hf.save_hf_checkpoint(model, cfg, d)
    torch_model = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
  input_ids, attn = torch.tensor(prompts, dtype=torch.long), torch.tensor(mask)

  def run_hf(seed):
    torch.manual_seed(seed)
    with torch.no_grad():
      out = torch_model.generate(input_ids=input_ids, attention_mask=attn, do_sample=True,
                                 temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=NEW,
                                 min_new_tokens=NEW, eos_token_id=None, pad_token_id=0)
    assert out.shape == (BATCH, PROMPT + NEW)
    return out

  fns = {"rlpost": run_rlpost, "rlpost_shards2": lambda seed: run_rlpost(seed, shards=2),
         "hf_generate_torch": run_hf}
  warmup = {}
  for name, fn in fns.items():
    t0 = time.perf_counter()
    fn(0)
    warmup[name] = time.perf_counter() - t0
  wall = {name: [] for name in fns}
  cpu = {name: [] for name in fns}
  for rep in range(args.reps):  # interleaved, so load drift on a shared machine hits both
    for name, fn in fns.items():
      t0, c0 = time.perf_counter(), time.process_time()
      fn(rep + 1)
      wall[name].append(time.perf_counter() - t0)
      cpu[name].append(time.process_time() - c0)
  for name in fns:
    print(json.dumps({
        "bench": "sampler", "impl": name,
        "tokens_per_s": round(new_tokens / min(wall[name]), 1),
        "tokens_per_cpu_s": round(new_tokens / min(cpu[name]), 1),
        "best_s": round(min(wall[name]), 4), "median_s": round(float(np.median(wall[name])), 4),
        "warmup_s": round(warmup[name], 2), "batch": BATCH, "prompt": PROMPT, "new_tokens": NEW,
        "device": jax.devices()[0].platform, "torch_threads": torch.get_num_threads()}),
          flush=True)
  ratio = min(wall["hf_generate_torch"]) / min(wall["rlpost"])
  cpu_ratio = min(cpu["hf_generate_torch"]) / min(cpu["rlpost"])
  ratio2 = min(wall["hf_generate_torch"]) / min(wall["rlpost_shards2"])
  print(json.dumps({"bench": "sampler", "ratio_rlpost_over_hf": round(ratio, 3),
                    "cpu_time_ratio_rlpost_over_hf": round(cpu_ratio, 3),
                    "ratio_rlpost_shards2_over_hf": round(ratio2, 3), "target": 3.0,
                    "met": max(ratio, ratio2) >= 3.0}), flush=True)


if __name__ == "__main__":
  main()
