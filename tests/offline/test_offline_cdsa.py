"""CDSA-style score correction: DSM on a Gaussian recovers its score; eta=0 is the identity."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlpost.offline import cdsa


def _gaussian_score_fn(mu, var):
  # Exact score of N(mu, var) smoothed by N(0, sigma^2): -(a - mu) / (var + sigma^2).
  return lambda obs, a, sigma: -(a - mu) / (var + jnp.square(sigma))


def test_dsm_loss_is_minimised_by_the_true_smoothed_score():
  key = jax.random.key(0)
  obs = jnp.zeros((4096, 1))
  action = 0.3 + 0.2 * jax.random.normal(key, (4096, 1))
  true = jnp.mean(cdsa.dsm_loss_per_sample(_gaussian_score_fn(0.3, 0.04), obs, action,
                                           jax.random.key(1)))
  wrong = jnp.mean(cdsa.dsm_loss_per_sample(_gaussian_score_fn(0.0, 0.04), obs, action,
                                            jax.random.key(1)))
  zero = jnp.mean(cdsa.dsm_loss_per_sample(lambda o, a, s: jnp.zeros_like(a), obs, action,
                                           jax.random.key(1)))
  assert float(true) < float(wrong) and float(true) < float(zero)


def test_learned_score_on_gaussian_actions_and_correction_increases_density():
  key = jax.random.key(0)
  n = 2048
  obs = jax.random.normal(key, (n, 2))
  actions = 0.5 + 0.1 * jax.random.normal(jax.random.key(1), (n, 1))
  config = cdsa.CDSAConfig(hidden_sizes=(32, 32), batch_size=128, learning_rate=3e-3)
  model, params, losses = cdsa.train_score_model({"observations": obs, "actions": actions},
                                                 jax.random.key(2), action_size=1,
                                                 max_action=1.0, num_steps=400, config=config)
  assert float(losses[-50:].mean()) < float(losses[:50].mean())
  score_fn = lambda o, a, s: model.apply(params, o, a, s)
  grid = jnp.array([[0.2], [0.4], [0.6], [0.8]])
  learned = score_fn(jnp.zeros((4, 2)), grid, jnp.full((4, 1), 0.1))
  expected = -(grid - 0.5) / (0.01 + 0.01)
  assert np.all(np.sign(learned) == np.sign(expected))
  np.testing.assert_allclose(learned, expected, rtol=0.5)
  # Correction moves out-of-distribution actions toward the data (higher density).
  start = jnp.full((4, 1), -0.2)
  corrected = cdsa.correct_action(score_fn, jnp.zeros((4, 2)), start, sigma=0.1, num_steps=3)
  assert np.all(np.abs(corrected - 0.5) < np.abs(start - 0.5))


@pytest.mark.parametrize("use_jit", [False, True])
def test_zero_step_size_is_identity_and_no_nan(use_jit):
  score_fn = lambda o, a, s: jnp.full_like(a, 1e6)  # huge score: clipped to the bounds
  fn = lambda a, eta: cdsa.correct_action(score_fn, jnp.zeros((3, 1)), a, sigma=0.1,
                                          step_size=eta, num_steps=2)
  fn = jax.jit(fn, static_argnums=1) if use_jit else fn
  a = jnp.array([[0.1], [-0.7], [1.0]])
  np.testing.assert_array_equal(fn(a, 0.0), a)
  moved = fn(a, 1.0)
  assert np.all(np.isfinite(moved)) and np.all(np.abs(moved) <= 1.0)
  np.testing.assert_array_equal(cdsa.correct_action(score_fn, None, a, num_steps=0), a)


def test_config_validation_names_field():
  with pytest.raises(ValueError, match="correction_sigma"):
    cdsa.CDSAConfig(correction_sigma=0.0)
