"""Exact average-cost optimum of the single-store lost-sales problem by relative value iteration.

Reference values: Zipkin, "Old and New Methods for Lost-Sales Inventory Systems", Operations Research
56(5), 2008 (Poisson(5), h = 1: optimum 4.04 at L = 1, p = 4). Used as the exact reference for HDPO
(Alvo, Russo, Kanoria, Lee, 2023, arXiv:2306.11246), under the HDPO timing of `env.SingleStore`:

  state x = (x_0, x_1, ..., x_{L-1}) (on hand, pipeline), order q,
  c(x_0)  = E[p (D - x_0)^+ + h (x_0 - D)^+],
  x'      = ((x_0 - D)^+ + x_1, x_2, ..., x_{L-1}, q)        (for L = 1: x' = (x_0 - D)^+ + q).

Relative value iteration on integer states,

  (T V)(x) = c(x_0) + min_q sum_k P[(x_0 - D)^+ = k] V(k + x_1, x_2, ..., q),
  V_{n+1}  = T V_n - (T V_n)(0),

stops when the span of T V_n - V_n is below `tol`; the gain g is bracketed by min/max of T V_n - V_n and
we return their midpoint. Truncation: on hand is clipped at `max_on_hand`, orders and pipeline slots lie
in [0, max_order]; demand is Poisson with its tail mass folded into the state (x_0 - D)^+ = 0, so the
one-period cost c is exact. The bounds must be generous enough not to bind (tests check this by
enlarging them).
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats


class LostSalesSolution(NamedTuple):
  gain: float  # optimal average cost per period
  gain_low: float
  gain_high: float
  values: np.ndarray  # relative values, shape [max_on_hand+1] + [max_order+1] * (L-1)
  policy: np.ndarray  # optimal integer order, same shape
  iterations: int


def _post_demand_matrix(mean: float, n0: int) -> np.ndarray:
  """P[x0, k] = P((x0 - D)^+ = k) for D ~ Poisson(mean), x0, k in [0, n0)."""
  x0 = np.arange(n0)[:, None]
  k = np.arange(n0)[None, :]
  pmf = stats.poisson.pmf(x0 - k, mean) * (k >= 1) * (k <= x0)
  tail = stats.poisson.sf(x0[:, 0] - 1, mean)  # P(D >= x0)
  pmf[:, 0] = tail
  return pmf


def _expected_cost(mean: float, n0: int, p: float, h: float) -> np.ndarray:
  d = np.arange(0, int(mean * 20 + n0 + 50))
  pmf = stats.poisson.pmf(d, mean)
  x0 = np.arange(n0)[:, None]
  return (pmf * (p * np.maximum(d - x0, 0) + h * np.maximum(x0 - d, 0))).sum(-1)


@functools.lru_cache(maxsize=None)
def _make_rvi(n0: int, nq: int, lead_time: int, max_iter: int):
  """Builds the jitted relative value iteration for one grid (static shapes)."""
  shape = (n0,) + (nq,) * (lead_time - 1)

  def bellman(v, post, cost):
    if lead_time == 1:
      # V[x0]; next on hand = clip(k + q): G[q, k] = V[clip(k + q)].
      idx = jnp.clip(jnp.arange(n0)[None, :] + jnp.arange(nq)[:, None], 0, n0 - 1)
      q_val = cost[:, None] + jnp.einsum("xk,qk->xq", post, v[idx])
    else:
      # V[x0, x1, ..., x_{L-1}]; next = (clip(k + x1), x2, ..., x_{L-1}, q).
      idx = jnp.clip(jnp.arange(n0)[None, :] + jnp.arange(nq)[:, None], 0, n0 - 1)  # [x1, k]
      g = v[idx]  # [x1, k, x2, ..., x_{L-1}, q]
      q_val = jnp.tensordot(post, g, axes=([1], [1]))  # [x0, x1, ..., x_{L-1}, q]
      q_val = q_val + cost.reshape((-1,) + (1,) * (q_val.ndim - 1))
    return q_val.min(-1), q_val.argmin(-1)

  @jax.jit
  def solve(post, cost, tol):
    def cond(carry):
      _, lo, hi, i = carry
      return jnp.logical_and(hi - lo > tol, i < max_iter)

    def body(carry):
      v, _, _, i = carry
      tv, _ = bellman(v, post, cost)
      diff = tv - v
      return tv - tv.reshape(-1)[0], diff.min(), diff.max(), i + 1

    init = (jnp.zeros(shape, jnp.float32), jnp.float32(-jnp.inf), jnp.float32(jnp.inf), 0)
    v, lo, hi, it = jax.lax.while_loop(cond, body, init)
    _, pol = bellman(v, post, cost)
    return v, pol, lo, hi, it

  return solve


def solve_lost_sales(*, lead_time: int, p: float, h: float = 1.0, mean: float = 5.0,
                     max_on_hand: int | None = None, max_order: int | None = None,
                     tol: float = 1e-4, max_iter: int = 5000) -> LostSalesSolution:
  """Optimal average cost of the Poisson lost-sales problem (L <= 3 is practical on a CPU).

  Args:
    lead_time: L >= 1 (order at t is on hand at t + L).
    p, h: lost-sales penalty and holding cost per unit.
    mean: Poisson demand mean.
    max_on_hand, max_order: truncation of the integer state/action grid (defaults scale with mean,
      lead time and the critical ratio).
    tol: stopping span of T V - V (the gain is known to +-tol/2; float32, so keep tol >= 1e-4).
    max_iter: iteration cap.
  """
  if lead_time < 1:
    raise ValueError(f"lead_time must be >= 1, got {lead_time}")
  if max_order is None:
    max_order = int(stats.poisson.ppf(0.9995, mean * 2) + 2)
  if max_on_hand is None:
    max_on_hand = int(stats.poisson.ppf(0.9999, mean * (lead_time + 2)) + 2)
  n0, nq = max_on_hand + 1, max_order + 1
  if lead_time == 1:
    nq = min(nq, n0)
  post = jnp.asarray(_post_demand_matrix(mean, n0), jnp.float32)
  cost = jnp.asarray(_expected_cost(mean, n0, p, h), jnp.float32)
  solver = _make_rvi(n0, nq, lead_time, max_iter)
  v, pol, lo, hi, it = solver(post, cost, tol=jnp.float32(tol))
  lo, hi = float(lo), float(hi)
  return LostSalesSolution(gain=0.5 * (lo + hi), gain_low=lo, gain_high=hi, values=np.asarray(v),
                           policy=np.asarray(pol), iterations=int(it))
