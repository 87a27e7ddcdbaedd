"""EMPG (arXiv 2509.09265): step-level entropy modulation with a future-clarity bonus."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlpost import core

# Two traces of 6 tokens; trace 0 has steps [0,0,1,1,2,2], trace 1 has [0,0,0,1,1,-1] (last token
# belongs to no step, e.g. a tool observation).
SEG = jnp.array([[0, 0, 1, 1, 2, 2], [0, 0, 0, 1, 1, -1]])
MASK = jnp.ones((2, 6))
empg = jax.jit(core.empg_advantages, static_argnames=("max_steps",))
ENT = jnp.array([[0.1, 0.3, 1.0, 1.2, 0.5, 0.5], [2.0, 2.0, 2.0, 0.0, 0.4, 9.0]])


def _steps(adv_tok):
  """Per-step values read back from the token advantages (tokens of one step share a value)."""
  a = np.asarray(adv_tok)
  return [a[0, 0], a[0, 2], a[0, 4], a[1, 0], a[1, 3]]


def test_g_has_batch_mean_one_and_decreases_with_entropy():
  adv = empg(jnp.ones(2), ENT, SEG, MASK, max_steps=4, k=1.0, zeta=0.0)
  g = np.array(_steps(adv)) + 1.0  # A = 1 everywhere, so A_final = g - mean(g) = g - 1
  np.testing.assert_allclose(g.mean(), 1.0, rtol=1e-6)
  step_h = np.array([0.2, 1.1, 0.5, 2.0, 0.2])
  order = np.argsort(step_h)
  assert np.all(np.diff(g[order]) <= 1e-6)
  # Tokens of one step share the value; tokens outside any step get 0.
  a = np.asarray(adv)
  assert a[0, 0] == a[0, 1] and a[1, 3] == a[1, 4] and a[1, 5] == 0.0


@pytest.mark.parametrize("jit", [False, True])
def test_k_zero_zeta_zero_is_recentred_advantage(jit):
  fn = empg if jit else core.empg_advantages
  a = jnp.array([0.7, -0.3])
  adv = fn(a, ENT, SEG, MASK, max_steps=4, k=0.0, zeta=0.0)
  per_step = np.array([0.7, 0.7, 0.7, -0.3, -0.3])
  np.testing.assert_allclose(_steps(adv), per_step - per_step.mean(), rtol=1e-5, atol=1e-6)


def test_affine_entropy_invariance_and_future_bonus():
  a = jnp.array([1.0, -1.0])
  base = empg(a, ENT, SEG, MASK, max_steps=4, zeta=0.1, eps=0.0)
  moved = empg(a, 3.0 * ENT + 2.0, SEG, MASK, max_steps=4, zeta=0.1, eps=0.0)
  np.testing.assert_allclose(base, moved, rtol=1e-4, atol=1e-5)
  # With A = 0 only the bonus remains: the last step of each trace gets the smallest value.
  bonus = np.array(_steps(empg(jnp.zeros(2), ENT, SEG, MASK, max_steps=4, zeta=0.1)))
  assert bonus[2] < bonus[0] and bonus[2] < bonus[1] and bonus[4] < bonus[3]


def test_equal_entropy_and_degenerate_masks_no_nan():
  adv = empg(jnp.array([1.0, 0.0]), jnp.ones((2, 6)), SEG, MASK, max_steps=4, zeta=0.0)
  per_step = np.array([1.0, 1.0, 1.0, 0.0, 0.0])
  np.testing.assert_allclose(_steps(adv), per_step - per_step.mean(), atol=1e-6)
  for m in (jnp.zeros((2, 6)), MASK.at[0].set(0.0)):
    out = empg(jnp.array([1.0, 2.0]), ENT, SEG, m, max_steps=4)
    assert bool(jnp.all(jnp.isfinite(out)))
  np.testing.assert_array_equal(empg(jnp.ones(2), ENT, SEG, jnp.zeros((2, 6)), max_steps=4), 0.0)
