"""HDPO training throughput: jitted JAX vs an eager PyTorch port of the same simulator and MLP.

Setting: single-store lost sales, Poisson(5), h = 1 (HDPO, arXiv:2306.11246). Both sides run the same
loop per update: sample a batch of demand traces, roll the [32, 32, 32] ELU MLP through `periods`
periods, average the costs of periods >= ignore, back-propagate through the rollout, one Adam step.
Prints JSON lines: one per implementation (scenario-periods/s) and one with the ratio; then the
time-to-0.5%-gap of JAX HDPO against the value-iteration optimum (test cost measured every
`eval_every` updates on 1024 x 1000 periods, evaluation time excluded), and the torch figure projected
from the same number of updates at its measured step time.

The throughput comparison is repeated for each batch size in --batches (default 64, 512, 8192):
on CPU the ratio is set by per-operation overhead, which dominates torch eager at small batches and
vanishes at large ones, so one batch size alone would say little. The time-to-gap run uses --batch.

Run: python benchmarks/inventory.py [--batches 64,512,8192 --batch 512 --periods 60 --lead_time 2
     --p 9 --steps 30 --skip_gap]
"""
import argparse
import json
import time

import numpy as np


def bench_jax(args):
  import jax
  import optax
  from rlpost.control.inventory import env, hdpo, policies
  prob = env.one_store_lost_sales(lead_time=args.lead_time, p=args.p)
  pol = policies.make_mlp_policy(prob)
  cfg = hdpo.HDPOConfig(n_steps=args.steps, batch_size=args.batch, periods=args.periods,
                        ignore_periods=args.ignore, learning_rate=1e-2)
  opt = optax.adam(1e-3)
  chunk = hdpo.make_train_chunk(prob, pol, opt, cfg, args.steps)
  params = pol.init(jax.random.PRNGKey(0))
  state = opt.init(params)
  out = chunk(params, state, jax.random.PRNGKey(1))  # compile
  jax.block_until_ready(out)
  t = time.perf_counter()
  out = chunk(params, state, jax.random.PRNGKey(2))
  jax.block_until_ready(out)
  dt = time.perf_counter() - t
  return args.steps * args.batch * args.periods / dt, dt / args.steps


