"""Tests of the action-Jacobian penalty, the Linear Policy Net and the smoothness metric."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rlpost.control import lpn
from rlpost.control import policy_gradient as pg

DS, DPHI, DA = 4, 3, 2


@pytest.fixture(scope="module")
def nets():
  lpn_net = lpn.LinearPolicyNet(DS, DPHI, DA, rngs=nnx.Rngs(0), hidden=(8,), gain_init_scale=1.0)
  mlp_net = pg.MLPPolicy(DS + DPHI, DA, rngs=nnx.Rngs(1), hidden=(8,))
  obs = jax.random.normal(jax.random.key(0), (5, DS + DPHI))
  return lpn_net, mlp_net, obs


def test_lpn_closed_form_equals_autodiff_jacobian(nets):
  lpn_net, _, obs = nets

  @jax.jit
  def both(o):
    gain, _ = lpn_net.gains(o[DS:])
    jac = jax.jacfwd(lambda s: lpn_net(jnp.concatenate([s, o[DS:]])))(o[:DS])
    return (gain, jac, lpn_net.jacobian_sq_norm(o),
            lpn.action_jacobian_penalty(lpn_net.action_chunk, o, state_size=DS),
            lpn.policy_jacobian_penalty(lpn_net, o, DS))

  for o in obs:
    gain, jac, closed, autodiff, dispatched = both(o)
    np.testing.assert_allclose(jac, gain, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(closed, autodiff, rtol=1e-5)
    np.testing.assert_allclose(dispatched, closed, rtol=1e-6)
    assert float(closed) > 0.0


def test_mlp_penalty_equals_explicit_jacobian_norm(nets):
  _, mlp_net, obs = nets
  o = obs[0]
  pen = jax.jit(lambda o: lpn.policy_jacobian_penalty(mlp_net, o, DS))(o)
  jac_rev = jax.jacrev(mlp_net)(o)[:, :DS]  # reverse mode, full obs, then keep the s columns
  np.testing.assert_allclose(pen, jnp.sum(jac_rev**2), rtol=1e-5)
  pen_eager = lpn.action_jacobian_penalty(mlp_net, o, state_size=DS)
  np.testing.assert_allclose(pen_eager, pen, rtol=1e-5)


def test_penalty_zero_for_state_independent_policy():
  obs = jnp.array([1.0, -2.0, 3.0, 0.5, 0.1])
  pen = lpn.action_jacobian_penalty(lambda o: jnp.stack([jnp.sin(o[3]), o[4] ** 2]), obs,
                                    state_size=3)
  assert float(pen) == 0.0


def test_penalty_gradient_reaches_only_the_gain_outputs(nets):
  lpn_net, _, obs = nets
  graphdef, params = nnx.split(lpn_net)
  grads = jax.grad(lambda p: nnx.merge(graphdef, p).jacobian_sq_norm(obs[0]))(params)
  head_w, head_b = grads["net"]["head"]["kernel"].value, grads["net"]["head"]["bias"].value
  n_gain = DA * DS
  assert float(jnp.abs(head_w[:, :n_gain]).sum()) > 0.0
  assert float(jnp.abs(head_w[:, n_gain:]).sum()) == 0.0
  assert float(jnp.abs(head_b[n_gain:]).sum()) == 0.0


def test_high_frequency_power_definition():
  dt, t = 0.05, 200
  time = jnp.arange(t) * dt
  slow = jnp.sin(2 * jnp.pi * 0.5 * time)[:, None]
  fast = 0.3 * jnp.sin(2 * jnp.pi * 5.0 * time)[:, None]
  hf_fn = jax.jit(lambda a: lpn.high_frequency_power(a, dt=dt, cutoff_hz=3.0))
  hf_slow, frac_slow = hf_fn(slow)
  hf_mix, frac_mix = hf_fn(slow + fast)
  np.testing.assert_allclose(hf_slow, 0.0, atol=1e-6)
  np.testing.assert_allclose(hf_mix, 0.3**2 / 2, rtol=1e-3)  # power of the fast sine
  np.testing.assert_allclose(frac_mix, 0.09 / (1 + 0.09), rtol=1e-3)
  # Parseval: all bins sum to the variance.
  x = jax.random.normal(jax.random.key(0), (t, 2))
  total, frac = lpn.high_frequency_power(x, dt=dt, cutoff_hz=1e-9)
  np.testing.assert_allclose(total, jnp.sum(jnp.var(x, axis=0)), rtol=1e-4)
  # Degenerate: a constant signal and a single sample give zeros, not NaN.
  for a in (jnp.ones((t, 2)), jnp.ones((1, 2))):
    hf, fr = lpn.high_frequency_power(a, dt=dt, cutoff_hz=3.0)
    assert float(hf) == 0.0 and float(fr) == 0.0
  assert float(frac_slow) < 1e-6


def test_comparison_config_validates_fields():
  with pytest.raises(ValueError, match="variants"):
    lpn.ComparisonConfig(variants=("mlp", "transformer"))
  with pytest.raises(ValueError, match="cutoff_hz"):
    lpn.ComparisonConfig(cutoff_hz=50.0)
  with pytest.raises(ValueError, match="num_minibatches"):
    pg.PPOConfig(num_envs=6, num_minibatches=4)
