"""BNPO (arXiv 2506.02864): Beta-normalised advantages."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlpost import core

bnpo = jax.jit(core.bnpo_advantages, static_argnames=("min_value", "max_value"))
beta_params = jax.jit(core.bnpo_beta_params)


def test_alpha_beta_one_gives_r_minus_p():
  r = jnp.array([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 0.0, 1.0]])
  adv = bnpo(r, alpha=1.0, beta=1.0)
  np.testing.assert_allclose(adv, r - r.mean(axis=1, keepdims=True), atol=1e-6)


def test_single_group_fits_uniform_beta():
  a, b = beta_params(jnp.array([0.3]))
  assert float(a) == 1.0 and float(b) == 1.0
  r = jnp.array([[1.0, 0.0, 1.0, 1.0]])
  np.testing.assert_allclose(bnpo(r), r - 0.75, atol=1e-6)


def test_fit_gives_three_halves_and_known_closed_form():
  d = np.sqrt(1 / 32)  # two group means 0.5 +- d: m = 0.5, v_unbiased = 2 d^2 = 1/16
  a, b = beta_params(jnp.array([0.5 - d, 0.5 + d]))
  np.testing.assert_allclose([a, b], [1.5, 1.5], rtol=1e-5)
  r = jnp.array([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 1.0]])
  p = np.array([0.25, 0.75])[:, None]
  expected = (np.pi / 8) * (np.asarray(r) - p) / np.sqrt(p * (1 - p))
  np.testing.assert_allclose(bnpo(r, alpha=1.5, beta=1.5), expected, rtol=1e-5)
  grpo = jax.jit(core.grpo_advantages)(r, eps=0.0)
  np.testing.assert_allclose(expected, (np.pi / 8) * np.sqrt(4 / 3) * grpo, rtol=1e-5)


@pytest.mark.parametrize("jit", [False, True])
def test_jit_agreement_and_zero_for_constant_groups(jit):
  fn = bnpo if jit else core.bnpo_advantages
  r = jnp.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 1.0], [0.7, 0.7, 0.7]])
  adv = fn(r)
  assert bool(jnp.all(jnp.isfinite(adv)))
  np.testing.assert_array_equal(np.asarray(adv)[[0, 1, 3]], 0.0)
  np.testing.assert_allclose(adv, bnpo(r), rtol=1e-6)


def test_equal_group_means_fall_back_to_uniform():
  a, b = beta_params(jnp.array([0.5, 0.5, 0.5]))
  assert float(a) == 1.0 and float(b) == 1.0


def test_decomposition_is_mean_of_components():
  acc = jnp.array([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
  fmt = jnp.array([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
  out = jax.jit(core.bnpo_decomposed_advantages)(jnp.stack([acc, fmt]))
  np.testing.assert_allclose(out, 0.5 * (bnpo(acc) + bnpo(fmt)),
                             rtol=1e-6)