def bench_torch(args):
  import torch
  torch.manual_seed(0)
  mu = 5.0
  net = torch.nn.Sequential(torch.nn.Linear(args.lead_time, 32), torch.nn.ELU(),
                            torch.nn.Linear(32, 32), torch.nn.ELU(), torch.nn.Linear(32, 32),
                            torch.nn.ELU(), torch.nn.Linear(32, 1))
  opt = torch.optim.Adam(net.parameters(), lr=1e-3)
  slot = torch.zeros(args.lead_time)
  slot[args.lead_time - 1] = 1.0

  def step():
    x = torch.rand(args.batch, args.lead_time) * mu
    demand = torch.poisson(torch.full((args.periods, args.batch), mu))
    total = 0.0
    for t in range(args.periods):
      q = mu * torch.nn.functional.softplus(net(x / mu)[:, 0] + 1.0)
      post = x[:, 0] - demand[t]
      cost = args.p * torch.relu(-post) + torch.relu(post)
      if t >= args.ignore:
        total = total + cost.mean()
      shifted = torch.cat([x[:, 1:], torch.zeros(args.batch, 1)], dim=1)
      shifted[:, 0] = shifted[:, 0] + torch.relu(post)
      x = shifted + q[:, None] * slot
    loss = total / (args.periods - args.ignore)
    opt.zero_grad()
    loss.backward()
    opt.step()

  for _ in range(2):
    step()
  n = max(3, args.steps // 3)
  t = time.perf_counter()
  for _ in range(n):
    step()
  dt = time.perf_counter() - t
  return n * args.batch * args.periods / dt, dt / n


def time_to_gap(args, torch_step_s):
  import jax
  from rlpost.control.inventory import dp, env, hdpo, policies
  prob = env.one_store_lost_sales(lead_time=args.lead_time, p=args.p)
  pol = policies.make_mlp_policy(prob)
  opt_cost = dp.solve_lost_sales(lead_time=args.lead_time, p=args.p).gain
  cfg = hdpo.HDPOConfig(n_steps=args.gap_max_steps, batch_size=args.batch, periods=args.periods,
                        ignore_periods=args.ignore, learning_rate=1e-2, final_lr_fraction=0.01,
                        eval_every=args.eval_every)
  optimizer = hdpo.make_optimizer(cfg)
  chunk = hdpo.make_train_chunk(prob, pol, optimizer, cfg, cfg.eval_every)
  ev = hdpo.make_evaluate(prob, pol.apply, n_scenarios=1024, periods=1000, ignore=300)
  params = pol.init(jax.random.PRNGKey(0))
  state = optimizer.init(params)
  jax.block_until_ready(chunk(params, state, jax.random.PRNGKey(99)))  # compile outside timing
  train_s, key = 0.0, jax.random.PRNGKey(1)
  for i in range(cfg.n_steps // cfg.eval_every):
    key, sub = jax.random.split(key)
    t = time.perf_counter()
    params, state, _ = jax.block_until_ready(chunk(params, state, sub))
    train_s += time.perf_counter() - t
    cost = float(ev(params, jax.random.PRNGKey(7))[0])
    gap = 100 * (cost / opt_cost - 1)
    steps = (i + 1) * cfg.eval_every
    if gap < 0.5:
      return {"reached": True, "steps": steps, "jax_train_s": train_s, "gap_pct": gap,
              "torch_projected_s": steps * torch_step_s}
  return {"reached": False, "steps": cfg.n_steps, "jax_train_s": train_s, "gap_pct": gap}


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--batches", default="64,512,8192",
                  help="comma-separated batch sizes for the throughput comparison")
  ap.add_argument("--batch", type=int, default=512, help="batch size of the time-to-gap run")
  ap.add_argument("--periods", type=int, default=60)
  ap.add_argument("--ignore", type=int, default=20)
  ap.add_argument("--lead_time", type=int, default=2)
  ap.add_argument("--p", type=float, default=9.0)
  ap.add_argument("--steps", type=int, default=30)
  ap.add_argument("--gap_max_steps", type=int, default=1600)
  ap.add_argument("--eval_every", type=int, default=100)
  ap.add_argument("--skip_gap", action="store_true")
  args = ap.parse_args()
  common = {"setting": "lost_sales", "lead_time": args.lead_time, "p": args.p,
            "periods": args.periods}
  torch_step_at_batch = None
  for batch in [int(b) for b in args.batches.split(",")]:
    sized = argparse.Namespace(**{**vars(args), "batch": batch,
                                  "steps": max(6, args.steps * 512 // max(batch, 512))})
    jax_sps, _ = bench_jax(sized)
    print(json.dumps({**common, "batch": batch, "impl": "jax_jit",
                      "scenario_periods_per_s": round(jax_sps)}), flush=True)
    torch_sps, torch_step = bench_torch(sized)
    print(json.dumps({**common, "batch": batch, "impl": "torch_eager",
                      "scenario_periods_per_s": round(torch_sps)}), flush=True)
    print(json.dumps({**common, "batch": batch, "ratio_jax_over_torch": round(jax_sps / torch_sps, 2),
                      "target": 10.0, "met": jax_sps / torch_sps >= 10.0}), flush=True)
    if batch == args.batch:
      torch_step_at_batch = torch_step
  if torch_step_at_batch is None:
    torch_step_at_batch = bench_torch(args)[1]
  common["batch"] = args.batch
  if not args.skip_gap:
    print(json.dumps({**common, "time_to_0.5pct_gap": time_to_gap(args, torch_step_at_batch)}), flush=True)


if __name__ == "__main__":
  main()
