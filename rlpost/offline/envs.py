"""Environment adapter and policy evaluation for rlpost's offline-RL suite.

Two continuous-control JAX environments are supported, both with the gymnax 1.0 step API
(`obs, state, reward, terminated, truncated, info = env.step(key, state, action, params)`,
auto-reset, `info["final_observation"]`) and a fixed horizon:
  - "pendulum":   gymnax Pendulum-v1 (obs 3, action 1 in [-2, 2], 200 steps);
  - "point_mass": `rlpost.control.envs_offline.PointMass2D` (obs 4, action 2 in [-1, 1], 100 steps).
"""
from typing import Any, Callable, NamedTuple

import gymnax
import jax
import jax.numpy as jnp

from rlpost.control.envs_offline import PointMass2D

Array = jax.Array

ENV_NAMES = ("pendulum", "point_mass")


class EnvSpec(NamedTuple):
  """Static description of an environment; `env`/`params` follow gymnax 1.0."""
  name: str
  env: Any
  params: Any
  observation_size: int
  action_size: int
  max_action: float
  horizon: int


def make_env(name: str) -> EnvSpec:
  """Builds one of `ENV_NAMES`; raises ValueError naming the bad value otherwise."""
  if name == "pendulum":
    env, params = gymnax.make("Pendulum-v1")
    return EnvSpec(name, env, params, observation_size=3, action_size=1,
                   max_action=float(params.max_torque), horizon=int(params.max_steps_in_episode))
  if name == "point_mass":
    env = PointMass2D()
    params = env.default_params
    return EnvSpec(name, env, params, observation_size=PointMass2D.observation_size,
                   action_size=PointMass2D.action_size, max_action=1.0,
                   horizon=int(params.horizon))
  raise ValueError(f"env_name must be one of {ENV_NAMES}, got {name!r}")


PolicyFn = Callable[[Array, Array], Array]  # (obs[D], key) -> action[A]


def rollout_returns(spec: EnvSpec, policy_fn: PolicyFn, key: Array, num_episodes: int) -> Array:
  """Undiscounted returns `[num_episodes]` of `policy_fn` over one full fixed-horizon episode each.

  `policy_fn(obs, key)` maps one observation to one action (already in env units); it is
  vmapped over episodes here. Pure and jit-able (num_episodes and the horizon are static).
  """
  env, params = spec.env, spec.params

  def one_episode(ep_key):
    reset_key, run_key = jax.random.split(ep_key)
    obs, state = env.reset(reset_key, params)

    def step(carry, step_key):
      obs, state = carry
      act_key, env_key = jax.random.split(step_key)
      action = policy_fn(obs, act_key)
      obs, state, reward, _, _, _ = env.step(env_key, state, action, params)
      return (obs, state), reward

    _, rewards = jax.lax.scan(step, (obs, state), jax.random.split(run_key, spec.horizon))
    return jnp.sum(rewards)

  return jax.vmap(one_episode)(jax.random.split(key, num_episodes))


def uniform_random_policy(spec: EnvSpec) -> PolicyFn:
  def policy(obs, key):
    del obs
    return jax.random.uniform(key, (spec.action_size,), minval=-spec.max_action,
                              maxval=spec.max_action)
  return policy


def cvar(returns: Array, *, alpha: float = 0.1) -> Array:
  """Conditional value at risk: the mean of the lowest `ceil(alpha * n)` returns (lower tail).

  CVaR_alpha(R) = E[R | R <= VaR_alpha(R)], estimated from samples; alpha=1 gives the mean.
  """
  if not 0.0 < alpha <= 1.0:
    raise ValueError(f"alpha must be in (0, 1], got {alpha}")
  n = returns.shape[0]
  k = max(1, int(-(-alpha * n // 1)))
  return jnp.mean(jnp.sort(returns)[:k])


def normalized_score(returns: Array, *, random_return: float, expert_return: float) -> Array:
  """D4RL normalised score: 100 * (R - R_random) / (R_expert - R_random)."""
  return 100.0 * (returns - random_return) / (expert_return - random_return)
