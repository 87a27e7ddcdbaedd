"""End-to-end jitted PPO on gymnax in the PureJaxRL shape, with a pluggable drift (objective).

`make_train(config, drift_fn=...)` returns one pure function
`train(key, drift_params=None, lifetime=None, env_params=None)` made of nested `lax.scan`s: env
steps, then GAE, then epochs, then minibatches. Jit it once and `vmap` it over seeds (and, for
meta-learning, over a population of drift parameters and their lifetimes):

    train = jax.jit(jax.vmap(make_train(config), in_axes=(0, None)))
    out = train(jax.random.split(jax.random.key(0), 16), None)

The environment is `make_env(config.env_name)` unless `make_train(config, env=..., env_params=...)`
supplies another one. `train(..., env_params=p)` runs on the gymnax `EnvParams` pytree `p` instead
of the build-time ones; `p` may be traced, so one compiled program trains on any physics (e.g. a
CartPole pole length chosen inside a jitted search, `rlpost.planning.iwocs_deep`) and can be
vmapped over a batch of models.

Policy objective (mirror learning; Kuba et al. 2022, arXiv 2201.02373; LPO, Lu et al. 2022,
arXiv 2210.05639, eq. 4):

    L_pi = mean_i[ -(r_i * A_i) + D(r_i, A_i; n/N, log N) ],   r = pi / pi_old,   D >= 0.

With `drift_fn=None` the loss is PPO-clip (Schulman et al. 2017, arXiv 1707.06347),
`rlpost.core.ppo_clip_loss_per_token`, which is the same objective with the drift
`D_PPO = ReLU((r - clip(r, 1 - eps, 1 + eps)) * A)`. GAE (arXiv 1506.02438) is
`rlpost.core.gae_advantages` vmapped over envs; reductions use `rlpost.core.masked_mean`.

Drift-function contract (`DriftFn`):

    drift_fn(drift_params, ratio, advantages, progress) -> drift
      drift_params: any pytree (None for fixed drifts such as DPO); the thing ES evolves.
      ratio:        [M] pi(a|s) / pi_old(a|s) for the minibatch (carries the policy gradient).
      advantages:   [M] (normalised) GAE advantages, no gradient.
      progress:     `Progress(frac=n/N, log_lifetime=log N)`, n the update index in [0, N).
      returns:      [M] per-sample drift D (should be >= 0 and 0 at r = 1); the per-sample policy
                    loss is -(r * A) + D and is reduced with `masked_mean`.

Deviations from PureJaxRL's `ppo.py` (documented, on purpose):
  * gymnax 1.0 step API: a time-limit truncation bootstraps with V(final_observation)
    (`bootstrap_truncation=True`), rather than being treated as termination. With it False the
    behaviour matches PureJaxRL.
  * Losses come from `rlpost.core` (PPO clip, clipped value loss, GAE, entropy); nothing inlined.
  * Weights are gain-scaled normal, not orthogonal (no LAPACK QR under vmap; see `_init_mlp`).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable, NamedTuple

import gymnax
from gymnax.wrappers import purerl
import jax
import jax.numpy as jnp
import optax

from rlpost import core as rl_core

Array = jax.Array
PyTree = Any


class Progress(NamedTuple):
  """Lifetime-progress features fed to temporally-aware objectives (TA-LPO / TA-LPG)."""
  frac: Array  # n / N, the fraction of the agent's lifetime (updates) already done
  log_lifetime: Array  # log N, N the number of updates in the lifetime


DriftFn = Callable[[PyTree, Array, Array, Progress], Array]

# XLA options that cut CPU compile time ~3x (at some run-time cost); for smoke runs and tests.
FAST_COMPILE_OPTIONS = {"xla_backend_optimization_level": 0,
                        "xla_llvm_disable_expensive_passes": True}

# Same clamp as rlpost.core's PPO loss (verl clamps the log-ratio to +-20 before exp).
LOG_RATIO_CLAMP = 20.0

_ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu}


@dataclasses.dataclass(frozen=True)
class PPOConfig:
  """PPO hyperparameters; defaults are PureJaxRL's CartPole-v1 settings (GAE arXiv 1506.02438).

  The lifetime is `num_updates = total_timesteps // (num_envs * num_steps)` updates.
  """
  env_name: str = "CartPole-v1"
  num_envs: int = 4
  num_steps: int = 128
  total_timesteps: int = 500_000
  update_epochs: int = 4
  num_minibatches: int = 4
  gamma: float = 0.99
  gae_lambda: float = 0.95
  clip_eps: float = 0.2
  ent_coef: float = 0.01
  vf_coef: float = 0.5
  vf_clip: float | None = 0.2  # PureJaxRL clips the value change with clip_eps; None: plain MSE
  max_grad_norm: float = 0.5
  lr: float = 2.5e-4
  anneal_lr: bool = True
  hidden_size: int = 64
  num_hidden_layers: int = 2
  activation: str = "tanh"
  normalize_advantages: bool = True
  bootstrap_truncation: bool = True

  def __post_init__(self):
    positive = ("num_envs", "num_steps", "total_timesteps", "update_epochs", "num_minibatches",
                "hidden_size", "num_hidden_layers")
    for name in positive:
      if int(getattr(self, name)) <= 0:
        raise ValueError(f"PPOConfig.{name} must be > 0; got {getattr(self, name)!r}")
    for name in ("gamma", "gae_lambda"):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(f"PPOConfig.{name} must be in [0, 1]; got {getattr(self, name)!r}")
    for name in ("clip_eps", "ent_coef", "vf_coef", "max_grad_norm", "lr"):
      if getattr(self, name) < 0.0:
        raise ValueError(f"PPOConfig.{name} must be >= 0; got {getattr(self, name)!r}")
    if self.vf_clip is not None and self.vf_clip <= 0.0:
      raise ValueError(f"PPOConfig.vf_clip must be > 0 or None; got {self.vf_clip!r}")
    if self.activation not in _ACTIVATIONS:
      raise ValueError(f"PPOConfig.activation must be one of {sorted(_ACTIVATIONS)}; "
                       f"got {self.activation!r}")
    if self.env_name not in gymnax.registered_envs:
      raise ValueError(f"PPOConfig.env_name {self.env_name!r} is not a gymnax env")
    if self.total_timesteps < self.num_envs * self.num_steps:
      raise ValueError(
          f"PPOConfig.total_timesteps={self.total_timesteps} is below one rollout "
          f"(num_envs * num_steps = {self.num_envs * self.num_steps})")
    if (self.num_envs * self.num_steps) % self.num_minibatches:
      raise ValueError(
          f"PPOConfig.num_minibatches={self.num_minibatches} must divide "
          f"num_envs * num_steps = {self.num_envs * self.num_steps}")

  @property
  def batch_size(self) -> int:
    return self.num_envs * self.num_steps

  @property
  def num_updates(self) -> int:
    return self.total_timesteps // self.batch_size

  def with_lifetime(self, num_updates: int) -> "PPOConfig":
    """The same config with a lifetime of exactly `num_updates` updates."""
    return dataclasses.replace(self, total_timesteps=int(num_updates) * self.batch_size)


class Transition(NamedTuple):
  obs: Array
  action: Array
  logp: Array
  value: Array
  reward: Array  # includes gamma * V(final_obs) on truncated steps when bootstrapping
  discount: Array  # gamma * (1 - done)
  done: Array
  episode_return: Array  # LogWrapper's return of the episode that just ended (if done)


# ---------------------------------------------------------------------------------------------
# Actor-critic MLP (pure functions; separate actor and critic torsos as in PureJaxRL).


def _init_mlp(key: Array, sizes: list[int], out_scale: float) -> list[dict[str, Array]]:
  # Gain-scaled normal init, std = gain / sqrt(fan_in), with PureJaxRL's gains (sqrt 2 hidden,
  # `out_scale` for the head). Deviation: PureJaxRL uses orthogonal init; under vmap over seeds
  # or populations that is a batched LAPACK QR, which deadlocked jaxlib's CPU thread pool here
  # (observed with 160 vmapped agents), and the matched-variance normal init avoids LAPACK.
  layers = []
  keys = jax.random.split(key, len(sizes) - 1)
  for i, (k, n_in, n_out) in enumerate(zip(keys, sizes[:-1], sizes[1:])):
    gain = out_scale if i == len(sizes) - 2 else jnp.sqrt(2.0)
    w = gain / jnp.sqrt(n_in) * jax.random.normal(k, (n_in, n_out), jnp.float32)
    layers.append({"w": w, "b": jnp.zeros((n_out,), jnp.float32)})
  return layers


def _apply_mlp(layers, x: Array, activation: Callable[[Array], Array]) -> Array:
  for layer in layers[:-1]:
    x = activation(x @ layer["w"] + layer["b"])
  return x @ layers[-1]["w"] + layers[-1]["b"]


def init_actor_critic(key: Array, obs_dim: int, num_actions: int, *, hidden_size: int = 64,
                      num_hidden_layers: int = 2) -> dict[str, Any]:
  """Gains as in PureJaxRL (sqrt 2 hidden, 0.01 policy head, 1.0 value head); see `_init_mlp`."""
  k_actor, k_critic = jax.random.split(key)
  hidden = [hidden_size] * num_hidden_layers
  return {
      "actor": _init_mlp(k_actor, [obs_dim, *hidden, num_actions], 0.01),
      "critic": _init_mlp(k_critic, [obs_dim, *hidden, 1], 1.0),
  }


def actor_critic_apply(params, obs: Array, *, activation: str = "tanh") -> tuple[Array, Array]:
  """Returns (logits [..., A], value [...])."""
  act = _ACTIVATIONS[activation]
  logits = _apply_mlp(params["actor"], obs, act)
  value = _apply_mlp(params["critic"], obs, act)[..., 0]
  return logits, value


# ---------------------------------------------------------------------------------------------
# Losses (composition of rlpost.core pieces).


def drift_policy_loss_per_sample(ratio: Array, advantages: Array, drift: Array) -> Array:
  """Mirror-learning policy loss per sample: -(r A - D) (LPO, arXiv 2210.05639, eq. 4)."""
  return -(ratio * advantages - drift)


def ppo_drift(drift_params: PyTree, ratio: Array, advantages: Array, progress: Progress, *,
              clip_eps: float = 0.2) -> Array:
  """PPO-clip written as a drift: D = ReLU((r - clip(r, 1 - eps, 1 + eps)) A).

  -(r A - D_PPO) equals PPO's max(-r A, -clip(r) A); used to check the drift plumbing.
  """
  del drift_params, progress
  return jax.nn.relu((ratio - jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)) * advantages)


def make_loss_fn(config: PPOConfig, drift_fn: DriftFn | None = None):
  """Minibatch loss `loss(params, batch, drift_params, progress) -> (scalar, metrics)`."""

  def loss_fn(params, batch: Transition, advantages: Array, targets: Array,
              drift_params: PyTree, progress: Progress):
    logits, value = actor_critic_apply(params, batch.obs, activation=config.activation)
    logp_all = jax.nn.log_softmax(logits.astype(jnp.float32))
    logp = jnp.take_along_axis(logp_all, batch.action[..., None].astype(jnp.int32), -1)[..., 0]
    mask = jnp.ones(logp.shape, bool)
    if config.normalize_advantages:
      advantages = rl_core.masked_whiten(advantages, mask)
    if drift_fn is None:
      pg_per, aux = rl_core.ppo_clip_loss_per_token(
          logp, batch.logp, advantages, mask, clip_low=config.clip_eps, clip_high=config.clip_eps)
      ratio = aux["ratio"]
    else:
      log_ratio = jnp.clip(logp - batch.logp, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
      ratio = jnp.exp(log_ratio)
      drift = drift_fn(drift_params, ratio, advantages, progress)
      pg_per = drift_policy_loss_per_sample(ratio, advantages, drift)
    policy_loss = rl_core.masked_mean(pg_per, mask)
    if config.vf_clip is None:
      v_per = 0.5 * jnp.square(value - targets)
    else:
      v_per, _ = rl_core.clipped_value_loss_per_token(value, batch.value, targets, mask,
                                                      clip=config.vf_clip)
    value_loss = rl_core.masked_mean(v_per, mask)
    entropy = rl_core.masked_mean(rl_core.entropy_from_logits(logits), mask)
    total = policy_loss + config.vf_coef * value_loss - config.ent_coef * entropy
    log_ratio = jnp.log(jnp.maximum(ratio, 1e-30))
    metrics = {
        "policy_loss": policy_loss,
        "value_loss": value_loss,
        "entropy": entropy,
        "approx_kl": rl_core.masked_mean((ratio - 1.0) - log_ratio, mask),  # k3 estimator
        "clip_frac": rl_core.masked_mean(jnp.abs(ratio - 1.0) > config.clip_eps, mask),
    }
    return total, metrics

  return loss_fn


# ---------------------------------------------------------------------------------------------
# Training function.


def make_env(env_name: str):
  """gymnax env wrapped to flat observations and episode-return logging."""
  env, env_params = gymnax.make(env_name)
  env = purerl.LogWrapper(purerl.FlattenObservationWrapper(env))
  return env, env_params


def make_train(config: PPOConfig, *, drift_fn: DriftFn | None = None, env: Any = None,
               env_params: Any = None):
  """Builds `train(key, drift_params=None, lifetime=None, env_params=None)` (PureJaxRL shape).

  Args:
    config: a `PPOConfig`; the scan runs `config.num_updates` updates.
    drift_fn: None for PPO-clip, or a `DriftFn` (see module docstring); e.g.
      `rlpost.meta.lpo_drift`, `rlpost.meta.ta_lpo_drift`, `rlpost.meta.dpo_drift`.
    env: None for `make_env(config.env_name)`, or a gymnax-API env with flat observations, a
      discrete action space and `LogWrapper`'s `returned_episode_returns` in its state and info
      (wrap a raw gymnax env as `make_env` does). `config.env_name` is then not used for the env.
    env_params: the env's default `EnvParams` (None: those of `make_env(config.env_name)`, or
      `env.default_params` when `env` is given). They fix the observation and action sizes.

  The returned `train` takes an optional `env_params` (a pytree like the default one, may be
  traced or vmapped) that replaces the build-time params for that call; the network sizes stay
  those of the build-time params, so only values (physics, episode cap), not shapes, may change.
  With `env_params=None` the build-time params enter the program as constants.

  The returned `train` takes an optional traced `lifetime` N <= config.num_updates (default
  `config.num_updates`): the learning rate anneals to 0 over N updates, progress features are
  n/N and log N, and updates n >= N are discarded (the agent is frozen, as groove does for
  variable lifetimes). A traced lifetime lets one compiled program serve a population whose
  members have different lifetimes; compute is always `config.num_updates` updates.

  Returns:
    A pure function. Its output has `params` (final agent), `final_return` (the `last_return` at
    update N - 1) and `metrics`, per-update arrays `[num_updates]`: `episode_return` (mean return
    of the episodes finished in that rollout, NaN when none did), `last_return` (mean over envs of
    each env's most recent finished-episode return, 0 before the first), `lr`, and the loss
    metrics averaged over epochs and minibatches.
  """
  if env is None:
    env, made_params = make_env(config.env_name)
    default_params = made_params if env_params is None else env_params
  else:
    default_params = env.default_params if env_params is None else env_params
  obs_dim = int(env.observation_space(default_params).shape[0])
  num_actions = int(env.action_space(default_params).n)
  minibatch_size = config.batch_size // config.num_minibatches
  loss_fn = make_loss_fn(config, drift_fn)
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  # Adam without its learning rate; the (annealed) lr is applied per update below so that the
  # lifetime can be a traced value. Same schedule as PureJaxRL: lr * (1 - n / N), constant within
  # an update.
  tx = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.scale_by_adam(eps=1e-5))

  def train(key: Array, drift_params: PyTree = None, lifetime: Array | int | None = None,
            env_params: PyTree = None):
    if env_params is None:
      env_params = default_params
    elif jax.tree.structure(env_params) != jax.tree.structure(default_params):
      raise ValueError(f"train(env_params=...) must have the structure of the env's params "
                       f"{jax.tree.structure(default_params)}; got "
                       f"{jax.tree.structure(env_params)}")
    lifetime = config.num_updates if lifetime is None else lifetime
    lifetime = jnp.asarray(lifetime, jnp.int32)
    key, k_net, k_reset = jax.random.split(key, 3)
    params = init_actor_critic(k_net, obs_dim, num_actions, hidden_size=config.hidden_size,
                               num_hidden_layers=config.num_hidden_layers)
    opt_state = tx.init(params)
    obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(
        jax.random.split(k_reset, config.num_envs), env_params)

    def env_step(carry, _):
      params, env_state, obs, key = carry
      key, k_act, k_step = jax.random.split(key, 3)
      logits, value = actor_critic_apply(params, obs, activation=config.activation)
      action = jax.random.categorical(k_act, logits)
      logp = jnp.take_along_axis(jax.nn.log_softmax(logits), action[:, None], -1)[:, 0]
      obs_next, env_state, reward, terminated, truncated, info = jax.vmap(
          env.step, in_axes=(0, 0, 0, None))(
              jax.random.split(k_step, config.num_envs), env_state, action, env_params)
      done = jnp.logical_or(terminated, truncated)
      reward = reward.astype(jnp.float32)
      if config.bootstrap_truncation:
        _, final_value = actor_critic_apply(params, info["final_observation"],
                                            activation=config.activation)
        cut = jnp.logical_and(truncated, jnp.logical_not(terminated))
        reward = reward + config.gamma * jnp.where(cut, final_value, 0.0)
      transition = Transition(
          obs=obs, action=action, logp=logp, value=value, reward=reward,
          discount=config.gamma * (1.0 - done.astype(jnp.float32)), done=done,
          episode_return=info["returned_episode_returns"])
      return (params, env_state, obs_next, key), transition

    def update_step(carry, update_idx):
      params, opt_state, env_state, obs, key = carry
      (_, env_state, obs, key), traj = jax.lax.scan(
          env_step, (params, env_state, obs, key), None, length=config.num_steps)
      _, last_value = actor_critic_apply(params, obs, activation=config.activation)

      # GAE per env (rlax layout [T]); trajectories are time-major [T, E].
      values = jnp.concatenate([traj.value, last_value[None]], axis=0)
      gae = functools.partial(rl_core.gae_advantages, lambda_=config.gae_lambda)
      advantages, targets = jax.vmap(gae, in_axes=1, out_axes=1)(traj.reward, traj.discount,
                                                                 values)
      n_over_lifetime = update_idx.astype(jnp.float32) / lifetime
      progress = Progress(frac=n_over_lifetime,
                          log_lifetime=jnp.log(lifetime.astype(jnp.float32)))
      lr = (config.lr * jnp.maximum(1.0 - n_over_lifetime, 0.0) if config.anneal_lr
            else jnp.float32(config.lr))

      def epoch(carry, _):
        params, opt_state, key = carry
        key, k_perm = jax.random.split(key)
        flat = jax.tree.map(lambda x: x.reshape((config.batch_size,) + x.shape[2:]),
                            (traj, advantages, targets))
        perm = jax.random.permutation(k_perm, config.batch_size)
        minibatches = jax.tree.map(
            lambda x: jnp.take(x, perm, axis=0).reshape(
                (config.num_minibatches, minibatch_size) + x.shape[1:]), flat)

        def minibatch(carry, mb):
          params, opt_state = carry
          mb_traj, mb_adv, mb_targets = mb
          (_, metrics), grads = grad_fn(params, mb_traj, mb_adv, mb_targets, drift_params,
                                        progress)
          updates, opt_state = tx.update(grads, opt_state, params)
          updates = jax.tree.map(lambda u: -lr * u, updates)
          return (optax.apply_updates(params, updates), opt_state), metrics

        (params, opt_state), metrics = jax.lax.scan(minibatch, (params, opt_state), minibatches)
        return (params, opt_state, key), metrics

      (new_params, new_opt_state, key), loss_metrics = jax.lax.scan(
          epoch, (params, opt_state, key), None, length=config.update_epochs)
      alive = update_idx < lifetime
      params, opt_state = jax.tree.map(lambda new, old: jnp.where(alive, new, old),
                                       (new_params, new_opt_state), (params, opt_state))
      num_done = jnp.sum(traj.done)
      metrics = jax.tree.map(jnp.mean, loss_metrics)
      metrics["episode_return"] = jnp.where(
          num_done > 0,
          rl_core.masked_sum(traj.episode_return, traj.done) / jnp.maximum(num_done, 1), jnp.nan)
      metrics["last_return"] = jnp.mean(env_state.returned_episode_returns)
      metrics["lr"] = lr
      return (params, opt_state, env_state, obs, key), metrics

    (params, *_), metrics = jax.lax.scan(
        update_step, (params, opt_state, env_state, obs, key), jnp.arange(config.num_updates))
    final_return = metrics["last_return"][jnp.clip(lifetime - 1, 0, config.num_updates - 1)]
    return {"params": params, "final_return": final_return, "metrics": metrics}

  return train


def train_seeds(config: PPOConfig, keys: Array, *, drift_fn: DriftFn | None = None,
                drift_params: PyTree = None,
                fast_compile: bool = False) -> tuple[dict[str, Any], dict[str, float]]:
  """Jit + vmap `make_train` over `keys` [S]; returns (outputs, timing) with env steps/s.

  `timing` has `compile_s` (lowering + compilation) and `run_s` (execution only) and
  `steps_per_s` = S * total env steps / run_s. `fast_compile` uses `FAST_COMPILE_OPTIONS`.
  """
  train = jax.jit(jax.vmap(make_train(config, drift_fn=drift_fn), in_axes=(0, None, None)),
                  compiler_options=FAST_COMPILE_OPTIONS if fast_compile else None)
  t0 = time.perf_counter()
  compiled = train.lower(keys, drift_params, None).compile()
  t1 = time.perf_counter()
  out = jax.block_until_ready(compiled(keys, drift_params, None))
  t2 = time.perf_counter()
  steps = keys.shape[0] * config.num_updates * config.batch_size
  return out, {"compile_s": t1 - t0, "run_s": t2 - t1, "steps_per_s": steps / (t2 - t1)}
