"""A 2-D throwing task in JAX with a delayed reward (gymnax-style reset/step, fixed horizon).

A hand (point at (x, z)) holds a ball. The action is the hand displacement per step, clipped to
`max_step` per axis, with the hand kept inside a workspace box. After `horizon` steps the ball is
released with the hand's last velocity (displacement / dt) and flies ballistically to the ground
z = 0; the only reward, given on the last step, is `-|x_land - target|`. This mirrors the NDP
paper's throwing task (reward delay, trajectory-shaped motion) at toy scale.

Observation (6): [hand (2), hand velocity (2), target, t / horizon]. Positions for an NDP are
obs[0:2] and velocities obs[2:4].
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


class ThrowingParams(NamedTuple):
  horizon: int = 10
  dt: float = 0.05
  max_step: float = 0.25
  gravity: float = 9.81
  workspace_low: tuple[float, float] = (-0.5, 0.5)
  workspace_high: tuple[float, float] = (0.5, 1.5)
  target_range: tuple[float, float] = (1.0, 2.5)


class ThrowingState(NamedTuple):
  hand: Array
  velocity: Array
  target: Array
  t: Array


def landing_x(position: Array, velocity: Array, *, gravity: float = 9.81) -> Array:
  """x where a ball released at `position = (x, z)` with `velocity` hits z = 0 (z > 0 assumed)."""
  x, z = position[0], jnp.maximum(position[1], 0.0)
  vx, vz = velocity[0], velocity[1]
  t_land = (vz + jnp.sqrt(vz**2 + 2.0 * gravity * z)) / gravity
  return x + vx * t_land


class Throwing:
  """Point-hand throwing task; see the module docstring."""

  observation_size = 6
  action_size = 2
  position_index = 0
  velocity_index = 2

  @property
  def default_params(self) -> ThrowingParams:
    return ThrowingParams()

  def _obs(self, state: ThrowingState, params: ThrowingParams) -> Array:
    return jnp.concatenate([state.hand, state.velocity, state.target[None],
                            (state.t / params.horizon)[None].astype(jnp.float32)])

  def reset(self, key: Array, params: ThrowingParams | None = None):
    params = params or self.default_params
    target = jax.random.uniform(key, (), minval=params.target_range[0],
                                maxval=params.target_range[1])
    state = ThrowingState(hand=jnp.array([0.0, 1.0]), velocity=jnp.zeros(2), target=target,
                          t=jnp.zeros((), jnp.int32))
    return self._obs(state, params), state

  def step(self, key: Array, state: ThrowingState, action: Array,
           params: ThrowingParams | None = None):
    del key
    params = params or self.default_params
    delta = jnp.clip(jnp.nan_to_num(action), -params.max_step, params.max_step)
    hand = jnp.clip(state.hand + delta, jnp.asarray(params.workspace_low),
                    jnp.asarray(params.workspace_high))
    velocity = (hand - state.hand) / params.dt
    t = state.t + 1
    new_state = ThrowingState(hand=hand, velocity=velocity, target=state.target, t=t)
    truncated = t >= params.horizon
    land = landing_x(hand, velocity, gravity=params.gravity)
    miss = jnp.abs(land - state.target)
    reward = jnp.where(truncated, -miss, 0.0)
    info = {"miss": jnp.where(truncated, miss, jnp.nan)}
    return (self._obs(new_state, params), new_state, reward, jnp.zeros((), bool), truncated, info)
