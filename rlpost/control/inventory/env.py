"""Differentiable, batched inventory simulators (HDPO conventions).

Paper: Alvo, Russo, Kanoria, Lee, "Deep Reinforcement Learning for Inventory Networks: Toward Reliable
Policy Optimization" (v1/v2 title "Neural Inventory Control in Networks via Hindsight Differentiable
Policy Optimization"), 2023, arXiv:2306.11246.

Conventions (official `environment.py`), per store with state x = [on_hand, pipe_1, ..., pipe_{K-1}]:

  post  = x_0 - D_t
  c_t   = p * max(D_t - x_0, 0) + h * max(x_0 - D_t, 0)      (charged *before* the next arrival)
  post <- max(post, 0)                                          (lost sales only)
  x'    = [post + x_1, x_2, ..., x_{K-1}, 0] + q_t * e_{L-1}     (order at t is on hand at t + L)

Every `step` is written for arbitrary leading batch dimensions, so the same function is used unbatched
(gymnax-style `InventoryEnv`), batched over scenarios, and inside `lax.scan` over periods. All maps are
piecewise linear, so `jax.grad` of a rollout cost is the pathwise (BPTT) gradient used by HDPO; demand is
exogenous (sampled independently of the state), including the Poisson lost-sales demand.

Deviations from the official code (documented in BUILD_NOTES.md):
  * normal demand is clipped at 0 but not rounded to 3 decimals;
  * the one-warehouse network always uses the proportional allocation rule
    alloc_i = desired_i * min(1, I_w / sum_j desired_j) (the official vanilla net uses a softmax);
  * warehouse initial stock is U(0, 1) * (sum of store means) per pipeline slot.
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
PyTree = Any


def advance(x: Array, post: Array, arrival: Array, lead_time: Array | int) -> Array:
  """Shifts the pipeline one period and places `arrival` so it is on hand `lead_time` periods later.

  Args:
    x: [..., K] on-hand followed by pipeline (K >= lead_time >= 1).
    post: [...] on-hand left after demand/shipments (already floored for lost sales).
    arrival: [...] quantity entering the pipeline this period.
    lead_time: int or integer array broadcastable to post (heterogeneous lead times).

  Returns:
    [..., K] next state: [post + x_1, x_2, ..., x_{K-1}, 0] + arrival * e_{L-1}.
  """
  k = x.shape[-1]
  shifted = jnp.concatenate([x[..., 1:], jnp.zeros_like(x[..., :1])], axis=-1)
  shifted = shifted.at[..., 0].add(post)
  slot = jax.nn.one_hot(jnp.asarray(lead_time) - 1, k, dtype=x.dtype)
  return shifted + arrival[..., None] * slot


def _store_cost(on_hand: Array, demand: Array, p: Array | float, h: Array | float):
  post = on_hand - demand
  cost = p * jax.nn.relu(-post) + h * jax.nn.relu(post)
  return post, cost


def poisson_by_inversion(key: Array, mean: float, shape: tuple[int, ...]) -> Array:
  """Poisson(mean) samples as float32 by inverting the CDF table (exact up to P(D > table) < 1e-12).

  `jax.random.poisson` uses rejection loops that dominate the rollout time on CPU; inversion is one
  uniform draw and a vectorised comparison per sample.
  """
  n = int(np.ceil(mean + 12.0 * np.sqrt(mean) + 20.0))
  cdf = np.cumsum(np.exp(-mean + np.arange(n) * np.log(mean)
                         - np.array([np.sum(np.log(np.arange(1, k + 1))) for k in range(n)])))
  u = jax.random.uniform(key, shape)
  return jnp.searchsorted(jnp.asarray(cdf[:-1], jnp.float32), u, side="right").astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class SingleStore:
  """One store, backlogged (Normal demand clipped at 0) or lost sales (Poisson demand).

  State [..., L]; action q [...] >= 0 (order quantity); cost [...] per period.
  """
  lead_time: int = 4
  p: float = 9.0
  h: float = 1.0
  lost_sales: bool = False
  demand: str = "normal"  # "normal" | "poisson"
  mean: float = 5.0
  std: float = 1.6

  def __post_init__(self):
    if self.lead_time < 1:
      raise ValueError(f"lead_time must be >= 1, got {self.lead_time}")
    if self.demand not in ("normal", "poisson"):
      raise ValueError(f"demand must be 'normal' or 'poisson', got {self.demand!r}")

  n_stores = 1

  @property
  def state_dim(self) -> int:
    return self.lead_time

  @property
  def demand_scale(self) -> float:
    return self.mean

  def init_state(self, key: Array, batch_shape: tuple[int, ...] = ()) -> Array:
    return jax.random.uniform(key, (*batch_shape, self.lead_time)) * self.mean

  def sample_demand(self, key: Array, shape: tuple[int, ...] = ()) -> Array:
    if self.demand == "poisson":
      return poisson_by_inversion(key, self.mean, shape)
    return jnp.maximum(self.mean + self.std * jax.random.normal(key, shape), 0.0)

  def step(self, state: Array, action: Array, demand: Array) -> tuple[Array, Array]:
    post, cost = _store_cost(state[..., 0], demand, self.p, self.h)
    if self.lost_sales:
      post = jax.nn.relu(post)
    return advance(state, post, action, self.lead_time), cost

  def inventory_position(self, state: Array) -> Array:
    return state.sum(-1)


def one_store_backlogged(lead_time: int = 4, p: float = 9.0, h: float = 1.0) -> SingleStore:
  """HDPO `one_store_backlogged`: N(5, 1.6) demand clipped at 0."""
  return SingleStore(lead_time=lead_time, p=p, h=h, lost_sales=False, demand="normal", mean=5.0,
                     std=1.6)


def one_store_lost_sales(lead_time: int = 4, p: float = 9.0, h: float = 1.0) -> SingleStore:
  """HDPO `one_store_lost`: Poisson(5) demand, unmet demand is lost."""
  return SingleStore(lead_time=lead_time, p=p, h=h, lost_sales=True, demand="poisson", mean=5.0,
                     std=float(np.sqrt(5.0)))


@dataclasses.dataclass(frozen=True)
class Serial:
  """Serial multi-echelon system, store backlogged; echelon 0 is the store, E-1 the top echelon.

  State [..., E, K] (K = max lead time, zero padded). Action a [..., E]: a_j is the quantity echelon j
  requests from echelon j+1 (the top echelon orders from an unconstrained supplier). Shipments are
  feasible by construction: ship_j = min(a_j, on_hand_{j+1}). Costs: p * backlog + h_0 * store holding
  + sum_{j>=1} h_j * (on_hand_j - ship_{j-1}), all before arrivals.

  Defaults follow the HDPO `serial_system` setting (store N(5, 2), L 4, h 1, p 9; warehouse h .5, L 3;
  two extra echelons). Which extra echelon has (h .2, L 4) vs (h .1, L 2) is not stated in the spec; we
  put cheaper holding further upstream.
  """
  lead_times: tuple[int, ...] = (4, 3, 4, 2)
  holding: tuple[float, ...] = (1.0, 0.5, 0.2, 0.1)
  p: float = 9.0
  mean: float = 5.0
  std: float = 2.0

  def __post_init__(self):
    if len(self.lead_times) != len(self.holding) or len(self.lead_times) < 2:
      raise ValueError("lead_times and holding must have the same length >= 2")
    if min(self.lead_times) < 1:
      raise ValueError(f"lead_times must be >= 1, got {self.lead_times}")

  n_stores = 1

  @property
  def n_echelons(self) -> int:
    return len(self.lead_times)

  @property
  def demand_scale(self) -> float:
    return self.mean

  def init_state(self, key: Array, batch_shape: tuple[int, ...] = ()) -> Array:
    e, k = self.n_echelons, max(self.lead_times)
    mask = (np.arange(k)[None, :] < np.asarray(self.lead_times)[:, None]).astype(np.float32)
    return jax.random.uniform(key, (*batch_shape, e, k)) * self.mean * mask

  def sample_demand(self, key: Array, shape: tuple[int, ...] = ()) -> Array:
    return jnp.maximum(self.mean + self.std * jax.random.normal(key, shape), 0.0)

  def step(self, state: Array, action: Array, demand: Array) -> tuple[Array, Array]:
    on_hand = state[..., 0]  # [..., E]
    upstream = jnp.concatenate(
        [on_hand[..., 1:], jnp.full_like(on_hand[..., :1], jnp.inf)], axis=-1)
    ship = jnp.minimum(jax.nn.relu(action), upstream)  # ship_j: into echelon j from j+1 / supplier
    post_store, cost = _store_cost(on_hand[..., 0], demand, self.p, self.holding[0])
    post_up = on_hand[..., 1:] - ship[..., :-1]
    cost = cost + (jax.nn.relu(post_up) * jnp.asarray(self.holding[1:])).sum(-1)
    post = jnp.concatenate([post_store[..., None], post_up], axis=-1)
    nxt = advance(state, post, ship, jnp.asarray(self.lead_times))
    return nxt, cost

  def echelon_positions(self, state: Array) -> Array:
    """[..., E] echelon inventory positions: all stock at or below echelon j (incl. pipelines)."""
    return jnp.cumsum(state.sum(-1), axis=-1)


class WarehouseState(NamedTuple):
  stores: Array  # [..., N, Ks]
  warehouse: Array  # [..., Kw]


class WarehouseAction(NamedTuple):
  stores: Array  # [..., N] desired store orders (>= 0)
  warehouse: Array  # [...] warehouse order from the supplier (>= 0)


@dataclasses.dataclass(frozen=True)
class OneWarehouse:
  """One warehouse supplying N lost-sales stores with correlated normal demand (HDPO
  `one_warehouse_lost_demand`). Store orders are filled proportionally from warehouse on-hand:

    alloc_i = desired_i * min(1, I_w / sum_j desired_j),

  the warehouse pays holding h_w on I_w - sum_i alloc_i, stores pay p_i * lost + h_i * holding.
  Use `OneWarehouse.sample(seed, n_stores)` to draw the primitives as in the paper.
  """
  means: tuple[float, ...]
  stds: tuple[float, ...]
  p: tuple[float, ...]
  h: tuple[float, ...]
  lead_times: tuple[int, ...]
  rho: float = 0.5
  warehouse_h: float = 0.3
  warehouse_lead_time: int = 3
  warehouse_bound_factor: float = 4.0  # warehouse order cap = factor * mean total demand

  @classmethod
  def sample(cls, seed: int, n_stores: int, **kwargs) -> "OneWarehouse":
    """Primitives: mu ~ U[2.5, 7.5], CV ~ U[.25, .5], p ~ U[6.3, 11.7], h ~ U[.7, 1.3], L ~ {2, 3}."""
    if n_stores < 1:
      raise ValueError(f"n_stores must be >= 1, got {n_stores}")
    rng = np.random.default_rng(seed)
    mu = rng.uniform(2.5, 7.5, n_stores)
    cv = rng.uniform(0.25, 0.5, n_stores)
    rnd = lambda a: tuple(float(round(v, 4)) for v in a)
    return cls(means=rnd(mu), stds=rnd(mu * cv), p=rnd(rng.uniform(6.3, 11.7, n_stores)),
               h=rnd(rng.uniform(0.7, 1.3, n_stores)),
               lead_times=tuple(int(v) for v in rng.integers(2, 4, n_stores)), **kwargs)

  @property
  def n_stores(self) -> int:
    return len(self.means)

  @property
  def store_dim(self) -> int:
    return max(self.lead_times)

  @property
  def demand_scale(self) -> float:
    return float(np.mean(self.means))

  @property
  def warehouse_bound(self) -> float:
    return self.warehouse_bound_factor * float(np.sum(self.means))

  def init_state(self, key: Array, batch_shape: tuple[int, ...] = ()) -> WarehouseState:
    k1, k2 = jax.random.split(key)
    mask = (np.arange(self.store_dim)[None, :] < np.asarray(self.lead_times)[:, None])
    stores = jax.random.uniform(k1, (*batch_shape, self.n_stores, self.store_dim))
    stores = stores * np.asarray(self.means)[:, None] * mask
    wh = jax.random.uniform(k2, (*batch_shape, self.warehouse_lead_time)) * float(np.sum(self.means))
    return WarehouseState(stores, wh)

  def sample_demand(self, key: Array, shape: tuple[int, ...] = ()) -> Array:
    n = self.n_stores
    corr = np.full((n, n), self.rho) + (1.0 - self.rho) * np.eye(n)
    chol = np.linalg.cholesky(corr).astype(np.float32)
    z = jax.random.normal(key, (*shape, n)) @ chol.T
    return jnp.maximum(np.asarray(self.means, np.float32) + np.asarray(self.stds, np.float32) * z,
                       0.0)

  def step(self, state: WarehouseState, action: WarehouseAction,
           demand: Array) -> tuple[WarehouseState, Array]:
    desired = jax.nn.relu(action.stores)
    i_w = state.warehouse[..., 0]
    total = desired.sum(-1)
    frac = jnp.minimum(1.0, i_w / jnp.maximum(total, 1e-8))
    alloc = desired * frac[..., None]
    post_s, cost_s = _store_cost(state.stores[..., 0], demand, np.asarray(self.p, np.float32),
                                 np.asarray(self.h, np.float32))
    stores = advance(state.stores, jax.nn.relu(post_s), alloc, jnp.asarray(self.lead_times))
    post_w = jax.nn.relu(i_w - alloc.sum(-1))
    wh = advance(state.warehouse, post_w, jax.nn.relu(action.warehouse), self.warehouse_lead_time)
    cost = cost_s.sum(-1) + self.warehouse_h * post_w
    return WarehouseState(stores, wh), cost


class EnvState(NamedTuple):
  inventory: PyTree
  time: Array


class InventoryEnv:
  """gymnax-style wrapper (1.0 step API) around any problem above; unbatched, vmap over it.

  reset(key) -> (obs, state); step(key, state, action) ->
  (obs, state, reward, terminated, truncated, info) with reward = -cost. Demand is sampled from `key`.
  Observations are the raw inventory pytree (the policies normalise it themselves).
  """

  def __init__(self, problem: Any, *, max_steps: int = 1000):
    self.problem = problem
    self.max_steps = max_steps

  def reset(self, key: Array) -> tuple[PyTree, EnvState]:
    inv = self.problem.init_state(key)
    return inv, EnvState(inv, jnp.zeros((), jnp.int32))

  def step(self, key: Array, state: EnvState, action: PyTree):
    demand = self.problem.sample_demand(key, ())
    inv, cost = self.problem.step(state.inventory, action, demand)
    t = state.time + 1
    truncated = t >= self.max_steps
    return inv, EnvState(inv, t), -cost, jnp.zeros((), bool), truncated, {"demand": demand,
                                                                           "cost": cost}
