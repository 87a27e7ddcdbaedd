"""TA-LPG network and agent loss (arXiv 2402.05828; LPG arXiv 2007.08794)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlpost.meta import lpg

T, K = 6, 4


def _inputs(key, done=None):
  k = jax.random.split(key, 4)
  r = jax.random.normal(k[0], (T,))
  d = jnp.zeros((T,)) if done is None else done
  pi = jax.random.uniform(k[1], (T,), minval=0.1, maxval=0.9)
  y = jax.nn.softmax(jax.random.normal(k[2], (T, K)))
  y1 = jax.nn.softmax(jax.random.normal(k[3], (T, K)))
  return r, d, pi, y, y1


@functools.lru_cache(maxsize=None)
def _targets_fn(progress_mode):
  params = lpg.init_lpg_params(jax.random.key(0), target_width=K, gru_width=8,
                               progress_mode=progress_mode)
  fn = jax.jit(functools.partial(lpg.lpg_targets, params, progress_mode=progress_mode))
  return params, fn


def test_outputs_shapes_and_simplex():
  _, fn = _targets_fn("paper")
  pi_hat, y_hat = fn(*_inputs(jax.random.key(1)), 3, 10)
  assert pi_hat.shape == (T,) and y_hat.shape == (T, K)
  np.testing.assert_allclose(jnp.sum(y_hat, -1), 1.0, rtol=1e-5)


def test_reverse_time_causality_and_reset_at_done():
  """Output at t reads steps t..T-1 only, and never across an episode end."""
  _, fn = _targets_fn("paper")
  r, d, pi, y, y1 = _inputs(jax.random.key(2))
  base, _ = fn(r, d, pi, y, y1, 3, 10)
  early, _ = fn(r.at[0].add(5.0), d, pi, y, y1, 3, 10)  # change the first step
  np.testing.assert_allclose(early[1:], base[1:], rtol=1e-6)
  assert abs(float(early[0] - base[0])) > 1e-6
  late, _ = fn(r.at[T - 1].add(5.0), d, pi, y, y1, 3, 10)  # change the last step
  assert abs(float(late[0] - base[0])) > 1e-7  # information flows backwards in time
  done = jnp.zeros((T,)).at[2].set(1.0)  # episode ends after step 2
  cut, _ = fn(r, done, pi, y, y1, 3, 10)
  cut_late, _ = fn(r.at[4].add(5.0), done, pi, y, y1, 3, 10)
  np.testing.assert_allclose(cut_late[:3], cut[:3], rtol=1e-6)


def test_progress_inputs_paper_vs_raw_parity_flag():
  np.testing.assert_allclose(lpg.progress_features(5, 20), [0.25, np.log(20.0)], rtol=1e-6)
  np.testing.assert_allclose(lpg.progress_features(5, 20, progress_mode="raw"), [5.0, 20.0])
  assert lpg.progress_features(5, 20, progress_mode="none").shape == (0,)
  with pytest.raises(ValueError, match="progress_mode"):
    lpg.progress_features(5, 20, progress_mode="bogus")
  # The network does see the lifetime: the same step at a different horizon changes pi_hat.
  _, fn = _targets_fn("paper")
  x = _inputs(jax.random.key(3))
  assert not np.allclose(fn(*x, 5, 10)[0], fn(*x, 5, 1000)[0])
  _, fn_none = _targets_fn("none")
  np.testing.assert_allclose(fn_none(*x, 5, 10)[0], fn_none(*x, 5, 1000)[0])


def test_agent_loss_gradients_and_kl():
  logits = jax.random.normal(jax.random.key(4), (T, K))
  y_hat = jax.nn.softmax(logits)
  logp = jnp.log(jnp.linspace(0.1, 0.9, T))
  pi_hat = jnp.linspace(-1.0, 1.0, T)
  mask = jnp.ones((T,))
  loss, aux = lpg.lpg_agent_loss_per_step(logp, pi_hat, logits, y_hat, mask)
  np.testing.assert_allclose(aux["kl"], 0.0, atol=1e-6)  # y == y_hat
  np.testing.assert_allclose(loss, logp * pi_hat, atol=1e-6)
  # d loss / d logp = pi_hat; no gradient reaches the LPG targets.
  g_logp, g_pi_hat = jax.grad(
      lambda a, b: jnp.sum(lpg.lpg_agent_loss_per_step(a, b, logits, y_hat, mask)[0]),
      argnums=(0, 1))(logp, pi_hat)
  np.testing.assert_allclose(g_logp, pi_hat, rtol=1e-6)
  np.testing.assert_array_equal(g_pi_hat, 0.0)


def test_agent_loss_jit_and_degenerate_inputs():
  logits = jnp.zeros((T, K))
  y_hat = jnp.zeros((T, K)).at[:, 0].set(1.0)  # one-hot target: log 0 elsewhere
  logp = jnp.full((T,), -jnp.inf).at[:3].set(-1.0)  # pi(a|s) = 0 at padded steps
  mask = jnp.arange(T) < 3
  eager, _ = lpg.lpg_agent_loss_per_step(logp, jnp.ones(T), logits, y_hat, mask)
  jitted, _ = jax.jit(lpg.lpg_agent_loss_per_step)(logp, jnp.ones(T), logits, y_hat, mask)
  np.testing.assert_allclose(eager, jitted, rtol=1e-6)
  assert bool(jnp.all(jnp.isfinite(eager)))
  np.testing.assert_array_equal(eager[3:], 0.0)


def test_targets_jit_matches_eager():
  params, fn = _targets_fn("raw")
  x = _inputs(jax.random.key(5), done=jnp.zeros((T,)).at[3].set(1.0))
  eager = lpg.lpg_targets(params, *x, 2, 50, progress_mode="raw")
  jitted = fn(*x, 2, 50)
  np.testing.assert_allclose(eager[0], jitted[0], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(eager[1], jitted[1], rtol=1e-5, atol=1e-6)
