"""Experiment driver for `experiments/inventory.py` (HDPO and baselines on the inventory settings).

Paper: Alvo, Russo, Kanoria, Lee, "Deep Reinforcement Learning for Inventory Networks: Toward Reliable
Policy Optimization", 2023, arXiv:2306.11246. Writes metrics.jsonl, curves.png and summary.json
{"setting", "lead_time", "p", "policy", "test_cost", "optimal_cost", "gap_pct", "train_wall_s", ...}.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import numpy as np

from rlpost.control.inventory import baselines, dp, env, hdpo, pg, policies

SETTINGS = ("backlogged", "lost_sales", "serial", "one_warehouse")
POLICIES = {
    "backlogged": ("mlp", "base_stock", "capped_base_stock", "ppo", "reinforce"),
    "lost_sales": ("mlp", "base_stock", "capped_base_stock", "ppo", "reinforce"),
    "serial": ("mlp", "echelon_stock"),
    "one_warehouse": ("mlp", "gnn", "base_stock"),
}


def validate(config: Any) -> None:
  """Raises ValueError naming the bad field."""
  if config.setting not in SETTINGS:
    raise ValueError(f"config.setting must be one of {SETTINGS}, got {config.setting!r}")
  if config.policy not in POLICIES[config.setting]:
    raise ValueError(f"config.policy must be one of {POLICIES[config.setting]} for setting "
                     f"{config.setting!r}, got {config.policy!r}")
  if int(config.lead_time) < 1:
    raise ValueError(f"config.lead_time must be >= 1, got {config.lead_time}")
  if float(config.p) <= 0 or float(config.h) <= 0:
    raise ValueError(f"config.p and config.h must be > 0, got p={config.p}, h={config.h}")
  if config.setting == "one_warehouse" and not 1 <= int(config.n_stores) <= 1000:
    raise ValueError(f"config.n_stores must be in [1, 1000], got {config.n_stores}")


def make_problem(config: Any):
  if config.setting == "backlogged":
    return env.one_store_backlogged(lead_time=config.lead_time, p=config.p, h=config.h)
  if config.setting == "lost_sales":
    return env.one_store_lost_sales(lead_time=config.lead_time, p=config.p, h=config.h)
  if config.setting == "serial":
    return env.Serial(p=config.p)
  return env.OneWarehouse.sample(config.problem_seed, config.n_stores)


def make_policy(problem: Any, config: Any) -> baselines.Policy:
  name = config.policy
  if name == "mlp":
    return policies.make_mlp_policy(problem, hidden=tuple(config.hidden))
  if name == "gnn":
    return policies.make_gnn_policy(problem, message_steps=config.message_steps)
  if name == "echelon_stock":
    return baselines.make_echelon_stock(problem)
  if config.setting == "one_warehouse":
    return baselines.make_warehouse_base_stock(problem)
  level = baselines.newsvendor_level(mean=problem.mean, std=problem.std, lead_time=problem.lead_time,
                                     p=problem.p, h=problem.h, demand=problem.demand)
  if name == "base_stock":
    return baselines.make_base_stock(problem, init_level=level)
  return baselines.make_capped_base_stock(problem, init_level=level)


def optimal_cost(config: Any, problem: Any) -> float | None:
  """Exact optimum where known: closed form (backlog) or relative value iteration (lost sales, L<=3)."""
  if config.setting == "backlogged":
    return baselines.backlog_optimal_cost(std=problem.std, lead_time=problem.lead_time, p=problem.p,
                                          h=problem.h)
  if config.setting == "lost_sales" and problem.lead_time <= 3:
    return dp.solve_lost_sales(lead_time=problem.lead_time, p=problem.p, h=problem.h,
                               mean=problem.mean).gain
  return None


def _plot(history: list[dict], path: str, *, optimum: float | None, title: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  steps = [h["step"] for h in history]
  ax.plot(steps, [h["dev_cost"] for h in history], label="dev cost", marker="o", ms=3)
  ax.plot(steps, [h["train_loss"] for h in history], label="train loss", alpha=0.7)
  if optimum is not None:
    ax.axhline(optimum, color="k", ls="--", label=f"optimum {optimum:.4f}")
  finite = [v for h in history for v in (h["dev_cost"], h["train_loss"]) if np.isfinite(v)]
  if finite:
    lo = min(finite + ([optimum] if optimum else []))
    ax.set_ylim(lo * 0.98, np.percentile(finite, 90) * 1.05 + 1e-6)
  ax.set_xlabel("update")
  ax.set_ylabel("cost per period per store")
  ax.set_title(title)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def run(config: Any, workdir: str, *, progress: bool = True) -> dict:
  """Trains the configured policy, evaluates it on test scenarios, writes the three artefacts."""
  validate(config)
  os.makedirs(workdir, exist_ok=True)
  problem = make_problem(config)
  hcfg = hdpo.HDPOConfig(**dict(config.hdpo), seed=config.seed)
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  bar = None
  if progress:
    from tqdm import tqdm
    total = config.pg.n_updates if config.policy in ("ppo", "reinforce") else hcfg.n_steps
    bar = tqdm(total=total, desc=f"{config.setting}/{config.policy}", unit="upd")
  with open(metrics_path, "w") as f:

    def log(entry):
      f.write(json.dumps(entry) + "\n")
      f.flush()
      if bar is not None:
        bar.n = entry["step"]
        bar.set_postfix(dev=f"{entry['dev_cost']:.4f}")
        bar.refresh()

    cpu0, wall0 = time.process_time(), time.perf_counter()
    if config.policy in ("ppo", "reinforce"):
      params, history, policy = _run_pg(problem, config, hcfg, log)
    else:
      policy = make_policy(problem, config)
      result = hdpo.train_hdpo(problem, policy, hcfg, callback=log)
      params, history = result.params, result.history
    train_wall, train_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
  if bar is not None:
    bar.close()
  test_mean, test_se = hdpo.evaluate_test_cost(problem, policy, params, hcfg, seed=config.seed + 777)
  opt = optimal_cost(config, problem)
  summary = {
      # Multi-store networks draw per-store lead times and penalties (see problem), so these are None.
      "setting": config.setting,
      "lead_time": None if config.setting == "one_warehouse" else int(config.lead_time),
      "p": None if config.setting == "one_warehouse" else float(config.p),
      "policy": config.policy, "test_cost": test_mean, "test_se": test_se, "optimal_cost": opt,
      "gap_pct": None if opt is None else 100.0 * (test_mean / opt - 1.0),
      "train_wall_s": train_wall, "train_cpu_s": train_cpu,
      "n_stores": int(getattr(problem, "n_stores", 1)),
      "n_train_scenarios": hcfg.n_train_scenarios, "best_dev_cost": min(h["dev_cost"] for h in history),
  }
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  _plot(history, os.path.join(workdir, "curves.png"), optimum=opt,
        title=f"{config.setting} L={config.lead_time} p={config.p} ({config.policy})")
  return summary


def _run_pg(problem, config, hcfg, log):
  pcfg = pg.PGConfig(**dict(config.pg))
  chunk = max(1, pcfg.n_updates // 10)
  n_calls = -(-pcfg.n_updates // chunk)
  init, train = pg.make_pg_train(problem, pcfg, updates_per_call=chunk)
  state = init(jax.random.PRNGKey(config.seed))
  policy = pg.greedy_policy(problem)
  dev = hdpo.make_evaluate(problem, policy.apply, n_scenarios=hcfg.dev_scenarios,
                           periods=hcfg.dev_periods, ignore=hcfg.dev_ignore)
  k_dev = jax.random.PRNGKey(config.seed + 1)
  best, best_params, history = np.inf, state.params, []
  for i in range(n_calls):
    state, m = train(state)
    dev_cost = float(dev(state.params, k_dev)[0])
    if np.isfinite(dev_cost) and dev_cost < best:
      best, best_params = dev_cost, state.params
    history.append({"step": (i + 1) * chunk, "train_loss": float(m["train_cost"].mean()),
                    "dev_cost": dev_cost})
    log(history[-1])
  return best_params, history, policy


def format_table(summary: dict) -> str:
  keys = ("setting", "lead_time", "p", "policy", "test_cost", "optimal_cost", "gap_pct",
          "train_wall_s", "train_cpu_s")
  rows = []
  for k in keys:
    v = summary.get(k)
    rows.append(f"{k:>14} | {v:.4f}" if isinstance(v, float) else f"{k:>14} | {v}")
  return "\n".join(rows)
