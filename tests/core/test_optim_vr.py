"""Tests for N-PG-IGT / (N)-HARPG in rlpost.core.optim."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rlpost.core import optim

A = jnp.array([[3.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 0.5]])
B = jnp.array([1.0, -2.0, 0.5])


def quad_loss(theta):
  return 0.5 * theta @ A @ theta - B @ theta


def quad_grad(theta):
  return A @ theta - B


def _run(tx, theta0, steps, use_jit):
  state = tx.init(theta0)
  update = jax.jit(tx.update) if use_jit else tx.update
  params = theta0
  trace = []
  for _ in range(steps):
    updates, state = update(quad_grad(params), state, params)
    params = optax.apply_updates(params, updates)
    trace.append((params, state))
  return params, state, trace


@pytest.mark.parametrize("use_jit", [False, True])
def test_igt_transports_gradient_on_quadratic(use_jit):
  """With exact gradients of a quadratic, IGT's momentum equals grad f(theta_t); heavy-ball lags."""
  theta0 = jnp.array([2.0, -1.0, 3.0])
  tx = optim.npg_igt(0.05, momentum=0.2, normalize=True)
  _, _, trace = _run(tx, theta0, 25, use_jit)
  # Plain normalised momentum (no extrapolation) evaluated on the same rule.
  plain = optim.normalized_momentum(0.05, momentum=0.2)
  _, _, plain_trace = _run(plain, theta0, 25, use_jit)
  for t in range(1, 25):
    # d_t (stored after step t) vs the gradient at the true iterate theta_t.
    _, state = trace[t]
    _, prev_state = trace[t - 1]
    theta_t = prev_state.params
    np.testing.assert_allclose(state.momentum, quad_grad(theta_t), rtol=1e-4, atol=1e-5)
  lag = max(
      float(jnp.linalg.norm(plain_trace[t][1].momentum - quad_grad(plain_trace[t - 1][0])))
      for t in range(1, 25))
  assert lag > 1e-2  # plain momentum is visibly stale.


def test_igt_params_are_extrapolated_and_converge():
  theta0 = jnp.array([2.0, -1.0, 3.0])
  tx = optim.npg_igt(lambda t: 0.5 / (t + 2.0), momentum=0.3)
  params, state, _ = _run(tx, theta0, 400, use_jit=True)
  opt = jnp.linalg.solve(A, B)
  assert float(jnp.linalg.norm(optim.igt_params(state) - opt)) < 0.05
  eta = 0.3
  np.testing.assert_allclose(
      params, optim.igt_extrapolate(state.params, state.prev_params, eta), rtol=1e-5)


def test_harpg_exact_eta_one_is_normalized_gd():
  theta0 = jnp.array([2.0, -1.0, 3.0])
  tx = optim.harpg(0.1, momentum=1.0, normalize=True)
  state = tx.init(theta0)
  params = theta0
  key = jax.random.PRNGKey(0)
  for _ in range(3):
    key, sub = jax.random.split(key)
    point, direction = optim.harpg_interpolation(params, state, sub)
    hvp = optim.hessian_vector_product(quad_loss, point, direction)
    g = quad_grad(params)
    updates, state = tx.update(g, state, params, hvp=hvp)  # un-jitted path
    np.testing.assert_allclose(updates, -0.1 * g / jnp.linalg.norm(g), rtol=1e-5)
    params = optax.apply_updates(params, updates)


def test_harpg_exact_recursion_tracks_gradient():
  """With exact HVPs on a quadratic, d_t = grad f(theta_t) for any eta (recursive momentum)."""
  theta0 = jnp.array([2.0, -1.0, 3.0])
  tx = optim.harpg(0.05, momentum=0.1)
  state = tx.init(theta0)
  params = theta0
  key = jax.random.PRNGKey(1)
  @jax.jit
  def step(params, state, key):
    point, direction = optim.harpg_interpolation(params, state, key)
    hvp = optim.hessian_vector_product(quad_loss, point, direction)
    return tx.update(quad_grad(params), state, params, hvp=hvp)

  for _ in range(10):
    key, sub = jax.random.split(key)
    updates, state = step(params, state, sub)
    np.testing.assert_allclose(state.momentum, quad_grad(params), rtol=1e-4, atol=1e-5)
    params = optax.apply_updates(params, updates)


def test_hvp_matches_dense_hessian():
  def f(x):
    return jnp.sum(jnp.sin(x) * x**2) + (x[0] * x[1] * x[2]) ** 2
  x = jnp.array([0.3, -1.2, 0.7])
  v = jnp.array([1.0, 0.5, -2.0])
  dense = jax.jit(lambda x, v: jax.hessian(f)(x) @ v)(x, v)
  np.testing.assert_allclose(optim.hessian_vector_product(f, x, v), dense, rtol=1e-5)
  np.testing.assert_allclose(
      jax.jit(optim.hessian_vector_product, static_argnums=0)(f, x, v), dense, rtol=1e-5)


def test_policy_hvp_unbiased_on_softmax_bandit():
  """E_a[B(a, theta) u] = Hess J(theta) u, the expectation enumerated exactly."""
  rewards = jnp.array([1.0, -0.5, 2.0, 0.3])
  theta = jnp.array([0.2, -0.4, 0.1, 0.5])
  u = jnp.array([0.3, 1.0, -0.7, 0.2])

  def j(th):
    return jnp.sum(jax.nn.softmax(th) * rewards)

  actions = jnp.arange(4)
  probs = jax.nn.softmax(theta)

  def surrogate(th):  # per-"trajectory" REINFORCE surrogate, reweighted by exact probs * 4
    return 4.0 * probs * jax.nn.log_softmax(th)[actions] * rewards

  def logp(th):
    return jax.nn.log_softmax(th)[actions]

  got = jax.jit(lambda th, v: optim.policy_hessian_vector_product(surrogate, logp, th, v))(
      theta, u)
  want = jax.jit(lambda th, v: jax.hessian(j)(th) @ v)(theta, u)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_degenerate_zero_gradient_no_nan():
  theta0 = jnp.zeros(3)
  for tx in (optim.npg_igt(0.1), optim.harpg(0.1), optim.normalized_momentum(0.1)):
    state = tx.init(theta0)
    updates, state = tx.update(jnp.zeros(3), state, theta0)
    assert np.all(np.isfinite(updates)) and np.all(updates == 0)


def test_chains_with_optax_and_pytrees():
  params = {"w": jnp.ones((2, 2)), "b": jnp.zeros(2)}
  tx = optax.chain(optax.clip_by_global_norm(1.0), optim.npg_igt(0.1))
  state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  _, state = jax.jit(tx.update)(grads, state, params)
  true_params = optim.igt_params(state[1])
  step = jax.tree.map(lambda a, b: a - b, true_params, params)
  # eta_0 = 1: the true iterate moves by lr * g/|g| (clipped g has the same direction).
  np.testing.assert_allclose(optax.global_norm(step), 0.1, rtol=1e-5)
