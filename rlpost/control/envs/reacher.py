"""A 2-D two-link reaching task in JAX (gymnax-style reset/step, fixed horizon).

The arm has two revolute joints (link lengths `link_lengths`). The action is a joint-angle
increment per step, clipped to `max_dq`; this is the trajectory space an NDP acts in (its
actions are differences of the DMP trajectory). The reward is the negative end-effector
distance to a random reachable goal, every step.

Observation (8): [q (2), qdot (2) in rad/s, goal (2), ee - goal (2)]. Positions for an NDP are
obs[0:2] and velocities obs[2:4].
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


class ReacherParams(NamedTuple):
  horizon: int = 50
  dt: float = 0.05
  max_dq: float = 0.2
  link_lengths: tuple[float, float] = (0.5, 0.5)
  goal_radius: tuple[float, float] = (0.3, 0.9)


class ReacherState(NamedTuple):
  q: Array
  qdot: Array
  goal: Array
  t: Array


def forward_kinematics(q: Array, link_lengths=(0.5, 0.5)) -> Array:
  """End-effector position of a planar two-link arm, `q = [shoulder, elbow]`."""
  l1, l2 = link_lengths
  return jnp.stack([l1 * jnp.cos(q[0]) + l2 * jnp.cos(q[0] + q[1]),
                    l1 * jnp.sin(q[0]) + l2 * jnp.sin(q[0] + q[1])])


class Reacher2D:
  """Two-link planar reacher; see the module docstring."""

  observation_size = 8
  action_size = 2
  position_index = 0
  velocity_index = 2

  @property
  def default_params(self) -> ReacherParams:
    return ReacherParams()

  def _obs(self, state: ReacherState, params: ReacherParams) -> Array:
    ee = forward_kinematics(state.q, params.link_lengths)
    return jnp.concatenate([state.q, state.qdot, state.goal, ee - state.goal])

  def reset(self, key: Array, params: ReacherParams | None = None):
    params = params or self.default_params
    kq, kr, ka = jax.random.split(key, 3)
    q = jax.random.uniform(kq, (2,), minval=-0.5, maxval=0.5) + jnp.array([0.0, 1.0])
    radius = jax.random.uniform(kr, (), minval=params.goal_radius[0], maxval=params.goal_radius[1])
    angle = jax.random.uniform(ka, (), minval=-jnp.pi, maxval=jnp.pi)
    goal = radius * jnp.stack([jnp.cos(angle), jnp.sin(angle)])
    state = ReacherState(q=q, qdot=jnp.zeros(2), goal=goal, t=jnp.zeros((), jnp.int32))
    return self._obs(state, params), state

  def step(self, key: Array, state: ReacherState, action: Array,
           params: ReacherParams | None = None):
    del key
    params = params or self.default_params
    dq = jnp.clip(jnp.nan_to_num(action), -params.max_dq, params.max_dq)
    q = state.q + dq
    new_state = ReacherState(q=q, qdot=dq / params.dt, goal=state.goal, t=state.t + 1)
    ee = forward_kinematics(q, params.link_lengths)
    reward = -jnp.linalg.norm(ee - state.goal)
    truncated = new_state.t >= params.horizon
    info = {"distance": -reward}
    return (self._obs(new_state, params), new_state, reward, jnp.zeros((), bool), truncated, info)
