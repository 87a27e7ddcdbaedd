"""A continuous 2-D point-mass navigation task in JAX (gymnax 1.0 step API, auto-reset).

A unit mass starts at rest at a uniform position in `[-start_range, start_range]^2` and is pushed
by a force `a in [-1, 1]^2` (times `max_force`) towards the goal at the origin. Semi-implicit
Euler with linear damping:

  v' = v + dt * (max_force * a - damping * v),   p' = clip(p + dt * v', -arena, arena),

and the velocity component is zeroed when a wall is hit. The reward is dense,
`r = -||p'|| - action_cost * ||a||^2`, and episodes last exactly `horizon` steps (time-limit
truncation only, like Pendulum-v1), so `terminated` is always False.

Observation (4): `[p_x, p_y, v_x, v_y]`.

`step` auto-resets like gymnax 1.0: on the last step the returned observation/state belong to a
fresh episode and `info["final_observation"]` holds the true next observation.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


class PointMassParams(NamedTuple):
  horizon: int = 100
  dt: float = 0.1
  max_force: float = 1.0
  damping: float = 0.5
  arena: float = 2.0
  start_range: float = 1.5
  action_cost: float = 0.1


class PointMassState(NamedTuple):
  position: Array
  velocity: Array
  time: Array


class PointMass2D:
  """Point-mass navigation to the origin; see the module docstring."""

  observation_size = 4
  action_size = 2
  action_low = -1.0
  action_high = 1.0

  @property
  def default_params(self) -> PointMassParams:
    return PointMassParams()

  @staticmethod
  def _obs(state: PointMassState) -> Array:
    return jnp.concatenate([state.position, state.velocity])

  def reset(self, key: Array, params: PointMassParams | None = None):
    params = params or self.default_params
    position = jax.random.uniform(key, (2,), minval=-params.start_range,
                                  maxval=params.start_range)
    state = PointMassState(position=position, velocity=jnp.zeros(2),
                           time=jnp.zeros((), jnp.int32))
    return self._obs(state), state

  def step_env(self, state: PointMassState, action: Array, params: PointMassParams):
    """One transition without auto-reset."""
    a = jnp.clip(jnp.nan_to_num(action), -1.0, 1.0)
    velocity = state.velocity + params.dt * (params.max_force * a - params.damping * state.velocity)
    unclipped = state.position + params.dt * velocity
    position = jnp.clip(unclipped, -params.arena, params.arena)
    velocity = jnp.where(unclipped == position, velocity, 0.0)
    new_state = PointMassState(position=position, velocity=velocity, time=state.time + 1)
    reward = -jnp.linalg.norm(position) - params.action_cost * jnp.sum(a**2)
    truncated = new_state.time >= params.horizon
    return self._obs(new_state), new_state, reward, truncated

  def step(self, key: Array, state: PointMassState, action: Array,
           params: PointMassParams | None = None):
    params = params or self.default_params
    obs, new_state, reward, truncated = self.step_env(state, action, params)
    reset_obs, reset_state = self.reset(key, params)
    next_state = jax.tree.map(lambda r, s: jnp.where(truncated, r, s), reset_state, new_state)
    next_obs = jnp.where(truncated, reset_obs, obs)
    terminated = jnp.zeros((), bool)
    info = {"final_observation": obs, "terminated": terminated, "truncated": truncated,
            "discount": jnp.ones(())}
    return next_obs, next_state, reward, terminated, truncated, info
