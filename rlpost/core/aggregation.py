"""Masked reductions and the loss-aggregation modes.

How a `[B, T]` matrix of per-token losses becomes one scalar is a hyperparameter of its own: it sets
how much each token and each response weighs. rlpost keeps it out of every loss and names the four
modes used across verl, Tunix and TRL (see `llm_objectives.md` §10):

  token_mean               sum_it m*l / sum_it m                       (DAPO "token-level" loss)
  seq_mean_token_sum       mean over non-empty rows of sum_t m*l
  seq_mean_token_mean      mean over non-empty rows of (sum_t m*l / n_i) (GRPO paper)
  seq_mean_token_sum_norm  sum_it m*l / C, C constant, no division by B (Dr.GRPO, verl semantics)

Semantics chosen (recorded in BUILD_NOTES.md):
  * fully-masked rows are excluded from the sequence means (verl HEAD, not the older forks);
  * an all-masked batch aggregates to exactly 0 with a finite gradient (verl divides by zero here);
  * masked positions are selected away with `where`, so NaN/Inf in padding never propagates.

`aggregate_parts` returns the numerator and denominator separately so that a step split into
micro-batches (or devices) is normalised globally: loss = sum(total_k) / sum(denom_k).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array

AGG_MODES = ("token_mean", "seq_mean_token_sum", "seq_mean_token_mean", "seq_mean_token_sum_norm")


class WeightedMean(NamedTuple):
  """A mean kept as (numerator, denominator) so that it can be summed across parts."""

  total: Array
  denom: Array

  @property
  def value(self) -> Array:
    return safe_divide(self.total, self.denom)

  def __add__(self, other: "WeightedMean") -> "WeightedMean":  # type: ignore[override]
    return WeightedMean(self.total + other.total, self.denom + other.denom)


def safe_divide(num: Array, den: Array) -> Array:
  """num / den, and 0 (with a zero gradient) wherever den == 0."""
  den = jnp.asarray(den, jnp.float32)
  ok = den != 0
  return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


def masked_sum(x: Array, mask: Array, axis=None) -> Array:
  """Sum of x where mask is set; masked entries are selected away (NaN-safe)."""
  return jnp.sum(jnp.where(mask.astype(bool), x.astype(jnp.float32), 0.0), axis=axis)


def masked_mean(x: Array, mask: Array, axis=None) -> Array:
  """Mean of x over the set entries of mask; 0 where nothing is set."""
  return safe_divide(masked_sum(x, mask, axis), jnp.sum(mask.astype(jnp.float32), axis=axis))


def masked_var(x: Array, mask: Array, *, unbiased: bool = True) -> Array:
  """Variance of x over the set entries of mask (all axes); 0 when too few entries are set."""
  m = mask.astype(bool)
  n = jnp.sum(m.astype(jnp.float32))
  mean = masked_mean(x, m)
  sq = masked_sum(jnp.square(x - mean), m)
  return safe_divide(sq, n - 1.0 if unbiased else n) * (n > (1 if unbiased else 0))


def masked_whiten(x: Array, mask: Array, *, eps: float = 1e-8, shift_mean: bool = True) -> Array:
  """Whitens x over the valid entries of mask: (x - mean) * rsqrt(var_unbiased + eps), re-masked.

  Follows verl's `masked_whiten`. When fewer than two entries are valid the unbiased variance is
  undefined (verl returns NaN); we return the centred values instead, a documented deviation.
  """
  m = mask.astype(bool)
  x = jnp.where(m, x.astype(jnp.float32), 0.0)
  n = jnp.sum(m.astype(jnp.float32))
  mean = masked_mean(x, m)
  var = masked_var(x, m, unbiased=True)
  scale = jnp.where(n >= 2, jax.lax.rsqrt(var + eps), 1.0)
  out = (x - mean) * scale if shift_mean else x * scale
  return jnp.where(m, out, 0.0)


def _check_mode(mode: str) -> None:
  if mode not in AGG_MODES:
    raise ValueError(f"unknown aggregation mode {mode!r}; valid modes: {', '.join(AGG_MODES)}")


def aggregate_parts(
    per_token: Array,
    mask: Array,
    mode: str = "token_mean",
    *,
    loss_scale_factor: float | None = None,
    global_batch_size: int | None = None,
) -> WeightedMean:
  """Numerator and denominator of the aggregated loss for one (micro-)batch.

  Summing the parts of several micro-batches and dividing once gives the full-batch value exactly:
  token_mean counts the global number of valid tokens, the sequence means count the global number
  of non-empty rows.

  For `seq_mean_token_sum_norm` the denominator is the constant C = `loss_scale_factor` (default:
  the padded length T, as verl; configs should pass a constant). A micro-batch of b rows out of a
  step of `global_batch_size` rows reports C * b / global_batch_size, so the parts' denominators
  add up to C. TRL's `dr_grpo` normaliser is `loss_scale_factor = B * L_max`.

  Args:
    per_token: `[B, T]` unreduced loss.
    mask: `[B, T]` valid-token mask.
    mode: one of AGG_MODES.
    loss_scale_factor: the constant C of `seq_mean_token_sum_norm`.
    global_batch_size: rows in the whole step, for `seq_mean_token_sum_norm` micro-batches.

  Returns:
    WeightedMean(total, denom).
  """
  _check_mode(mode)
  if per_token.ndim != 2 or per_token.shape != mask.shape:
    raise ValueError(
        f"per_token and mask must both be [B, T]; got per_token {per_token.shape}, mask {mask.shape}")
  m = mask.astype(bool)
  lt = jnp.where(m, per_token.astype(jnp.float32), 0.0)
  n_i = jnp.sum(m.astype(jnp.float32), axis=-1)
  row_ok = n_i > 0
  if mode == "token_mean":
    return WeightedMean(jnp.sum(lt), jnp.sum(n_i))
  if mode == "seq_mean_token_sum":
    return WeightedMean(jnp.sum(lt), jnp.sum(row_ok.astype(jnp.float32)))
  if mode == "seq_mean_token_mean":
    seq = safe_divide(jnp.sum(lt, axis=-1), n_i)
    return WeightedMean(jnp.sum(seq), jnp.sum(row_ok.astype(jnp.float32)))
  # seq_mean_token_sum_norm
  c = float(per_token.shape[-1]) if loss_scale_factor is None else loss_scale_factor
  if isinstance(c, (int, float)) and c <= 0:
    raise ValueError(f"loss_scale_factor must be > 0, got {c}")
  rows = per_token.shape[0]
  share = 1.0 if global_batch_size is None else rows / float(global_batch_size)
  return WeightedMean(jnp.sum(lt), jnp.asarray(c * share, jnp.float32))


def aggregate_loss(
    per_token: Array,
    mask: Array,
    mode: str = "token_mean",
    *,
    loss_scale_factor: float | None = None,
) -> Array:
  """Reduces a `[B, T]` per-token loss to a scalar under `mode` (see module docstring)."""
  return aggregate_parts(per_token, mask, mode, loss_scale_factor=loss_scale_factor).value
