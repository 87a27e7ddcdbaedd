"""A small episode-based PPO driver for fixed-horizon JAX control tasks (NDP and LPN experiments).

Every iteration resets `num_envs` environments, rolls each for exactly one episode of
`horizon` steps, computes GAE with `rlpost.core.gae_advantages` (vmapped over episodes), and
runs `update_epochs` x `num_minibatches` steps of Adam on

    L = ppo_clip(logp, old_logp, A) + c_v (V - R)^2 - c_e H[pi]
        + c_jac ||d mu / d s||_F^2 + c_act ||mu_t - mu_{t-1}||^2,

each reduced with `rlpost.core.aggregate_loss(..., "token_mean")` over the (episode, step) grid.

Actors act in *chunks*: `actor.action_chunk(obs) -> [chunk_len, action_size]` gives the means of
the next `chunk_len` Gaussian actions, computed from the observation at the chunk start. A per-step
policy has `chunk_len = 1`; a Neural Dynamic Policy emits a whole DMP trajectory. As in the NDP
code, every action of a chunk is its own PPO sample and the critic value of the chunk-start state is
repeated for each step of the chunk.

Papers: PPO (Schulman et al., 2017, arXiv 1707.06347); GAE (Schulman et al., 2015,
arXiv 1506.02438). The Jacobian penalty comes from `rlpost.control.lpn` and is passed in as
`jacobian_penalty_fn` so this module depends on no policy family.

Deviation from PureJaxRL: the update is one jitted function called from a Python loop (not one
`lax.scan` over iterations) so experiments can print progress and time each iteration.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx
import optax

from rlpost.core import aggregate_loss
from rlpost.core import gae_advantages
from rlpost.core import masked_whiten
from rlpost.core import ppo_clip_loss_per_token

Array = jax.Array
_LOG_2PI = math.log(2.0 * math.pi)


class MLP(nnx.Module):
  """Tanh MLP; the last layer is linear with its kernel scaled by `head_scale`."""

  def __init__(self, in_size: int, out_size: int, *, hidden: Sequence[int] = (64, 64),
               rngs: nnx.Rngs, head_scale: float = 1.0):
    sizes = [in_size, *hidden]
    self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
    self.head = nnx.Linear(sizes[-1], out_size, rngs=rngs)
    self.head.kernel.value = self.head.kernel.value * head_scale

  def __call__(self, x: Array) -> Array:
    for layer in self.layers:
      x = jnp.tanh(layer(x))
    return self.head(x)


class MLPPolicy(nnx.Module):
  """Per-step Gaussian-mean policy `mu(obs) = MLP(obs)`; `chunk_len = 1`."""

  chunk_len = 1

  def __init__(self, obs_size: int, action_size: int, *, hidden: Sequence[int] = (64, 64),
               rngs: nnx.Rngs):
    self.net = MLP(obs_size, action_size, hidden=hidden, rngs=rngs, head_scale=0.01)

  def __call__(self, obs: Array) -> Array:
    return self.net(obs)

  def action_chunk(self, obs: Array) -> Array:
    return self(obs)[None]


class ActorCritic(nnx.Module):
  """Actor (any module with `action_chunk` and `chunk_len`), MLP critic and a state-free log-std."""

  def __init__(self, actor: nnx.Module, obs_size: int, action_size: int, *, rngs: nnx.Rngs,
               critic_hidden: Sequence[int] = (64, 64), init_log_std: float = -0.5):
    self.actor = actor
    self.critic = MLP(obs_size, 1, hidden=critic_hidden, rngs=rngs)
    self.log_std = nnx.Param(jnp.full((action_size,), init_log_std, jnp.float32))

  def value(self, obs: Array) -> Array:
    return self.critic(obs)[..., 0]


def prng_key(seed: int) -> Array:
  """A typed PRNG key using XLA's RngBitGenerator (`unsafe_rbg`).

  The control experiments use it because threefry's inlined bit generation roughly doubled XLA
  compile time of the rollout + update on CPU; statistical quality is ample for RL noise.
  """
  return jax.random.key(seed, impl="unsafe_rbg")


def gaussian_log_prob(action: Array, mean: Array, log_std: Array) -> Array:
  """log N(action; mean, diag(exp(log_std))^2), summed over the last axis."""
  z = (action - mean) * jnp.exp(-log_std)
  return jnp.sum(-0.5 * z**2 - log_std - 0.5 * _LOG_2PI, axis=-1)


@dataclasses.dataclass(frozen=True)
class PPOConfig:
  """PPO hyperparameters (PPO paper / PureJaxRL defaults unless stated)."""
  num_envs: int = 16
  num_iterations: int = 100
  learning_rate: float = 3e-4
  gamma: float = 0.99
  gae_lambda: float = 0.95
  clip_eps: float = 0.2
  update_epochs: int = 10
  num_minibatches: int = 4
  entropy_coef: float = 0.0
  value_coef: float = 0.5
  max_grad_norm: float = 0.5
  jacobian_coef: float = 0.0
  action_change_coef: float = 0.0
  state_size: int | None = None  # leading obs entries that form s in ||d mu / d s||

  def __post_init__(self):
    for name in ("num_envs", "num_iterations", "update_epochs", "num_minibatches"):
      if getattr(self, name) < 1:
        raise ValueError(f"PPOConfig.{name} must be >= 1; got {getattr(self, name)}")
    if self.num_envs % self.num_minibatches:
      raise ValueError(f"PPOConfig.num_minibatches={self.num_minibatches} must divide "
                       f"num_envs={self.num_envs}")
    if not 0.0 <= self.gamma <= 1.0:
      raise ValueError(f"PPOConfig.gamma must be in [0, 1]; got {self.gamma}")
    if not 0.0 <= self.gae_lambda <= 1.0:
      raise ValueError(f"PPOConfig.gae_lambda must be in [0, 1]; got {self.gae_lambda}")
    for name in ("learning_rate", "clip_eps", "max_grad_norm"):
      if getattr(self, name) <= 0:
        raise ValueError(f"PPOConfig.{name} must be > 0; got {getattr(self, name)}")
    for name in ("entropy_coef", "value_coef", "jacobian_coef", "action_change_coef"):
      if getattr(self, name) < 0:
        raise ValueError(f"PPOConfig.{name} must be >= 0; got {getattr(self, name)}")


def rollout_episode(model: ActorCritic, env: Any, env_params: Any, key: Array, *,
                    deterministic: bool = False) -> dict[str, Array]:
  """One fixed-horizon episode; arrays are per step `[H, ...]`, chunk-start obs `[H / T, obs]`."""
  horizon, chunk = env_params.horizon, model.actor.chunk_len
  if horizon % chunk:
    raise ValueError(f"horizon={horizon} must be a multiple of actor.chunk_len={chunk}")
  k_reset, k_roll = jax.random.split(key)
  obs, state = env.reset(k_reset, env_params)
  log_std = model.log_std.value

  def chunk_step(carry, k):
    obs, state = carry
    k_noise, k_env = jax.random.split(k)
    mean = model.actor.action_chunk(obs)
    noise = jax.random.normal(k_noise, mean.shape) * (0.0 if deterministic else 1.0)
    action = mean + jnp.exp(log_std) * noise
    logp = gaussian_log_prob(action, mean, log_std)

    def env_step(carry, xs):
      o, s = carry
      a, ke = xs
      o2, s2, r, term, trunc, info = env.step(ke, s, a, env_params)
      return (o2, s2), (o, r, jnp.logical_or(term, trunc), info)

    (obs2, state2), (step_obs, reward, done, info) = jax.lax.scan(
        env_step, (obs, state), (action, jax.random.split(k_env, chunk)))
    out = {"chunk_obs": obs, "action": action, "mean": mean, "logp": logp, "obs": step_obs,
           "reward": reward, "done": done, "info": info}
    return (obs2, state2), out

  _, traj = jax.lax.scan(chunk_step, (obs, state), jax.random.split(k_roll, horizon // chunk))
  chunk_obs = traj.pop("chunk_obs")
  traj = jax.tree.map(lambda x: x.reshape((horizon,) + x.shape[2:]), traj)
  traj["chunk_obs"] = chunk_obs
  return traj


def _chunk_means_and_values(model: ActorCritic, chunk_obs: Array) -> tuple[Array, Array]:
  """`chunk_obs [B, C, obs]` -> per-step means `[B, C*T, A]` and repeated values `[B, C*T]`."""
  b, c = chunk_obs.shape[:2]
  t = model.actor.chunk_len
  mean = jax.vmap(jax.vmap(model.actor.action_chunk))(chunk_obs)
  value = model.value(chunk_obs)
  return mean.reshape(b, c * t, -1), jnp.repeat(value, t, axis=1)


JacobianPenaltyFn = Callable[[nnx.Module, Array, int], Array]


def ppo_loss(model: ActorCritic, batch: dict[str, Array], config: PPOConfig, *,
             jacobian_penalty_fn: JacobianPenaltyFn | None = None) -> tuple[Array, dict]:
  """The PPO objective of the module docstring on a minibatch of whole episodes `[B, H]`."""
  mean, value = _chunk_means_and_values(model, batch["chunk_obs"])
  log_std = model.log_std.value
  logp = gaussian_log_prob(batch["action"], mean, log_std)
  mask = jnp.ones(logp.shape, bool)
  adv = masked_whiten(batch["advantages"], mask)
  pg_per_step, pg_aux = ppo_clip_loss_per_token(
      logp, batch["logp"], adv, mask, clip_low=config.clip_eps, clip_high=config.clip_eps)
  pg = aggregate_loss(pg_per_step, mask, "token_mean")
  v_loss = aggregate_loss(0.5 * (value - batch["returns"])**2, mask, "token_mean")
  entropy = jnp.sum(log_std + 0.5 * (_LOG_2PI + 1.0))
  loss = pg + config.value_coef * v_loss - config.entropy_coef * entropy
  aux = {"pg_loss": pg, "value_loss": v_loss, "entropy": entropy,
         "clip_frac": pg_aux["clip_frac"]}
  if config.jacobian_coef > 0.0:
    if jacobian_penalty_fn is None:
      raise ValueError("PPOConfig.jacobian_coef > 0 needs a jacobian_penalty_fn")
    state_size = config.state_size or batch["obs"].shape[-1]
    jac = jax.vmap(jax.vmap(lambda o: jacobian_penalty_fn(model.actor, o, state_size)))(
        batch["obs"] if model.actor.chunk_len == 1 else batch["chunk_obs"])
    jac_loss = aggregate_loss(jac, jnp.ones(jac.shape, bool), "token_mean")
    loss = loss + config.jacobian_coef * jac_loss
    aux["jacobian_penalty"] = jac_loss
  if config.action_change_coef > 0.0:
    change = jnp.sum((mean[:, 1:] - mean[:, :-1])**2, axis=-1)
    change_loss = aggregate_loss(change, jnp.ones(change.shape, bool), "token_mean")
    loss = loss + config.action_change_coef * change_loss
    aux["action_change_penalty"] = change_loss
  return loss, aux


def make_ppo(env: Any, env_params: Any, model: ActorCritic, config: PPOConfig, *,
             jacobian_penalty_fn: JacobianPenaltyFn | None = None):
  """Returns `(train_state, graphdef, update, evaluate)`, the last two jitted.

  `train_state = (params, opt_state)`; `update(train_state, key) -> (train_state, metrics)`;
  `evaluate(params, key, num_episodes, deterministic)` returns stacked episodes. Rebuild the
  module with `nnx.merge(graphdef, params)`.
  """
  graphdef, params = nnx.split(model)
  if len(jax.tree.leaves(nnx.state(model, nnx.Param))) != len(jax.tree.leaves(params)):
    raise ValueError("make_ppo expects a model whose variables are all nnx.Param")
  tx = optax.chain(optax.clip_by_global_norm(config.max_grad_norm),
                   optax.adam(config.learning_rate, eps=1e-5))
  opt_state = tx.init(params)

  def collect(params, key):
    m = nnx.merge(graphdef, params)
    keys = jax.random.split(key, config.num_envs)
    traj = jax.vmap(lambda k: rollout_episode(m, env, env_params, k))(keys)
    _, value = _chunk_means_and_values(m, traj["chunk_obs"])
    discount = config.gamma * (1.0 - traj["done"].astype(jnp.float32))
    values = jnp.concatenate([value, jnp.zeros_like(value[:, :1])], axis=1)
    adv, ret = jax.vmap(lambda r, d, v: gae_advantages(r, d, v, lambda_=config.gae_lambda))(
        traj["reward"], discount, values)
    traj["advantages"], traj["returns"] = adv, ret
    return traj

  def update(train_state, key):
    params, opt_state = train_state
    k_roll, k_perm = jax.random.split(key)
    traj = collect(params, k_roll)
    batch = {k: traj[k] for k in ("chunk_obs", "obs", "action", "logp", "advantages", "returns")}

    def minibatch_step(carry, idx):
      params, opt_state = carry
      mb = jax.tree.map(lambda x: x[idx], batch)

      def loss_of(p_params):
        return ppo_loss(nnx.merge(graphdef, p_params), mb, config,
                        jacobian_penalty_fn=jacobian_penalty_fn)

      (loss, aux), grads = jax.value_and_grad(loss_of, has_aux=True)(params)
      updates, opt_state = tx.update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
      return (params, opt_state), dict(aux, loss=loss)

    def epoch_step(carry, k):
      perm = jax.random.permutation(k, config.num_envs).reshape(config.num_minibatches, -1)
      return jax.lax.scan(minibatch_step, carry, perm)

    (params, opt_state), aux = jax.lax.scan(
        epoch_step, (params, opt_state), jax.random.split(k_perm, config.update_epochs))
    metrics = jax.tree.map(jnp.mean, aux)
    metrics["return"] = jnp.mean(jnp.sum(traj["reward"], axis=1))
    for name, value in traj["info"].items():
      metrics[name] = jnp.nanmean(value)
    return (params, opt_state), metrics

  def evaluate(params, key, num_episodes: int = 16, deterministic: bool = True):
    m = nnx.merge(graphdef, params)
    keys = jax.random.split(key, num_episodes)
    return jax.vmap(lambda k: rollout_episode(m, env, env_params, k,
                                              deterministic=deterministic))(keys)

  return (params, opt_state), graphdef, jax.jit(update), jax.jit(
      evaluate, static_argnames=("num_episodes", "deterministic"))


def train_ppo(env: Any, env_params: Any, model: ActorCritic, config: PPOConfig, *, key: Array,
              jacobian_penalty_fn: JacobianPenaltyFn | None = None,
              callback: Callable[[dict], None] | None = None):
  """Runs `config.num_iterations` PPO updates; returns `(model, history, evaluate_fn)`.

  `history` holds one dict per iteration with `env_steps`, `return`, losses and `wall_s`
  (cumulative, compile time included in the first iteration; `compile_s` reports it).
  """
  train_state, graphdef, update, evaluate = make_ppo(
      env, env_params, model, config, jacobian_penalty_fn=jacobian_penalty_fn)
  steps_per_iter = config.num_envs * env_params.horizon
  history, start = [], time.perf_counter()
  for it in range(config.num_iterations):
    t0 = time.perf_counter()
    train_state, metrics = update(train_state, jax.random.fold_in(key, it))
    metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
    if not math.isfinite(metrics["loss"]):
      raise FloatingPointError(f"PPO loss is not finite at iteration {it}: {metrics}")
    metrics.update(iteration=it, env_steps=(it + 1) * steps_per_iter,
                   wall_s=time.perf_counter() - start)
    if it == 0:
      metrics["compile_s"] = time.perf_counter() - t0
    history.append(metrics)
    if callback is not None:
      callback(metrics)
  model = nnx.merge(graphdef, train_state[0])
  return model, history, lambda k, **kw: evaluate(train_state[0], k, **kw)


class RunWriter:
  """Writes `metrics.jsonl` and `summary.json` under a work directory."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    os.makedirs(workdir, exist_ok=True)
    self._metrics = open(os.path.join(workdir, "metrics.jsonl"), "w", encoding="utf-8")

  def write(self, record: dict) -> None:
    self._metrics.write(json.dumps(record, default=float) + "\n")
    self._metrics.flush()

  def summary(self, summary: dict) -> str:
    path = os.path.join(self.workdir, "summary.json")
    with open(path, "w", encoding="utf-8") as f:
      json.dump(summary, f, indent=2, default=float)
    return path

  def close(self) -> None:
    self._metrics.close()
