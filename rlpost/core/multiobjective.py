"""Multi-objective reward weighting: exact hypervolume, HV-guided and gradient-based weights,
hierarchical reward gating.

Paper: "Learning to Optimize Multi-Objective Alignment Through Dynamic Reward Weighting", 2025,
arXiv 2509.11452; ChatShopBuddy (2026, arXiv 2603.06065) for the hierarchical gate.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


def _orient(points: Array, ref: Array, maximize) -> tuple[Array, Array]:
  """Flips minimised objectives so that every objective is maximised."""
  sign = jnp.where(jnp.asarray(maximize, bool), 1.0, -1.0)
  return points.astype(jnp.float32) * sign, ref.astype(jnp.float32) * sign


def _hv2(points: Array, ref: Array, valid: Array) -> Array:
  """Exact 2-D hypervolume dominated by the valid points above `ref` (all maximised)."""
  ok = valid & jnp.all(points > ref, axis=1)
  x = jnp.where(ok, points[:, 0], ref[0])
  y = jnp.where(ok, points[:, 1], ref[1])
  order = jnp.argsort(-x, stable=True)  # sweep from the largest x down
  xs, ys = x[order], y[order]
  best_y = jax.lax.cummax(ys)  # highest y among points with x >= current x
  x_next = jnp.concatenate([xs[1:], ref[:1]])
  return jnp.sum(jnp.maximum(xs - x_next, 0.0) * jnp.maximum(best_y - ref[1], 0.0))


def hypervolume(points: Array, ref: Array, *, maximize=None, valid: Array | None = None) -> Array:
  """Exact hypervolume of `points [N, D]` (D = 2 or 3) w.r.t. the reference point `ref [D]`.

  D = 2: sort-and-sweep. D = 3: slicing along the third objective, summing 2-D hypervolumes of the
  points at or above each slice. `maximize` is a length-D bool sequence (default all True);
  minimised objectives (e.g. response length) are negated first. `valid` masks a fixed-capacity
  buffer. Points not strictly better than `ref` in every objective add nothing.
  """
  d = points.shape[1]
  if d not in (2, 3):
    raise ValueError(f"hypervolume supports 2 or 3 objectives; got {d}")
  maximize = (True,) * d if maximize is None else maximize
  pts, r = _orient(points, ref, maximize)
  valid = jnp.ones(points.shape[0], bool) if valid is None else valid.astype(bool)
  if d == 2:
    return _hv2(pts, r, valid)
  ok = valid & jnp.all(pts > r, axis=1)
  z = jnp.where(ok, pts[:, 2], r[2])
  zs = jnp.sort(z)[::-1]  # slice tops, highest first
  z_next = jnp.concatenate([zs[1:], r[2:3]])

  def slab(z_top, z_bottom):
    active = ok & (z >= z_top)
    return _hv2(pts[:, :2], r[:2], active) * jnp.maximum(z_top - z_bottom, 0.0)

  return jnp.sum(jax.vmap(slab)(zs, z_next))


class ParetoBuffer(NamedTuple):
  """A fixed-capacity buffer of validation points; slot 0 holds the initial model (also the
  reference point)."""

  points: Array
  valid: Array
  ref: Array


def init_pareto_buffer(initial_point: Array, *, capacity: int = 64) -> ParetoBuffer:
  pts = jnp.zeros((capacity, initial_point.shape[0]), jnp.float32).at[0].set(initial_point)
  return ParetoBuffer(pts, jnp.zeros(capacity, bool).at[0].set(True),
                      initial_point.astype(jnp.float32))


def hv_guided_step(buffer: ParetoBuffer, point: Array, *, maximize=None
                   ) -> tuple[ParetoBuffer, Array, Array]:
  """One hypervolume-guided step: contribution, reward multiplier and buffer update.

    HVC_t = HV(B + {p_t}) - HV(B);  meta_t = 0.5 + 1.5 tanh(HVC_t) in [0.5, 2)

  p_t joins the buffer when HVC_t > 0 (when full, the last slot is overwritten). The next step's
  rewards are multiplied by meta_t; the objective weights themselves stay fixed (as in the official
  code, despite the method's name).

  Returns:
    (new buffer, HVC_t, meta_t).
  """
  before = hypervolume(buffer.points, buffer.ref, maximize=maximize, valid=buffer.valid)
  cap = buffer.valid.shape[0]
  # First empty slot; when the buffer is full the last slot is reused (slot 0 is the reference).
  slot = jnp.where(jnp.all(buffer.valid), cap - 1, jnp.argmin(buffer.valid))
  pts = buffer.points.at[slot].set(point.astype(jnp.float32))
  valid = buffer.valid.at[slot].set(True)
  after = hypervolume(pts, buffer.ref, maximize=maximize, valid=valid)
  hvc = jnp.maximum(after - before, 0.0)
  meta = 0.5 + 1.5 * jnp.tanh(hvc)
  grew = hvc > 0
  new = ParetoBuffer(jnp.where(grew, pts, buffer.points), jnp.where(grew, valid, buffer.valid),
                     buffer.ref)
  return new, hvc, meta


def gradient_reward_weights(weights: Array, grads: Array, *, lr: float,
                            lam: float = 1e-5) -> tuple[Array, Array]:
  """Gradient-based dynamic weighting (mirror descent on the simplex).

    S = G G^T,  influence_i = sum_j S_ij = <g_i, sum_j g_j>,
    w <- softmax(log w + lr * influence / lam)

  `grads [K, D]` holds each objective's flattened policy gradient (restricted to the target layers
  by the caller); lr is the actor's current learning rate, lam the temperature (paper 1e-5).
  Equal influences leave w unchanged.

  Returns:
    (new weights `[K]`, influence `[K]`).
  """
  g = grads.astype(jnp.float32)
  influence = g @ jnp.sum(g, axis=0)
  logits = jnp.log(jnp.clip(weights.astype(jnp.float32), 1e-30)) + lr * influence / lam
  return jax.nn.softmax(logits), influence


def scalarise(rewards: Array, weights: Array) -> Array:
  """r = sum_i w_i r_i for rewards `[..., K]`."""
  return jnp.sum(rewards.astype(jnp.float32) * weights, axis=-1)


def hierarchical_reward(outcome: Array, subjective: Array, process: Array, *,
                        outcome_pass: float = 1.0, quality_gate: float = 0.5,
                        process_weight: float = 0.1) -> Array:
  """ChatShopBuddy-style hierarchical gating of outcome, subjective and process rewards.

    g1 = [outcome >= outcome_pass], g2 = [subjective >= quality_gate]
    R  = g1 (outcome + g2 subjective) + process_weight * process * g1

  A failed outcome (g1 = 0) zeroes the higher-level and process terms, so the reward is monotone in
  lower-level success. The gating form and weights are our reading of the paper's description
  (no code or equations were available; BUILD_NOTES.md).
  """
  g1 = (outcome >= outcome_pass).astype(jnp.float32)
  g2 = (subjective >= quality_gate).astype(jnp.float32)
  return g1 * (outcome + g2 * subjective) + process_weight * process * g1
