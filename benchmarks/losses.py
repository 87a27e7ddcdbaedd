"""Loss + gradient throughput: rlpost's jitted PPO clip loss against an eager PyTorch version.

Both sides compute the same formula on the same [64, 4096] f32 inputs (token_mean aggregation,
asymmetric clip 0.2 / 0.28, log-ratio clamp +-20) and its gradient with respect to logp. The torch
side is written here for the comparison; it needs the `[torch]` extra.

Run:  python benchmarks/losses.py [--batch 64 --length 4096 --repeats 50]
Prints one JSON line per implementation and one with the median-time ratio torch / rlpost.
"""
import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from rlpost import core


def _inputs(b, t, seed=0):
  rng = np.random.default_rng(seed)
  old = (rng.normal(size=(b, t)) - 2.0).astype(np.float32)
  logp = (old + 0.2 * rng.normal(size=(b, t))).astype(np.float32)
  adv = rng.normal(size=(b, t)).astype(np.float32)
  mask = (rng.random((b, t)) < 0.9).astype(np.float32)
  return logp, old, adv, mask


def _time(fn, repeats):
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def bench_jax(logp, old, adv, mask, repeats):
  def loss(lp, o, a, m):
    return core.ppo_clip_loss(lp, o, a, m, clip_low=0.2, clip_high=0.28, agg_mode="token_mean")[0]

  step = jax.jit(jax.value_and_grad(loss))
  args = [jnp.asarray(x) for x in (logp, old, adv, mask)]
  jax.block_until_ready(step(*args))  # compile
  return _time(lambda: jax.block_until_ready(step(*args)), repeats)


_TORCH_THREADS = [0]


def args_threads():
  import os  # pylint: disable=g-import-not-at-top
  return _TORCH_THREADS[0] or os.cpu_count() or 1


def bench_torch(logp, old, adv, mask, repeats):
  import torch  # pylint: disable=g-import-not-at-top

  torch.set_num_threads(args_threads())
  lp0 = torch.from_numpy(logp)
  o, a, m = (torch.from_numpy(x) for x in (old, adv, mask))

  def step():
    lp = lp0.clone().requires_grad_(True)
    log_ratio = torch.clamp(lp - o, -20.0, 20.0)
    ratio = torch.exp(log_ratio)
    per_token = torch.maximum(-a * ratio, -a * torch.clamp(ratio, 0.8, 1.28))
    per_token = torch.where(m > 0, per_token, torch.zeros_like(per_token))
    loss = per_token.sum() / m.sum().clamp(min=1.0)
    loss.backward()
    return loss, lp.grad

  step()
  return _time(step, repeats)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--length", type=int, default=4096)
  parser.add_argument("--repeats", type=int, default=50)
  parser.add_argument("--torch_threads", type=int, default=0, help="0 = all cores")
  args = parser.parse_args()
  _TORCH_THREADS[0] = args.torch_threads
  data = _inputs(args.batch, args.length)
  shape = [args.batch, args.length]
  t_jax = bench_jax(*data, args.repeats)
  print(json.dumps({"bench": "ppo_clip_loss+grad", "impl": "rlpost_jax_jit", "shape": shape,
                    "median_ms": round(1e3 * t_jax, 3), "backend": jax.default_backend()}))
  try:
    t_torch = bench_torch(*data, args.repeats)
  except ImportError:
    print(json.dumps({"bench": "ppo_clip_loss+grad", "impl": "torch_eager", "skipped":
                      "torch not installed (pip install '.[torch]')"}))
    return
  print(json.dumps({"bench": "ppo_clip_loss+grad", "impl": "torch_eager", "shape": shape,
                    "median_ms": round(1e3 * t_torch, 3)}))
  print(json.dumps({"bench": "ppo_clip_loss+grad", "ratio_torch_over_rlpost":
                    round(t_torch / t_jax, 2)}))


if __name__ == "__main__":
  main()
