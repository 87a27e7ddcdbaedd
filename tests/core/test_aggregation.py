"""Tests for rlpost.core.aggregation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlpost import core

MODES = core.AGG_MODES


def _np_aggregate(l, m, mode, c=None):
  """Independent NumPy reference of the four modes (HEAD semantics)."""
  l = np.where(m > 0, l, 0.0)
  n = m.sum(-1)
  ok = n > 0
  if mode == "token_mean":
    return l.sum() / max(m.sum(), 1) if m.sum() else 0.0
  if mode == "seq_mean_token_sum":
    return l.sum(-1)[ok].mean() if ok.any() else 0.0
  if mode == "seq_mean_token_mean":
    return (l.sum(-1)[ok] / n[ok]).mean() if ok.any() else 0.0
  return l.sum() / (l.shape[-1] if c is None else c)


@pytest.fixture
def batch():
  rng = np.random.default_rng(0)
  l = rng.normal(size=(6, 7)).astype(np.float32)
  m = (rng.random((6, 7)) < 0.7).astype(np.float32)
  m[2] = 0  # one fully masked row
  return l, m


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_matches_numpy_reference(batch, mode, jit):
  l, m = batch
  fn = lambda a, b: core.aggregate_loss(a, b, mode)
  fn = jax.jit(fn) if jit else fn
  np.testing.assert_allclose(fn(l, m), _np_aggregate(l, m, mode), rtol=1e-5, atol=1e-6)


def test_token_mean_equals_seq_mean_token_mean_for_equal_lengths():
  l = jnp.arange(12.0).reshape(3, 4)
  m = jnp.ones((3, 4)).at[:, 3].set(0)
  assert np.isclose(core.aggregate_loss(l, m, "token_mean"),
                    core.aggregate_loss(l, m, "seq_mean_token_mean"))


def test_sum_norm_equals_seq_sum_times_b_over_l(batch):
  l, m = batch
  m[2, 0] = 1  # no empty rows
  b, t = l.shape
  a = core.aggregate_loss(l, m, "seq_mean_token_sum_norm")
  s = core.aggregate_loss(l, m, "seq_mean_token_sum")
  np.testing.assert_allclose(a, s * b / t, rtol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_fully_masked_rows_change_nothing(batch, mode):
  l, m = batch
  extra_l = np.concatenate([l, 100 * np.ones((3, 7), np.float32)])
  extra_m = np.concatenate([m, np.zeros((3, 7), np.float32)])
  if mode == "seq_mean_token_sum_norm":  # C is a constant, independent of B
    assert np.isclose(core.aggregate_loss(l, m, mode, loss_scale_factor=7.0),
                      core.aggregate_loss(extra_l, extra_m, mode, loss_scale_factor=7.0))
  else:
    assert np.isclose(core.aggregate_loss(l, m, mode), core.aggregate_loss(extra_l, extra_m, mode))


@pytest.mark.parametrize("mode", MODES)
def test_nan_in_masked_positions_does_not_propagate(batch, mode):
  l, m = batch
  l = np.where(m > 0, l, np.nan).astype(np.float32)
  val, grad = jax.value_and_grad(lambda x: core.aggregate_loss(x, m, mode))(jnp.asarray(l))
  assert np.isfinite(val)
  assert np.all(np.isfinite(grad))
  assert np.all(np.asarray(grad)[m == 0] == 0)


@pytest.mark.parametrize("mode", MODES)
def test_all_masked_batch_is_zero_with_finite_grad(mode):
  l = jnp.ones((3, 4))
  m = jnp.zeros((3, 4))
  val, grad = jax.value_and_grad(lambda x: core.aggregate_loss(x, m, mode))(l)
  assert val == 0.0
  assert np.all(np.asarray(grad) == 0)


@pytest.mark.parametrize("mode", MODES)
def test_micro_batches_with_global_denominator_match_full_batch(batch, mode):
  l, m = batch
  l, m = jnp.asarray(l), jnp.asarray(m)

  def full(x):
    return core.aggregate_loss(x, m, mode, loss_scale_factor=7.0)

  def split(x):
    parts = [core.aggregate_parts(x[i:i + 2], m[i:i + 2], mode, loss_scale_factor=7.0,
                                  global_batch_size=6) for i in range(0, 6, 2)]
    total = parts[0] + parts[1] + parts[2]
    return total.value

  np.testing.assert_allclose(full(l), split(l), rtol=1e-6)
  np.testing.assert_allclose(jax.grad(full)(l), jax.grad(split)(l), rtol=1e-6, atol=1e-7)


def test_unknown_mode_lists_valid_modes():
  with pytest.raises(ValueError, match="token_mean"):
    core.aggregate_loss(jnp.ones((2, 2)), jnp.ones((2, 2)), "mean")


def test_shape_mismatch_is_named():
  with pytest.raises(ValueError, match=r"\[B, T\]"):
    core.aggregate_loss(jnp.ones((2, 3)), jnp.ones((2, 2)), "token_mean")


def test_masked_whiten_moments_and_degenerate():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(4, 5)).astype(np.float32) * 3 + 2
  m = (rng.random((4, 5)) < 0.8).astype(np.float32)
  w = np.asarray(core.masked_whiten(x, m))
  vals = w[m > 0]
  np.testing.assert_allclose(vals.mean(), 0.0, atol=1e-5)
  np.testing.assert_allclose(vals.std(ddof=1), 1.0, atol=1e-3)
  assert np.all(w[m == 0] == 0)
  one = core.masked_whiten(jnp.ones((2, 2)) * 5, jnp.zeros((2, 2)).at[0, 0].set(1))
  assert np.all(np.isfinite(one)) and float(one[0, 0]) == 0.0
