"""Tests for rlpost.core.kl and rlpost.core.selection."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlpost import core

ESTIMATORS = core.KL_ESTIMATORS


@pytest.mark.parametrize("est", ESTIMATORS)
def test_zero_when_equal_and_finite_for_extremes(est):
  x = jnp.array([-3.0, -1.0, 0.0])
  assert np.all(np.asarray(core.kl_penalty(x, x, estimator=est)) == 0)
  big = jnp.array([1e4, -1e4, 0.0])
  val, grad = jax.value_and_grad(lambda a: core.kl_penalty(a, jnp.zeros(3), estimator=est).sum())(
      big)
  assert np.isfinite(val)
  assert np.all(np.isfinite(grad))


@pytest.mark.parametrize("est", ["abs", "k2", "k3"])
def test_nonnegative(est):
  d = jnp.linspace(-5, 5, 41)
  assert np.all(np.asarray(core.kl_penalty(d, jnp.zeros_like(d), estimator=est)) >= 0)


def test_k3_close_to_k2_for_small_d():
  d = jnp.array([1e-3, -2e-3])
  np.testing.assert_allclose(core.kl_penalty(d, 0 * d, estimator="k3"),
                             core.kl_penalty(d, 0 * d, estimator="k2"), rtol=1e-2)


def _cat():
  logits = jnp.array([0.3, -1.0, 2.0, 0.5])
  ref_logits = jnp.array([1.0, 0.0, 0.5, -0.5])
  return jax.nn.log_softmax(logits), jax.nn.log_softmax(ref_logits)


def test_k1_k3_unbiased_and_k2_biased_by_enumeration():
  logp, ref = _cat()
  p = jnp.exp(logp)
  kl = jnp.sum(p * (logp - ref))
  for est in ("k1", "k3"):
    np.testing.assert_allclose(jnp.sum(p * core.kl_penalty(logp, ref, estimator=est)), kl,
                               rtol=1e-5)
  assert abs(float(jnp.sum(p * core.kl_penalty(logp, ref, estimator="k2")) - kl)) > 1e-3


def test_expected_gradients_by_enumeration():
  logits = jnp.array([0.3, -1.0, 2.0, 0.5])
  ref = jax.nn.log_softmax(jnp.array([1.0, 0.0, 0.5, -0.5]))
  p_fixed = jax.nn.softmax(logits)  # samples from the (fixed) behaviour policy

  def expected(est):
    return lambda z: jnp.sum(p_fixed * core.kl_penalty(jax.nn.log_softmax(z), ref, estimator=est))

  reverse = lambda z: jnp.sum(jax.nn.softmax(z) * (jax.nn.log_softmax(z) - ref))
  forward = lambda z: jnp.sum(jnp.exp(ref) * (ref - jax.nn.log_softmax(z)))
  np.testing.assert_allclose(jax.grad(expected("k1"))(logits), 0.0, atol=1e-6)
  np.testing.assert_allclose(jax.grad(expected("k2"))(logits), jax.grad(reverse)(logits),
                             rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(jax.grad(expected("k3"))(logits), jax.grad(forward)(logits),
                             rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("plus,fwd", [("k3+", "k3"), ("k1+", "k1")])
def test_straight_through_value_and_gradient(plus, fwd):
  d = jnp.array([0.3, -0.7, 1.2])
  np.testing.assert_allclose(core.kl_penalty(d, 0 * d, estimator=plus),
                             core.kl_penalty(d, 0 * d, estimator=fwd), rtol=1e-6)
  g_plus = jax.grad(lambda x: core.kl_penalty(x, 0 * x, estimator=plus).sum())(d)
  g_k2 = jax.grad(lambda x: core.kl_penalty(x, 0 * x, estimator="k2").sum())(d)
  np.testing.assert_allclose(g_plus, g_k2, rtol=1e-6)


def test_unknown_estimator_lists_valid():
  with pytest.raises(ValueError, match="k3"):
    core.kl_penalty(jnp.zeros(2), jnp.zeros(2), estimator="low_var_kl")


@pytest.mark.parametrize("jit", [False, True])
def test_entropy_from_logits(jit):
  logits = jnp.array([[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, -100.0, 0.0]], jnp.bfloat16)
  fn = jax.jit(core.entropy_from_logits) if jit else core.entropy_from_logits
  h = fn(logits)
  assert h.dtype == jnp.float32
  np.testing.assert_allclose(h[0], np.log(4.0), rtol=1e-5)
  assert 0 <= float(h[1]) < 1e-6
  big = fn(jnp.array([[1e30, -1e30, 0.0]]))
  assert np.all(np.isfinite(big))


def test_adaptive_kl_fixed_point_and_bounds():
  assert float(core.adaptive_kl_coef(0.1, 0.5, target=0.5, horizon=100, n_steps=10)) == pytest.approx(
      0.1)
  up = float(core.adaptive_kl_coef(0.1, 100.0, target=0.5, horizon=100, n_steps=10))
  np.testing.assert_allclose(up, 0.1 * (1 + 0.2 * 10 / 100))


def test_dynamic_sampling_mask():
  r = jnp.array([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
  np.testing.assert_array_equal(core.dynamic_sampling_mask(r), [False, True, False])
  np.testing.assert_array_equal(core.dynamic_sampling_mask(jnp.ones((2, 1))), [True, True])
  np.testing.assert_allclose(core.zero_spread_fraction(r), 2 / 3)
  np.testing.assert_array_equal(jax.jit(core.dynamic_sampling_mask)(r), [False, True, False])
