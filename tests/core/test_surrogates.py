"""Tests for rlpost.core.surrogates."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlpost import core


def _inputs(seed=0, b=4, t=6, scale=0.3):
  rng = np.random.default_rng(seed)
  old = rng.normal(size=(b, t)).astype(np.float32) - 2.0
  logp = old + scale * rng.normal(size=(b, t)).astype(np.float32)
  adv = rng.normal(size=(b, t)).astype(np.float32)
  mask = (rng.random((b, t)) < 0.8).astype(np.float32)
  return jnp.asarray(logp), jnp.asarray(old), jnp.asarray(adv), jnp.asarray(mask)


def _np_ppo(logp, old, adv, cl, ch, c=None):
  r = np.exp(np.clip(logp - old, -20, 20))
  l = np.maximum(-adv * r, -adv * np.clip(r, 1 - cl, 1 + ch))
  if c is not None:
    l = np.where(adv < 0, np.minimum(l, -c * adv), l)
  return l


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("dual", [None, 3.0])
def test_ppo_matches_numpy(jit, dual):
  logp, old, adv, mask = _inputs(scale=0.5)
  fn = lambda *a: core.ppo_clip_loss_per_token(*a, clip_low=0.2, clip_high=0.28, dual_clip=dual)
  fn = jax.jit(fn) if jit else fn
  l, aux = fn(logp, old, adv, mask)
  ref = np.where(mask > 0, _np_ppo(*map(np.asarray, (logp, old, adv)), 0.2, 0.28, dual), 0)
  np.testing.assert_allclose(l, ref, rtol=1e-5, atol=1e-6)
  assert 0.0 <= float(aux["clip_frac"]) <= 1.0


def test_ppo_at_ratio_one_gradient_is_minus_advantage_over_n():
  _, old, adv, mask = _inputs()
  g = jax.grad(lambda lp: core.ppo_clip_loss(lp, old, adv, mask)[0])(old)
  np.testing.assert_allclose(g, -adv * mask / mask.sum(), rtol=1e-5, atol=1e-7)
  val, _ = core.ppo_clip_loss(old, old, adv, mask)
  np.testing.assert_allclose(val, -core.masked_mean(adv, mask), rtol=1e-5)


def test_dual_clip_bounds_loss_and_zeroes_gradient():
  adv = jnp.full((1, 3), -2.0)
  old = jnp.zeros((1, 3))
  logp = jnp.log(jnp.array([[5.0, 10.0, 1.0]]))  # ratios 5, 10 > c = 3; and 1
  mask = jnp.ones((1, 3))
  l, aux = core.ppo_clip_loss_per_token(logp, old, adv, mask, dual_clip=3.0)
  np.testing.assert_allclose(l[0, :2], [6.0, 6.0], rtol=1e-6)  # -c * A
  assert np.all(np.asarray(l) <= -3.0 * np.asarray(adv) + 1e-6)
  g = jax.grad(lambda lp: core.ppo_clip_loss_per_token(lp, old, adv, mask, dual_clip=3.0)[0].sum())(
      logp)
  np.testing.assert_allclose(g[0, :2], 0.0)
  assert bool(aux["dual_clipped"][0, 0]) and not bool(aux["dual_clipped"][0, 2])


def test_clip_masks_mark_tokens_without_gradient():
  old = jnp.zeros((1, 4))
  logp = jnp.log(jnp.array([[1.5, 0.5, 1.5, 0.5]]))
  adv = jnp.array([[1.0, -1.0, -1.0, 1.0]])
  mask = jnp.ones((1, 4))
  _, aux = core.ppo_clip_loss_per_token(logp, old, adv, mask, clip_low=0.2, clip_high=0.28)
  np.testing.assert_array_equal(aux["clipped_high"][0], [True, False, False, False])
  np.testing.assert_array_equal(aux["clipped_low"][0], [False, True, False, False])
  g = jax.grad(lambda lp: core.ppo_clip_loss_per_token(lp, old, adv, mask)[0].sum())(logp)
  np.testing.assert_allclose(g[0, :2], 0.0)
  assert np.all(np.asarray(g[0, 2:]) != 0)
  np.testing.assert_allclose(aux["clip_frac"], 0.5)


def test_equal_clip_bounds_are_symmetric_ppo():
  logp, old, adv, mask = _inputs(scale=0.6)
  a = core.ppo_clip_loss(logp, old, adv, mask, clip_low=0.2, clip_high=0.2)[0]
  ref = np.where(mask > 0, _np_ppo(*map(np.asarray, (logp, old, adv)), 0.2, 0.2), 0).sum() / mask.sum()
  np.testing.assert_allclose(a, ref, rtol=1e-5)


@pytest.mark.parametrize("bad", [dict(clip_low=-0.1), dict(clip_low=1.0), dict(clip_high=-0.2),
                                 dict(dual_clip=0.5)])
def test_bad_clip_bounds_raise_with_field_name(bad):
  logp, old, adv, mask = _inputs()
  key = next(iter(bad))
  with pytest.raises(ValueError, match=key):
    core.ppo_clip_loss(logp, old, adv, mask, **bad)


def test_ppo_gradient_matches_finite_differences():
  logp, old, adv, mask = _inputs(seed=2, b=2, t=3, scale=0.1)
  logp64 = np.asarray(logp, np.float64)
  f = lambda lp: core.ppo_clip_loss(lp, old, adv, mask, clip_low=0.2, clip_high=0.28)[0]
  g = np.asarray(jax.grad(f)(logp))
  eps = 1e-3
  fd = np.zeros_like(logp64)
  for idx in np.ndindex(logp64.shape):
    e = np.zeros_like(logp64)
    e[idx] = eps
    fd[idx] = (float(f(jnp.asarray(logp64 + e, jnp.float32))) -
               float(f(jnp.asarray(logp64 - e, jnp.float32)))) / (2 * eps)
  np.testing.assert_allclose(g, fd, rtol=2e-2, atol=2e-3)


# ------------------------------------------------------------------------------------------- GSPO


def test_gspo_sequence_ratio_is_geometric_mean_and_shared_decision():
  logp, old, adv, mask = _inputs(scale=0.01)
  _, aux = core.gspo_loss_per_token(logp, old, adv, mask)
  m = np.asarray(mask)
  d = np.asarray(logp - old)
  geo = np.exp((d * m).sum(1) / np.maximum(m.sum(1), 1))
  np.testing.assert_allclose(aux["seq_ratio"], geo, rtol=1e-5)
  r = np.asarray(aux["ratio"])
  for i in range(r.shape[0]):
    vals = r[i][m[i] > 0]
    if len(vals):
      np.testing.assert_allclose(vals, vals[0], rtol=1e-6)


def test_gspo_with_identical_token_log_ratios_equals_ppo_on_those_tokens():
  rng = np.random.default_rng(7)
  old = jnp.asarray(rng.normal(size=(3, 5)), jnp.float32)
  delta = jnp.asarray(rng.normal(size=(3, 1)) * 0.3, jnp.float32)  # same log-ratio per row
  logp = old + delta
  adv = jnp.broadcast_to(jnp.asarray(rng.normal(size=(3, 1)), jnp.float32), (3, 5))
  mask = jnp.ones((3, 5))
  kw = dict(clip_low=0.2, clip_high=0.2)
  f_g = lambda lp: core.gspo_loss(lp, old, adv, mask, agg_mode="token_mean", **kw)[0]
  f_p = lambda lp: core.ppo_clip_loss(lp, old, adv, mask, agg_mode="token_mean", **kw)[0]
  np.testing.assert_allclose(f_g(logp), f_p(logp), rtol=1e-5)
  np.testing.assert_allclose(jax.grad(f_g)(logp), jax.grad(f_p)(logp), rtol=1e-4, atol=1e-6)


def test_gspo_on_policy_gradient_equals_grpo_seq_mean_token_mean():
  logp, _, adv, mask = _inputs()
  adv = jnp.broadcast_to(adv[:, :1], adv.shape)
  f_g = lambda lp: core.gspo_loss(lp, jax.lax.stop_gradient(lp), adv, mask)[0]
  f_p = lambda lp: core.ppo_clip_loss(lp, jax.lax.stop_gradient(lp), adv, mask,
                                      agg_mode="seq_mean_token_mean")[0]
  np.testing.assert_allclose(jax.grad(f_g)(logp), jax.grad(f_p)(logp), rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------------------------ CISPO


@pytest.mark.parametrize("jit", [False, True])
def test_cispo_gradient_is_clipped_weight_times_pg(jit):
  logp, old, adv, mask = _inputs(scale=1.0)
  f = lambda lp: core.cispo_loss_per_token(lp, old, adv, mask, is_clip_low=0.2,
                                           is_clip_high=0.28)[0].sum()
  g = (jax.jit(jax.grad(f)) if jit else jax.grad(f))(logp)
  r = np.exp(np.asarray(logp - old))
  w = np.clip(r, 0.8, 1.28)
  np.testing.assert_allclose(g, -w * np.asarray(adv) * np.asarray(mask), rtol=1e-5, atol=1e-6)


def test_cispo_keeps_gradient_of_clipped_positive_tokens():
  old = jnp.zeros((1, 1))
  logp = jnp.log(jnp.array([[3.0]]))
  adv = jnp.ones((1, 1))
  g = jax.grad(lambda lp: core.cispo_loss_per_token(lp, old, adv, jnp.ones((1, 1)),
                                                    is_clip_high=0.28)[0].sum())(logp)
  np.testing.assert_allclose(g, [[-1.28]], rtol=1e-6)


def test_cispo_on_policy_gradient_equals_reinforce():
  logp, _, adv, mask = _inputs()
  f_c = lambda lp: core.cispo_loss(lp, jax.lax.stop_gradient(lp), adv, mask)[0]
  f_r = lambda lp: core.pg_loss(lp, adv, mask)[0]
  np.testing.assert_allclose(jax.grad(f_c)(logp), jax.grad(f_r)(logp), rtol=1e-6)


# -------------------------------------------------------------------------------------------- TIS


def test_truncated_is_weights_cap_and_stop_gradient():
  s = jnp.zeros((1, 3))
  t = jnp.log(jnp.array([[0.5, 1.5, 10.0]]))
  w = core.truncated_is_weights(s, t, cap=2.0)
  np.testing.assert_allclose(w, [[0.5, 1.5, 2.0]], rtol=1e-6)
  g = jax.grad(lambda x: core.truncated_is_weights(s, x, cap=2.0).sum())(t)
  assert np.all(np.asarray(g) == 0)


def test_value_loss_is_half_mse_inside_clip():
  v = jnp.array([[1.0, 2.0]])
  old = jnp.array([[1.1, 1.8]])
  ret = jnp.array([[0.0, 3.0]])
  l, _ = core.clipped_value_loss_per_token(v, old, ret, jnp.ones((1, 2)), clip=0.5)
  np.testing.assert_allclose(l, 0.5 * (v - ret) ** 2)
