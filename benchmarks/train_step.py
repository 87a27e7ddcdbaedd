"""Train throughput: rlpost fwd+bwd+AdamW step vs torch, plus MFU against a measured matmul peak.

Tiny config (vocab 512, hidden 256, 4 layers, 4 heads, 2 KV heads, intermediate 688, tied
embeddings), batch [16, 192], token-mean cross-entropy, AdamW(1e-4). Same initial weights on both
sides. Model FLOPs per step = 6 * N_matmul * tokens + 12 * layers * T * (heads * head_dim) * tokens
(Chowdhery et al., "PaLM", 2022, arXiv:2204.02311, App. B), with N_matmul the weights used in
matmuls (the tied embedding counts once, as the output head). Peak = best jitted f32
`jnp.dot` of two 2048x2048 matrices (2 * 2048^3 FLOPs), measured in the same run.

  python benchmarks/train_step.py [--steps 5]

The two sides alternate step by step; wall-clock and process-CPU throughput are both printed.

Prints JSON lines: peak, rlpost, torch, and the ratio / MFU verdicts (targets: >= 1.0x torch and
MFU >= 60%).
"""
import argparse
import json
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rlpost import parallel
from rlpost.llm import hf
from rlpost.llm import model as model_lib
from rlpost.llm.config import ModelConfig

BATCH, SEQ = 16, 192


def matmul_peak(n=2048, reps=10):
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  dot = jax.jit(jnp.dot)
  dot(a, b).block_until_ready()
  best = float("inf")
  for _ in range(reps):
    t0 = time.perf_counter()
    dot(a, b).block_until_ready()
    best = min(best, time.perf_counter() - t0)
  return 2 * n ** 3 / best


def model_flops_per_step(cfg: ModelConfig) -> float:
  tokens = BATCH * SEQ
  n_matmul = cfg.num_params() - cfg.vocab_size * cfg.hidden_size  # drop the lookup...
  n_matmul += cfg.vocab_size * cfg.hidden_size  # ...and count the (tied) output head
  n_matmul -= (2 * cfg.num_hidden_layers + 1) * cfg.hidden_size  # norms are not matmuls
  attn = 12 * cfg.num_hidden_layers * SEQ * cfg.num_attention_heads * cfg.resolved_head_dim
  return tokens * (6 * n_matmul + attn)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--steps", type=int, default=5)
  args = parser.parse_args()
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  peak = matmul_peak()
  print(json.dumps({"bench": "matmul_peak", "gflops": round(peak / 1e9, 1)}), flush=True)
  cfg = ModelConfig.tiny()
  flops = model_flops_per_step(cfg)
  model = model_lib.init_model(cfg, seed=0)
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, cfg.vocab_size, size=(BATCH, SEQ)).astype(np.int32)
  ones = np.ones_like(tokens)

  with tempfile.TemporaryDirectory() as d:
    hf.save_hf_checkpoint(model, cfg, d)
    torch_model = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
  torch_model.train()

  from flax import nnx  # pylint: disable=g-import-not-at-top
  graphdef, params = nnx.split(model)
  optimizer = optax.adamw(1e-4)
  opt_state = optimizer.init(params)
  step = parallel.make_sft_train_step(graphdef, optimizer)
  batch = {"tokens": jnp.asarray(tokens), "attention_mask": jnp.asarray(ones),
           "loss_mask": jnp.asarray(ones)}

  state = {"params": params, "opt": opt_state}

  def run_rlpost():
    state["params"], state["opt"], loss = step(state["params"], state["opt"], batch)
    return float(loss)

  torch_opt = torch.optim.AdamW(torch_model.parameters(), lr=1e-4)
  t_ids = torch.tensor(tokens, dtype=torch.long)

  def run_torch():
    torch_opt.zero_grad(set_to_none=True)
    loss = torch_model(input_ids=t_ids, labels=t_ids).loss
    loss.backward()
    torch_opt.step()
    return float(loss)

  fns = {"rlpost": run_rlpost, "torch": run_torch}
  first = {name: fn() for name, fn in fns.items()}  # compile / warm up
  wall = {name: [] for name in fns}
  cpu = {name: [] for name in fns}
  for _ in range(args.steps):  # interleaved, so load drift on a shared machine hits both
    for name, fn in fns.items():
      t0, c0 = time.perf_counter(), time.process_time()
      fn()
      wall[name].append(time.perf_counter() - t0)
      cpu[name].append(time.process_time() - c0)
  for name in fns:
    best = min(wall[name])
    print(json.dumps({"bench": "train_step", "impl": name,
                      "tokens_per_s": round(BATCH * SEQ / best, 1),
                      "tokens_per_cpu_s": round(BATCH * SEQ / min(cpu[name]), 1),
                      "model_gflops": round(flops / best / 1e9, 1),
                      "mfu": round(flops / best / peak, 3), "best_s": round(best, 4),
                      "median_s": round(float(np.median(wall[name])), 4),
                      "first_loss": round(first[name], 4),
                      "torch_threads": torch.get_num_threads()}), flush=True)
  ratio = min(wall["torch"]) / min(wall["rlpost"])
  mfu = flops / min(wall["rlpost"]) / peak
  print(json.dumps({"bench": "train_step", "ratio_rlpost_over_torch": round(ratio, 3),
                    "cpu_time_ratio_rlpost_over_torch": round(
                        min(cpu["torch"]) / min(cpu["rlpost"]), 3),
                    "rlpost_mfu": round(mfu, 3), "targets": {"ratio": 1.0, "mfu": 0.6},
                    "met": {"ratio": ratio >= 1.0, "mfu": mfu >= 0.6}}), flush=True)


if __name__ == "__main__":
  main()
