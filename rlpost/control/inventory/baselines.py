"""Base-stock family, newsvendor heuristics and the closed-form backlogged optimum.

Paper: Alvo, Russo, Kanoria, Lee, "Deep Reinforcement Learning for Inventory Networks: Toward Reliable
Policy Optimization", 2023, arXiv:2306.11246 (official `neural_networks.py` BaseStock, CappedBaseStock,
EchelonStock). The levels are free parameters trained by the same pathwise gradient as the networks
(`rlpost.control.inventory.hdpo`).

Each `make_*` returns a `Policy(init, apply)`: `init(key) -> params`, `apply(params, state) -> action`,
with `state` batched arbitrarily in its leading dimensions.

  base-stock         q = max(S - sum(x), 0),                    S = softplus(theta)
  capped base-stock  q = clip(S - sum(x), 0, cap),              S, cap = softplus(theta)
  echelon-stock      q_j = max(S_j - IP^e_j, 0),  S_j = sum_{i<=j} softplus(theta_i)   (Clark-Scarf form;
                     the upstream-on-hand cap is applied by the simulator)

Closed form (backlog, normal demand, no clipping):  S* = (L+1) mu + z sigma sqrt(L+1),
cost* = (p+h) sigma sqrt(L+1) phi(z),  z = Phi^{-1}(p / (p+h)).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from rlpost.control.inventory import env as env_lib

Array = jax.Array


class Policy(NamedTuple):
  init: Callable[[Array], Any]
  apply: Callable[[Any, Any], Any]


def inverse_softplus(y: float | np.ndarray) -> np.ndarray:
  y = np.asarray(y, np.float64)
  return (y + np.log(-np.expm1(-y))).astype(np.float32)


def backlog_optimal_level(*, mean: float, std: float, lead_time: int, p: float, h: float = 1.0) -> float:
  """Optimal base-stock level (L+1) mu + z sigma sqrt(L+1) for i.i.d. normal backlogged demand."""
  z = stats.norm.ppf(p / (p + h))
  return float((lead_time + 1) * mean + z * std * np.sqrt(lead_time + 1))


def backlog_optimal_cost(*, std: float, lead_time: int, p: float, h: float = 1.0) -> float:
  """Optimal average cost per period (p+h) sigma sqrt(L+1) phi(Phi^{-1}(p/(p+h)))."""
  z = stats.norm.ppf(p / (p + h))
  return float((p + h) * std * np.sqrt(lead_time + 1) * stats.norm.pdf(z))


def newsvendor_level(*, mean: float, std: float, lead_time: int, p: float, h: float = 1.0,
                     demand: str = "normal") -> float:
  """Newsvendor heuristic S = F^{-1}_{D(L+1)}(p/(p+h)) for the lead-time-plus-one demand.

  For Poisson demand this is Zipkin's (2008) "base-stock" benchmark for lost sales (S 13 at L 1, S 18
  at L 2 for Poisson(5), p 4).
  """
  q = p / (p + h)
  if demand == "poisson":
    return float(stats.poisson.ppf(q, mean * (lead_time + 1)))
  if demand == "normal":
    return float(stats.norm.ppf(q, loc=(lead_time + 1) * mean, scale=std * np.sqrt(lead_time + 1)))
  raise ValueError(f"demand must be 'normal' or 'poisson', got {demand!r}")


def make_base_stock(problem: env_lib.SingleStore, *, init_level: float = 10.0) -> Policy:
  """Base-stock policy q = max(S - inventory position, 0); official init S = 10."""
  del problem

  def init(key):
    del key
    return {"level": jnp.asarray(inverse_softplus(init_level))}

  def apply(params, state):
    s = jax.nn.softplus(params["level"])
    return jax.nn.relu(s - state.sum(-1))

  return Policy(init, apply)


def make_fixed_base_stock(level: float) -> Policy:
  """A non-trainable base-stock policy at a given level (for newsvendor / closed-form checks)."""
  return Policy(lambda key: {}, lambda params, state: jax.nn.relu(level - state.sum(-1)))


def make_capped_base_stock(problem: env_lib.SingleStore, *, init_level: float = 10.0,
                           init_cap: float | None = None) -> Policy:
  """Capped base-stock q = clip(S - position, 0, cap) (Xin 2021), near-optimal for lost sales."""
  cap0 = 2.0 * problem.mean if init_cap is None else init_cap

  def init(key):
    del key
    return {"level": jnp.asarray(inverse_softplus(init_level)),
            "cap": jnp.asarray(inverse_softplus(cap0))}

  def apply(params, state):
    s = jax.nn.softplus(params["level"])
    cap = jax.nn.softplus(params["cap"])
    return jnp.minimum(jax.nn.relu(s - state.sum(-1)), cap)

  return Policy(init, apply)


def make_echelon_stock(problem: env_lib.Serial, *, init_increment: float | None = None) -> Policy:
  """Echelon-stock policy for the serial system: q_j = max(S_j - IP^e_j, 0), S nondecreasing upstream.

  Official code uses levels = cumsum(softplus(theta + 10)); we initialise each increment at
  (L_j + 1) * mean instead so the initial policy is sensible for any lead times.
  """
  lead = np.asarray(problem.lead_times, np.float64)
  inc0 = (lead + 1.0) * problem.mean if init_increment is None else np.full_like(lead, init_increment)

  def init(key):
    del key
    return {"increments": jnp.asarray(inverse_softplus(inc0))}

  def apply(params, state):
    levels = jnp.cumsum(jax.nn.softplus(params["increments"]))
    return jax.nn.relu(levels - problem.echelon_positions(state))

  return Policy(init, apply)


def make_warehouse_base_stock(problem: env_lib.OneWarehouse) -> Policy:
  """Per-store base-stock levels plus an echelon base-stock level for the warehouse.

  Store i orders max(S_i - position_i, 0); the warehouse orders max(S_w - (warehouse position + sum of
  store positions), 0). All N + 1 levels are trained pathwise.
  """
  means = np.asarray(problem.means)
  lead = np.asarray(problem.lead_times)

  def init(key):
    del key
    s0 = (lead + 1.0) * means * 1.1
    w0 = (problem.warehouse_lead_time + 1.0) * means.sum() + s0.sum()
    return {"stores": jnp.asarray(inverse_softplus(s0)), "warehouse": jnp.asarray(inverse_softplus(w0))}

  def apply(params, state):
    store_pos = state.stores.sum(-1)
    echelon = state.warehouse.sum(-1) + store_pos.sum(-1)
    return env_lib.WarehouseAction(
        stores=jax.nn.relu(jax.nn.softplus(params["stores"]) - store_pos),
        warehouse=jax.nn.relu(jax.nn.softplus(params["warehouse"]) - echelon))

  return Policy(init, apply)
