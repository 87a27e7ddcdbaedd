"""Tests of the DMP integrator, the NDP policy module and the stroke imitation pieces."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rlpost.control import ndp
from rlpost.control.envs import make_strokes


def _reference_integrate(y0, dy0, goal, w, *, num_steps, dt, tau=1.0, a_z=25.0, a_x=1.0):
  """Plain-Python port of the official Euler loop (x first, y with the old z)."""
  n = w.shape[1]
  c = np.exp(-a_x * np.linspace(0, 1, n))
  h = n**1.5 / c / a_x
  y, z, x = np.array(y0, np.float64), np.array(dy0, np.float64) * tau, 1.0
  out = [y.copy()]
  for _ in range(num_steps):
    x = x - a_x * x / tau * dt
    psi = np.exp(-h * (x - c)**2)
    f = (w @ psi) / psi.sum() * x * (goal - y0)
    dz = (a_z * (a_z / 4 * (goal - y) - z) + f) / tau
    dy = z / tau
    y, z = y + dy * dt, z + dz * dt
    out.append(y.copy())
  return np.stack(out)


def test_zero_weights_converge_to_goal_without_overshoot():
  y0, g = jnp.array([0.0, 1.0, -2.0]), jnp.array([1.0, -1.0, -2.5])
  y, _, _ = ndp.dmp_integrate(y0, jnp.zeros(3), g, jnp.zeros((3, 5)), num_steps=300, dt=0.01)
  np.testing.assert_allclose(y[-1], g, atol=1e-4)
  # Critically damped: monotone approach, never past the goal.
  progress = (y - y0) / (g - y0 + jnp.where(g == y0, 1.0, 0.0))
  assert float(jnp.max(progress[:, :2])) <= 1.0 + 1e-6
  assert bool(jnp.all(jnp.diff(progress[:, :2], axis=0) >= -1e-6))


def test_goal_equal_start_stays_put_for_any_weights():
  y0 = jnp.array([0.3, -0.7])
  w = 50.0 * jax.random.normal(jax.random.key(0), (2, 5))
  y, dy, _ = ndp.dmp_integrate(y0, jnp.zeros(2), y0, w, num_steps=100, dt=0.01)
  np.testing.assert_allclose(y, jnp.broadcast_to(y0, y.shape), atol=1e-7)
  np.testing.assert_allclose(dy, 0.0, atol=1e-7)


def test_matches_reference_loop_and_jit():
  k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
  y0, g = jax.random.normal(k1, (2,)), jax.random.normal(k2, (2,))
  w = 30.0 * jax.random.normal(k3, (2, 6))
  dy0 = jnp.array([0.2, -0.1])
  kw = dict(num_steps=50, dt=0.02)
  ref = _reference_integrate(np.asarray(y0), np.asarray(dy0), np.asarray(g), np.asarray(w), **kw)
  y = ndp.dmp_integrate(y0, dy0, g, w, **kw)[0]
  y_jit = jax.jit(lambda *a: ndp.dmp_integrate(*a, **kw)[0])(y0, dy0, g, w)
  np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(y_jit, y, rtol=1e-5, atol=1e-6)


def test_trajectory_differentiable_wrt_weights_and_goal():
  y0 = jnp.array([0.0, 0.5])
  g0 = jnp.array([1.0, -0.5])
  w0 = 10.0 * jax.random.normal(jax.random.key(2), (2, 5))

  @jax.jit
  def objective(g, w):
    y = ndp.dmp_integrate(y0, jnp.zeros(2), g, w, num_steps=40, dt=0.025)[0]
    return jnp.sum(jnp.sin(2.0 * y[::4]))

  grad_g, grad_w = jax.jit(jax.grad(objective, argnums=(0, 1)))(g0, w0)
  assert float(jnp.linalg.norm(grad_w)) > 1e-4
  # Central differences; the trajectory is linear in w, so a wide step is exact up to the sin.
  for i in range(2):
    e = jnp.zeros(2).at[i].set(1e-2)
    fd = (objective(g0 + e, w0) - objective(g0 - e, w0)) / 2e-2
    np.testing.assert_allclose(grad_g[i], fd, rtol=2e-2, atol=2e-4)
  for idx in [(0, 0), (1, 3), (0, 4)]:
    e = jnp.zeros_like(w0).at[idx].set(0.1)
    fd = (objective(g0, w0 + e) - objective(g0, w0 - e)) / 0.2
    np.testing.assert_allclose(grad_w[idx], fd, rtol=2e-2, atol=2e-4)


@pytest.mark.parametrize("rbf", ["gaussian", "multiquadric", "inverse_quadric",
                                 "inverse_multiquadric", "linear"])
def test_degenerate_inputs_are_finite(rbf):
  y, dy, ddy = ndp.dmp_integrate(jnp.zeros(1), jnp.zeros(1), jnp.zeros(1), jnp.zeros((1, 1)),
                                 num_steps=1, dt=1.0, rbf=rbf)
  assert y.shape == (2, 1)
  assert bool(jnp.all(jnp.isfinite(y)) & jnp.all(jnp.isfinite(dy)) & jnp.all(jnp.isfinite(ddy)))
  with pytest.raises(ValueError, match="rbf"):
    ndp.dmp_integrate(jnp.zeros(1), jnp.zeros(1), jnp.zeros(1), jnp.zeros((1, 1)), num_steps=1,
                      dt=1.0, rbf="cubic")


def test_trajectory_actions_telescope():
  y = jnp.cumsum(jax.random.normal(jax.random.key(3), (21, 2)), axis=0)
  a = ndp.trajectory_actions(y, 4)
  assert a.shape == (5, 2)
  np.testing.assert_allclose(jnp.sum(a, axis=0), y[20] - y[0], rtol=1e-5, atol=1e-5)


def test_ndp_policy_starts_at_observed_position():
  dmp = ndp.DMPSpec(num_basis=4, chunk_len=5, substeps=3)
  policy = ndp.NDPPolicy(6, 2, rngs=nnx.Rngs(0), dmp=dmp, hidden=(8,), position_index=1,
                         velocity_index=3)
  obs = jnp.arange(6.0) / 6
  traj, chunk = jax.jit(lambda o: (policy.trajectory(o), policy.action_chunk(o)))(obs)
  assert traj.shape == (16, 2) and chunk.shape == (5, 2)
  np.testing.assert_allclose(traj[0], obs[1:3])
  np.testing.assert_allclose(chunk, ndp.trajectory_actions(traj, 3), rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="chunk_len"):
    ndp.DMPSpec(chunk_len=0)


def test_strokes_and_stroke_models():
  data = make_strokes(jax.random.key(0), 6, num_points=11, image_size=8)
  assert data["traj"].shape == (6, 11, 2) and data["image"].shape == (6, 8, 8)
  np.testing.assert_allclose(data["y0"], data["traj"][:, 0])
  # Minimum-jerk timing: pen starts and ends at rest.
  speed = jnp.linalg.norm(jnp.diff(data["traj"], axis=1), axis=-1)
  assert bool(jnp.all(speed[:, 0] < speed.max(axis=1) * 0.2))
  dmp = ndp.DMPSpec(num_basis=4, chunk_len=10, substeps=2, forcing_scaling="unit")
  for model in (ndp.StrokeNDP(64, rngs=nnx.Rngs(0), dmp=dmp, hidden=(8,)),
                ndp.StrokeMLP(64, num_points=11, rngs=nnx.Rngs(0), hidden=(8,))):
    pred = ndp.predict_strokes(model, data)
    assert pred.shape == (6, 11, 2)
    np.testing.assert_allclose(pred[:, 0], data["y0"], atol=1e-6)
  m = ndp.stroke_metrics(data["traj"], data["traj"])
  assert float(m["error"]) == 0.0 and float(m["roughness"]) == float(m["target_roughness"])
