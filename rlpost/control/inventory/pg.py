"""REINFORCE / PPO baseline on the single-store inventory problems (score-function gradients).

HDPO (Alvo, Russo, Kanoria, Lee, 2023, arXiv:2306.11246, v3) argues that pathwise gradients are more
reliable than REINFORCE-type estimators on these problems. This module is the comparison point: the
same simulator and state, but a *stochastic* categorical policy over integer orders {0, ..., A-1} and
the score-function objective from `rlpost.core`:

  PPO (Schulman et al., 2017, arXiv:1707.06347):
    L = -E[min(r_t A_t, clip(r_t, 1-eps, 1+eps) A_t)],  r_t = pi(a_t|s_t) / pi_old(a_t|s_t)
  REINFORCE with a learned baseline: L = -E[log pi(a_t|s_t) A_t] (one epoch, one minibatch).

A_t is GAE (rlax layout, `rlpost.core.gae_advantages`, vmapped over environments) on r_t = -c_t / scale
with discount gamma. The task is continuing, but a random categorical policy over-orders and lost-sales
inventory then grows without bound, so every update starts `num_envs` fresh episodes from the initial
state distribution and bootstraps the last of its `rollout_len` periods with V(s_T) (a deviation from
plain continuing-task PPO, made for stability). The reported policy is the greedy (mode) action.
Training follows PureJaxRL: one `train(key)` of nested `lax.scan`s, jitted once.
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

import rlpost.core as core
from rlpost.control.inventory import env as env_lib
from rlpost.control.inventory.baselines import Policy
from rlpost.control.inventory.policies import mlp_apply, mlp_init

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class PGConfig:
  algorithm: str = "ppo"  # "ppo" | "reinforce"
  n_updates: int = 200
  num_envs: int = 256
  rollout_len: int = 64
  n_actions: int = 16
  hidden: tuple[int, ...] = (64, 64)
  learning_rate: float = 3e-4
  gamma: float = 0.99
  gae_lambda: float = 0.95
  clip_eps: float = 0.2
  epochs: int = 4
  minibatches: int = 4
  entropy_coef: float = 0.01
  value_coef: float = 0.5
  reward_scale: float = 10.0
  max_grad_norm: float = 0.5

  def __post_init__(self):
    if self.algorithm not in ("ppo", "reinforce"):
      raise ValueError(f"PGConfig.algorithm must be 'ppo' or 'reinforce', got {self.algorithm!r}")
    if (self.num_envs * self.rollout_len) % self.minibatches:
      raise ValueError("PGConfig.minibatches must divide num_envs * rollout_len")
    if self.n_actions < 2:
      raise ValueError(f"PGConfig.n_actions must be >= 2, got {self.n_actions}")


class PGState(NamedTuple):
  params: Any
  opt_state: Any
  env_state: Array
  key: Array


def _obs(problem: env_lib.SingleStore, state: Array) -> Array:
  return state / problem.mean


def _forward(params, obs):
  logits = mlp_apply(params["actor"], obs, activation=jnp.tanh)
  value = mlp_apply(params["critic"], obs, activation=jnp.tanh)[..., 0]
  return logits, value


def make_pg_train(problem: env_lib.SingleStore, config: PGConfig = PGConfig(), *,
                  updates_per_call: int | None = None):
  """Returns (init(key) -> PGState, train(state) -> (state, metrics[U])), U = updates_per_call
  (default config.n_updates); train is one jitted scan (call it repeatedly for progress output)."""
  if not isinstance(problem, env_lib.SingleStore):
    raise TypeError("the PG baseline supports SingleStore problems")
  cfg = config
  d = problem.state_dim
  if cfg.algorithm == "ppo":
    epochs, minibatches = cfg.epochs, cfg.minibatches
  else:
    epochs, minibatches = 1, 1
  optimizer = optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(cfg.learning_rate))

  def init(key):
    k1, k2, k3, k4 = jax.random.split(key, 4)
    params = {"actor": mlp_init(k1, [d, *cfg.hidden, cfg.n_actions], final_scale=0.01),
              "critic": mlp_init(k2, [d, *cfg.hidden, 1])}
    env_state = problem.init_state(k3, (cfg.num_envs,))
    return PGState(params, optimizer.init(params), env_state, k4)

  def rollout_step(carry, key):
    params, state = carry
    k_a, k_d = jax.random.split(key)
    obs = _obs(problem, state)
    logits, value = _forward(params, obs)
    action = jax.random.categorical(k_a, logits)
    logp = jax.nn.log_softmax(logits)[jnp.arange(cfg.num_envs), action]
    demand = problem.sample_demand(k_d, (cfg.num_envs,))
    state, cost = problem.step(state, action.astype(jnp.float32), demand)
    return (params, state), (obs, action, logp, value, -cost / cfg.reward_scale, cost)

  def loss_fn(params, batch):
    obs, action, old_logp, adv, ret = batch
    logits, value = _forward(params, obs)
    logp_all = jax.nn.log_softmax(logits)
    logp = jnp.take_along_axis(logp_all, action[..., None], -1)[..., 0]
    # rlpost.core losses take [B, T] token layouts: treat the minibatch as one row of samples.
    logp, old_logp, adv, ret, value = (x[None] for x in (logp, old_logp, adv, ret, value))
    mask = jnp.ones_like(logp)
    if cfg.algorithm == "ppo":
      pg, aux = core.ppo_clip_loss(logp, old_logp, adv, mask, clip_low=cfg.clip_eps,
                                   clip_high=cfg.clip_eps)
    else:
      pg, aux = core.pg_loss(logp, adv, mask)
    v_loss = core.aggregate_loss(jnp.square(value - ret), mask, "token_mean")
    ent = core.aggregate_loss(core.entropy_from_logits(logits)[None], mask, "token_mean")
    total = pg + cfg.value_coef * v_loss - cfg.entropy_coef * ent
    return total, {"pg_loss": pg, "value_loss": v_loss, "entropy": ent}

  def update(state: PGState, _):
    key, k_reset, k_roll, k_perm = jax.random.split(state.key, 4)
    env_state = problem.init_state(k_reset, (cfg.num_envs,))
    (_, env_state), (obs, action, logp, value, reward, cost) = jax.lax.scan(
        rollout_step, (state.params, env_state), jax.random.split(k_roll, cfg.rollout_len))
    _, last_v = _forward(state.params, _obs(problem, env_state))
    values = jnp.concatenate([value, last_v[None]], 0)  # [T+1, B]
    discount = jnp.full_like(reward, cfg.gamma)
    adv, ret = jax.vmap(lambda r, g, v: core.gae_advantages(r, g, v, lambda_=cfg.gae_lambda),
                        in_axes=(1, 1, 1), out_axes=1)(reward, discount, values)
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    flat = jax.tree.map(lambda x: x.reshape(cfg.rollout_len * cfg.num_envs, *x.shape[2:]),
                        (obs, action, logp, adv, ret))
    n = cfg.rollout_len * cfg.num_envs

    def epoch(carry, k):
      params, opt_state = carry
      perm = jax.random.permutation(k, n)
      mbs = jax.tree.map(lambda x: x[perm].reshape(minibatches, n // minibatches, *x.shape[1:]),
                         flat)

      def minibatch(carry, mb):
        params, opt_state = carry
        (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, mb)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), aux

      return jax.lax.scan(minibatch, (params, opt_state), mbs)

    (params, opt_state), aux = jax.lax.scan(epoch, (state.params, state.opt_state),
                                            jax.random.split(k_perm, epochs))
    metrics = jax.tree.map(jnp.mean, aux)
    metrics["train_cost"] = cost.mean()
    return PGState(params, opt_state, env_state, key), metrics

  @jax.jit
  def train(state: PGState):
    return jax.lax.scan(update, state, None, length=updates_per_call or cfg.n_updates)

  return init, train


def greedy_policy(problem: env_lib.SingleStore) -> Policy:
  """Deterministic policy (mode of the categorical) from PG parameters, for `hdpo.make_evaluate`."""

  def apply(params, state):
    logits, _ = _forward(params, _obs(problem, state))
    return jnp.argmax(logits, -1).astype(jnp.float32)

  return Policy(lambda key: None, apply)
