"""AEPO (arXiv 2510.14545): entropy-balanced clipping, entropy-aware advantage, branch budget."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlpost import core

STATIC = ("balanced_clipping", "balanced_advantage")
aepo = jax.jit(core.aepo_loss_per_token, static_argnames=STATIC)
ppo = jax.jit(core.ppo_clip_loss_per_token)


def _grad_of_sum(fn, **kw):
  return jax.jit(jax.grad(lambda lp, *a: jnp.sum(fn(lp, *a, **kw)[0])))


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  old = rng.normal(-1.0, 0.5, (3, 6)).astype(np.float32)
  logp = (old + rng.normal(0, 0.5, old.shape)).astype(np.float32)
  adv = rng.normal(0, 1, old.shape).astype(np.float32)
  ent = rng.uniform(0, 3, old.shape).astype(np.float32)
  mask = np.ones(old.shape, np.float32)
  mask[2, 4:] = 0
  return tuple(jnp.asarray(x) for x in (logp, old, adv, ent, mask))


@pytest.mark.parametrize("jit", [False, True])
def test_forward_equals_ppo_and_gradient_kept_on_clipped_positive(jit):
  logp, old, adv, ent, mask = _batch(0)
  kw = dict(clip_low=0.2, clip_high=0.2, dual_clip=3.0)
  fn = aepo if jit else core.aepo_loss_per_token
  loss, _ = fn(logp, old, adv, mask, entropy=ent, balanced_advantage=False, **kw)
  ref, _ = ppo(logp, old, adv, mask, **kw)
  np.testing.assert_allclose(loss, ref, rtol=1e-6, atol=1e-7)
  g = _grad_of_sum(core.aepo_loss_per_token, balanced_advantage=False, **kw)(
      logp, old, adv, mask)
  g_ppo = _grad_of_sum(core.ppo_clip_loss_per_token, **kw)(logp, old, adv, mask)
  ratio = np.exp(np.asarray(logp - old))
  a = np.asarray(adv)
  clipped_pos = (a > 0) & (ratio > 1.2) & np.asarray(mask, bool)
  assert clipped_pos.any()
  np.testing.assert_allclose(np.asarray(g)[clipped_pos], -a[clipped_pos] * 1.2, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(g)[~clipped_pos], np.asarray(g_ppo)[~clipped_pos],
                             rtol=1e-5, atol=1e-7)


def test_both_flags_off_is_dual_clip_ppo_value_and_gradient():
  logp, old, adv, _, mask = _batch(1)
  kw = dict(clip_low=0.2, clip_high=0.28, dual_clip=3.0)
  f = jax.jit(jax.value_and_grad(lambda lp: jnp.sum(core.aepo_loss_per_token(
      lp, old, adv, mask, balanced_clipping=False, balanced_advantage=False, **kw)[0])))
  f_ppo = jax.jit(jax.value_and_grad(
      lambda lp: jnp.sum(core.ppo_clip_loss_per_token(lp, old, adv, mask, **kw)[0])))
  (v, g), (v_ref, g_ref) = f(logp), f_ppo(logp)
  np.testing.assert_allclose(v, v_ref, rtol=1e-6)
  np.testing.assert_allclose(g, g_ref, rtol=1e-6)


def test_entropy_weight_mean_one_and_constant_entropy_unchanged():
  _, _, _, ent, mask = _batch(2)
  ones = jnp.ones_like(mask)
  ent_adv = jax.jit(core.aepo_entropy_advantages)
  w = ent_adv(ones, ent, mask, entropy_weight=0.2)
  np.testing.assert_allclose(np.mean(np.asarray(w)[np.asarray(mask) > 0]), 1.0, rtol=1e-6)
  adv = jnp.arange(18.0).reshape(3, 6)
  same = ent_adv(adv, jnp.full_like(ent, 0.7), mask)
  np.testing.assert_allclose(same, jnp.where(mask > 0, adv, 0.0))
  with pytest.raises(ValueError, match="entropy"):
    core.aepo_loss_per_token(adv, adv, adv, mask)


def test_extreme_inputs_finite():
  logp = jnp.array([[1e4, -1e4, 0.0]])
  old = jnp.zeros((1, 3))
  adv = jnp.array([[1.0, -1.0, 1.0]])
  mask = jnp.array([[1.0, 1.0, 0.0]])
  ent = jnp.array([[1.0, 1.0, jnp.nan]])
  loss = lambda lp: core.aepo_loss(lp, old, adv, mask, entropy=ent)[0]
  val, grad = jax.jit(jax.value_and_grad(loss))(logp)
  assert bool(jnp.isfinite(val)) and bool(jnp.all(jnp.isfinite(grad)))


def test_branch_budget():
  m, b = core.aepo_branch_budget(16, jnp.array(1.0), jnp.array([1.0, 1.0]))
  assert int(m) == 8 and int(b) == 8
  lo, _ = core.aepo_branch_budget(16, jnp.array(0.0), jnp.array([3.0]), beta=1.0)
  hi, _ = core.aepo_branch_budget(16, jnp.array(3.0), jnp.array([0.0]), beta=1.0)
  assert 0 <= int(lo) < 8 < int(hi) <= 16
