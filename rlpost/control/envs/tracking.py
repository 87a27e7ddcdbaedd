"""Motion-imitation tracking task in JAX: a 2-D point mass follows a figure-eight reference.

The point mass is a damped double integrator driven by a force `u = max_force * clip(a, -1, 1)`.
The reference `r(phi) = [A sin(2 pi phi), (A / 2) sin(4 pi phi)]` is indexed by the phase
`phi = t * dt / period`; the policy sees the phase through Fourier features, as a motion-imitation
controller sees its clip phase. The reward is DeepMimic-style,
`0.8 exp(-pos_scale ||p - r||^2) + 0.2 exp(-vel_scale ||v - r'||^2)`.

The proprioceptive part of the observation is corrupted by Gaussian sensor noise
(`obs_noise`). This is what makes smoothness matter: a policy with a large state-to-action
Jacobian turns sensor noise into high-frequency action noise, which the LPN paper's Jacobian
penalty targets.

Observation (8) = [s, phi_features]: s = [p (2), v (2)] (noisy; `state_size = 4`) and
phi_features = [sin 2 pi phi, cos 2 pi phi, sin 4 pi phi, cos 4 pi phi].
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


class TrackingParams(NamedTuple):
  horizon: int = 100
  dt: float = 0.05
  period: float = 2.5
  amplitude: float = 1.0
  max_force: float = 20.0
  damping: float = 0.5
  obs_noise: float = 0.02
  init_noise: float = 0.05
  pos_scale: float = 20.0
  vel_scale: float = 1.0


class TrackingState(NamedTuple):
  pos: Array
  vel: Array
  t: Array


def reference_motion(t: Array, params: TrackingParams) -> tuple[Array, Array, Array]:
  """Reference position, velocity and phase at integer step `t`."""
  phi = t * params.dt / params.period
  w = 2.0 * jnp.pi / params.period
  a = params.amplitude
  pos = jnp.stack([a * jnp.sin(2 * jnp.pi * phi), 0.5 * a * jnp.sin(4 * jnp.pi * phi)])
  vel = jnp.stack([a * w * jnp.cos(2 * jnp.pi * phi), a * w * jnp.cos(4 * jnp.pi * phi)])
  return pos, vel, phi


def phase_features(phi: Array) -> Array:
  return jnp.stack([jnp.sin(2 * jnp.pi * phi), jnp.cos(2 * jnp.pi * phi),
                    jnp.sin(4 * jnp.pi * phi), jnp.cos(4 * jnp.pi * phi)])


class PointMassTracking:
  """Figure-eight tracking with a phase variable; see the module docstring."""

  observation_size = 8
  state_size = 4
  action_size = 2

  @property
  def default_params(self) -> TrackingParams:
    return TrackingParams()

  def _obs(self, key: Array, state: TrackingState, params: TrackingParams) -> Array:
    s = jnp.concatenate([state.pos, state.vel])
    s = s + params.obs_noise * jax.random.normal(key, s.shape)
    _, _, phi = reference_motion(state.t, params)
    return jnp.concatenate([s, phase_features(phi)])

  def reset(self, key: Array, params: TrackingParams | None = None):
    params = params or self.default_params
    k_init, k_obs = jax.random.split(key)
    t = jnp.zeros((), jnp.int32)
    ref_p, ref_v, _ = reference_motion(t, params)
    noise = params.init_noise * jax.random.normal(k_init, (4,))
    state = TrackingState(pos=ref_p + noise[:2], vel=ref_v + noise[2:], t=t)
    return self._obs(k_obs, state, params), state

  def step(self, key: Array, state: TrackingState, action: Array,
           params: TrackingParams | None = None):
    params = params or self.default_params
    force = params.max_force * jnp.clip(jnp.nan_to_num(action), -1.0, 1.0)
    vel = state.vel + params.dt * (force - params.damping * state.vel)
    pos = state.pos + params.dt * vel
    new_state = TrackingState(pos=pos, vel=vel, t=state.t + 1)
    ref_p, ref_v, _ = reference_motion(new_state.t, params)
    pos_err = jnp.sum((pos - ref_p)**2)
    vel_err = jnp.sum((vel - ref_v)**2)
    reward = (0.8 * jnp.exp(-params.pos_scale * pos_err)
              + 0.2 * jnp.exp(-params.vel_scale * vel_err))
    truncated = new_state.t >= params.horizon
    info = {"tracking_error": jnp.sqrt(pos_err)}
    return (self._obs(key, new_state, params), new_state, reward, jnp.zeros((), bool), truncated,
            info)
