"""Tests of the reacher and throwing environments used by the NDP RL experiment."""
import jax
import jax.numpy as jnp
import numpy as np

from rlpost.control.envs import Reacher2D, Throwing, landing_x
from rlpost.control.envs.reacher import forward_kinematics


def test_landing_x_matches_ballistics():
  # Released at height 1 with zero velocity: falls straight down.
  np.testing.assert_allclose(landing_x(jnp.array([0.3, 1.0]), jnp.zeros(2)), 0.3, atol=1e-6)
  # From the ground at 45 degrees: range v^2 / g.
  v = 3.0
  x = landing_x(jnp.array([0.0, 0.0]), jnp.array([v, v]) / jnp.sqrt(2.0), gravity=9.81)
  np.testing.assert_allclose(x, v**2 / 9.81, rtol=1e-5)


def test_throwing_reward_only_at_release_and_clipping():
  env = Throwing()
  params = env.default_params
  obs, state = env.reset(jax.random.key(0), params)
  assert obs.shape == (env.observation_size,)
  rewards = []
  for t in range(params.horizon):
    obs, state, r, term, trunc, info = env.step(jax.random.key(t), state, jnp.array([1.0, 1.0]),
                                                params)
    rewards.append(float(r))
    assert bool(trunc) == (t == params.horizon - 1) and not bool(term)
  assert all(r == 0.0 for r in rewards[:-1]) and rewards[-1] < 0.0
  assert float(state.hand[0]) <= params.workspace_high[0] + 1e-6
  # NaN actions are treated as zero, not propagated.
  _, state, r, *_ = jax.jit(env.step)(jax.random.key(0), state, jnp.array([jnp.nan, 0.0]), params)
  assert bool(jnp.all(jnp.isfinite(state.hand)))


def test_reacher_step_and_reward():
  env = Reacher2D()
  params = env.default_params
  obs, state = env.reset(jax.random.key(1), params)
  np.testing.assert_allclose(obs[:2], state.q)
  _, new_state, r, *_ = env.step(jax.random.key(0), state, jnp.array([5.0, -5.0]), params)
  np.testing.assert_allclose(new_state.q - state.q, [params.max_dq, -params.max_dq], atol=1e-6)
  ee = forward_kinematics(new_state.q)
  np.testing.assert_allclose(r, -jnp.linalg.norm(ee - state.goal), rtol=1e-6)
  np.testing.assert_allclose(forward_kinematics(jnp.zeros(2)), [1.0, 0.0], atol=1e-6)
