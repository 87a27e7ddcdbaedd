"""Clip-Cov and KL-Cov (The Entropy Mechanism of RL for Reasoning LMs, arXiv 2505.22617)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlpost import core

scores = jax.jit(core.clip_cov_scores)
kl_cov = jax.jit(core.kl_cov_loss_per_token)
clip_cov = jax.jit(core.clip_cov_loss_per_token)


def _batch(seed=0, shape=(3, 8)):
  rng = np.random.default_rng(seed)
  old = rng.normal(-1.5, 1.0, shape).astype(np.float32)
  logp = (old + rng.normal(0, 0.3, shape)).astype(np.float32)
  adv = np.repeat(rng.normal(0, 2, (shape[0], 1)), shape[1], axis=1).astype(np.float32)
  mask = np.ones(shape, np.float32)
  mask[-1, -3:] = 0
  return jnp.asarray(logp), jnp.asarray(old), jnp.asarray(adv), jnp.asarray(mask)


def test_scores_are_centred_products():
  logp, _, adv, mask = _batch()
  m = np.asarray(mask, bool)
  lp, a = np.asarray(logp), np.asarray(adv)
  expected = (a - a[m].mean()) * (lp - lp[m].mean())
  np.testing.assert_allclose(np.asarray(scores(logp, adv, mask))[m], expected[m],
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("k_ratio", [0.01, 0.25, 0.5])
def test_kl_cov_selects_exactly_top_k_by_covariance(k_ratio):
  logp, old, adv, mask = _batch(1)
  _, aux = kl_cov(logp, old, adv, mask, k_ratio=k_ratio)
  m = np.asarray(mask, bool)
  cov = np.asarray(scores(logp, adv, mask))[m]
  k = max(1, int(k_ratio * m.sum()))
  top = np.zeros_like(cov, bool)
  top[np.argsort(-cov, kind="stable")[:k]] = True
  np.testing.assert_array_equal(np.asarray(aux["kl_cov_selected"])[m], top)
  assert not np.asarray(aux["kl_cov_selected"])[~m].any()


def test_kl_cov_zero_coef_is_unclipped_pg_and_small_ratio_penalises_argmax():
  logp, old, adv, mask = _batch(2)
  loss, _ = kl_cov(logp, old, adv, mask, k_ratio=0.05, kl_coef=0.0)
  expected = np.where(np.asarray(mask, bool), -np.asarray(adv) * np.exp(logp - old), 0.0)
  np.testing.assert_allclose(loss, expected, rtol=1e-5, atol=1e-6)
  loss1, aux = kl_cov(logp, old, adv, mask, k_ratio=1e-6, kl_coef=1.0)
  sel = np.asarray(aux["kl_cov_selected"])
  assert sel.sum() == 1
  cov = np.where(np.asarray(mask, bool), np.asarray(scores(logp, adv, mask)), -np.inf)
  assert sel.reshape(-1)[np.argmax(cov)]
  diff = np.asarray(loss1) - expected
  np.testing.assert_allclose(diff[sel], np.abs(np.asarray(logp - old))[sel], rtol=1e-5)
  np.testing.assert_allclose(diff[~sel], 0.0, atol=1e-6)
  _, aux0 = kl_cov(logp, old, adv, mask, k_ratio=0.0)
  assert not np.asarray(aux0["kl_cov_selected"]).any()


def test_clip_cov_with_lb_above_all_cov_equals_ppo():
  logp, old, adv, mask = _batch(3)
  key = jax.random.PRNGKey(0)
  loss, aux = clip_cov(logp, old, adv, mask, key=key, cov_lb=1e9, cov_ub=2e9, ppo_clip_low=0.2,
                       ppo_clip_high=0.2)
  ref, _ = jax.jit(core.ppo_clip_loss_per_token)(logp, old, adv, mask)
  np.testing.assert_allclose(loss, ref, rtol=1e-6)
  assert float(aux["clip_frac"]) == 0.0


@pytest.mark.parametrize("jit", [False, True])
def test_clip_cov_zeroes_gradient_of_exactly_n_random_candidates(jit):
  logp, old, adv, mask = _batch(4, (4, 16))
  kw = dict(clip_ratio=0.05, cov_lb=-1e9, cov_ub=1e9)
  fn = clip_cov if jit else core.clip_cov_loss_per_token
  key = jax.random.PRNGKey(3)
  _, aux = fn(logp, old, adv, mask, key=key, **kw)
  chosen = np.asarray(aux["cov_clipped"])
  n_valid = int(np.asarray(mask).sum())
  assert chosen.sum() == max(int(0.05 * n_valid), 1)
  grad = jax.jit(jax.grad(lambda lp: jnp.sum(core.clip_cov_loss_per_token(
      lp, old, adv, mask, key=key, **kw)[0])))(logp)
  np.testing.assert_array_equal(np.asarray(grad)[chosen], 0.0)
  # Tokens that are neither chosen nor PPO-clipped keep their gradient.
  assert np.all(np.asarray(grad)[~chosen & np.asarray(mask, bool)] != 0.0)
  _, aux2 = clip_cov(logp, old, adv, mask, key=jax.random.PRNGKey(4), **kw)
  _, aux3 = clip_cov(logp, old, adv, mask, key=key, **kw)
  np.testing.assert_array_equal(aux3["cov_clipped"], chosen)  # jit == no-jit for a fixed key
  assert (np.asarray(aux2["cov_clipped"]) != chosen).any()


def test_clip_cov_zeroed_tokens_count_in_denominator():
  logp, old, adv, mask = _batch(5)
  kw = dict(key=jax.random.PRNGKey(0), clip_ratio=0.3, cov_lb=-1e9, cov_ub=1e9)
  per_token, _ = clip_cov(logp, old, adv, mask, **kw)
  scalar, _ = jax.jit(core.clip_cov_loss)(logp, old, adv, mask, **kw)
  np.testing.assert_allclose(scalar, jnp.sum(per_token) / jnp.sum(mask), rtol=1e-6)
