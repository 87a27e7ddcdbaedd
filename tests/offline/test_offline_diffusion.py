"""Policy-guided EDM diffusion: schedule, guidance identities and direction, training smoke."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlpost.offline import diffusion


def _windows(obs_size=2, action_size=1, horizon=4):
  c = obs_size + action_size + 1
  return diffusion.Windows(np.zeros((8, horizon, c), np.float32), np.zeros(c), np.ones(c),
                           obs_size, action_size)


def _gaussian_denoiser(y, sigma):
  # Exact denoiser for data ~ N(0, I): E[x | y] = y / (1 + sigma^2).
  return y / (1.0 + jnp.square(sigma).reshape((-1,) + (1,) * (y.ndim - 1)))


def test_guidance_schedule_matches_formula():
  lam = diffusion.guidance_schedule(8, coeff=2.0, cosine_coeff=0.3, delay=2)
  i = np.arange(8)
  expected = 2.0 * ((1 - i / 8) + 0.3 * np.sin(np.pi * (i + 1) / 8))
  expected[:2] = 0.0
  expected[-1] = 0.0
  np.testing.assert_allclose(lam, expected, rtol=1e-6)


def test_zero_coeff_is_bit_identical_and_only_actions_move():
  windows = _windows()
  guidance = diffusion.policy_guidance_fn(windows, lambda obs: jnp.full(obs.shape[:-1] + (1,),
                                                                       0.9))
  kwargs = dict(num_steps=6)
  shape = (16, 4, 4)
  plain = diffusion.edm_sample(_gaussian_denoiser, shape, jax.random.key(0), **kwargs)
  zero = diffusion.edm_sample(_gaussian_denoiser, shape, jax.random.key(0), guidance_fn=guidance,
                              guidance_coeff=0.0, **kwargs)
  np.testing.assert_array_equal(plain, zero)
  g = guidance(plain)
  assert np.all(np.asarray(g[..., [0, 1, 3]]) == 0.0) and np.any(np.asarray(g[..., 2]) != 0.0)
  guided = jax.jit(lambda k: diffusion.edm_sample(_gaussian_denoiser, shape, k,
                                                  guidance_fn=guidance, guidance_coeff=1.0,
                                                  **kwargs))(jax.random.key(0))
  assert np.all(np.isfinite(guided))


@pytest.mark.slow  # four sampler compilations; the coeff=0 identity test stays in the default run
def test_guided_mean_moves_toward_policy_mean_monotonically():
  windows = _windows()
  guidance = diffusion.policy_guidance_fn(windows, lambda obs: jnp.full(obs.shape[:-1] + (1,),
                                                                       2.0))
  means = []
  for coeff in (0.0, 0.5, 1.0, 2.0):
    x = diffusion.edm_sample(_gaussian_denoiser, (512, 4, 4), jax.random.key(1), num_steps=8,
                             guidance_fn=guidance, guidance_coeff=coeff,
                             normalize_guidance=False)
    means.append(float(jnp.mean(x[..., 2])))
  assert means[0] < means[1] < means[2] < means[3], means
  assert abs(means[0]) < 0.15


@pytest.mark.slow  # the same path runs in the default run via the experiments/offline.py smoke
def test_edm_training_and_sampling_smoke():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(64, 4, 4)).astype(np.float32)
  windows = diffusion.Windows(x, np.zeros(4), np.ones(4), 2, 1)
  model = diffusion.train_trajectory_diffusion(windows, jax.random.key(0), num_steps=60,
                                               batch_size=16, hidden_sizes=(32,))
  assert all(np.isfinite(model.losses))
  synth = diffusion.sample_transitions(model, windows, jax.random.key(1), num_trajectories=5,
                                       num_sampling_steps=4, guidance_coeff=0.5,
                                       target_mean_fn=lambda o: jnp.zeros(o.shape[:-1] + (1,)))
  assert synth["observations"].shape == (15, 2) and synth["actions"].shape == (15, 1)
  assert np.all(np.abs(np.asarray(synth["actions"])) <= 1.0)
  assert all(np.all(np.isfinite(np.asarray(v))) for v in synth.values())
