"""TD3 / TD3+BC: losses, a jitted update, and the fixed-horizon envs used by the datasets."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlpost.control.envs_offline import PointMass2D
from rlpost.offline import envs
from rlpost.offline import td3


def test_td3_bc_alpha_zero_is_behaviour_cloning_and_lambda_normalises_q():
  q = jnp.array([1.0, -3.0, 2.0])
  pi = jnp.array([[0.5], [0.0], [-1.0]])
  a = jnp.array([[0.0], [0.0], [1.0]])
  loss, aux = td3.td3_bc_actor_loss_per_sample(q, pi, a, alpha=0.0)
  np.testing.assert_allclose(loss, [0.25, 0.0, 4.0])
  loss, aux = td3.td3_bc_actor_loss_per_sample(q, pi, a, alpha=2.5)
  np.testing.assert_allclose(aux["lambda"], 2.5 / 2.0)
  # Scaling Q by any c > 0 leaves the loss unchanged (lambda absorbs it).
  loss_scaled, _ = td3.td3_bc_actor_loss_per_sample(100.0 * q, pi, a, alpha=2.5)
  np.testing.assert_allclose(loss, loss_scaled, rtol=1e-5)
  loss_zero, _ = td3.td3_bc_actor_loss_per_sample(jnp.zeros(3), pi, a)
  assert np.all(np.isfinite(loss_zero))
  jitted, _ = jax.jit(td3.td3_bc_actor_loss_per_sample)(q, pi, a)
  np.testing.assert_allclose(jitted, loss, rtol=1e-6)


def test_td3_target_and_critic_loss():
  y = td3.td3_target(jnp.array([1.0, 1.0]), jnp.array([0.5, 0.0]),
                     jnp.array([[2.0, 5.0], [4.0, 3.0]]))
  np.testing.assert_allclose(y, [2.0, 1.0])
  loss = td3.td3_critic_loss_per_sample(jnp.array([[1.0], [3.0]]), jnp.array([2.0]))
  np.testing.assert_allclose(loss, [2.0])


@pytest.mark.parametrize("actor_loss", ["td3_bc"])
def test_td3_update_jitted_delays_actor(actor_loss):
  agent = td3.make_td3_agent(observation_size=3, action_size=2, max_action=1.0,
                             config=td3.TD3Config(actor_loss=actor_loss, hidden_sizes=(16,),
                                                  batch_size=8))
  state = td3.init_td3_state(agent, jax.random.key(0), 3)
  k = jax.random.split(jax.random.key(1), 4)
  batch = {"observations": jax.random.normal(k[0], (8, 3)),
           "actions": jax.random.uniform(k[1], (8, 2), minval=-1, maxval=1),
           "rewards": jax.random.normal(k[2], (8,)),
           "next_observations": jax.random.normal(k[3], (8, 3)), "terminals": jnp.zeros(8)}
  # Eager flax updates are very slow on CPU, so jit/no-jit agreement is checked on the losses
  # (above) and the update runs jitted only.
  update = jax.jit(lambda s, b, key: td3.td3_update(agent, s, b, key))
  s1, m1 = update(state, batch, jax.random.key(2))
  assert int(s1.step) == 1
  # policy_freq=2: the first step moves only the critic, the second also the actor.
  jax.tree.map(np.testing.assert_array_equal, s1.actor_params, state.actor_params)
  s2, m2 = update(s1, batch, jax.random.key(3))
  assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(s2.actor_params),
                                                    jax.tree.leaves(s1.actor_params)))
  assert all(np.isfinite(float(v)) for v in m2.values())


def test_td3_config_validation_names_field():
  with pytest.raises(ValueError, match="actor_loss"):
    td3.TD3Config(actor_loss="cql")
  with pytest.raises(ValueError, match="tau"):
    td3.TD3Config(tau=0.0)


def test_point_mass_auto_reset_and_reward():
  env = PointMass2D()
  params = env.default_params._replace(horizon=3)
  obs, state = env.reset(jax.random.key(0), params)
  assert obs.shape == (4,) and np.all(np.abs(obs[:2]) <= params.start_range)
  for t in range(3):
    prev = state
    obs, state, reward, terminated, truncated, info = env.step(jax.random.key(t), state,
                                                               jnp.array([1.0, -1.0]), params)
    np.testing.assert_allclose(reward, -np.linalg.norm(info["final_observation"][:2])
                               - params.action_cost * 2.0, rtol=1e-6)
    assert not bool(terminated)
  assert bool(truncated) and int(state.time) == 0  # auto-reset after the horizon
  # NaN actions are sanitised, a wall stops the mass.
  far = prev._replace(position=jnp.array([params.arena, 0.0]), velocity=jnp.array([5.0, 0.0]))
  o, s, r, *_ = env.step(jax.random.key(9), far, jnp.array([jnp.nan, 0.0]), params)
  assert np.all(np.isfinite(o)) and float(s.velocity[0]) == 0.0


def test_rollout_returns_cvar_and_normalised_score():
  spec = envs.make_env("point_mass")
  returns = jax.jit(lambda k: envs.rollout_returns(spec, envs.uniform_random_policy(spec), k, 4))(
      jax.random.key(0))
  assert returns.shape == (4,) and np.all(returns < 0)
  x = jnp.arange(20.0)
  np.testing.assert_allclose(envs.cvar(x, alpha=0.1), 0.5)
  np.testing.assert_allclose(envs.cvar(x, alpha=1.0), jnp.mean(x))
  np.testing.assert_allclose(envs.normalized_score(jnp.array([-10.0, 0.0]), random_return=-10.0,
                                                   expert_return=0.0), [0.0, 100.0])
  with pytest.raises(ValueError, match="env_name"):
    envs.make_env("hopper")
