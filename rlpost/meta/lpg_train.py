"""TA-LPG inner loop (an agent trained by the learned policy gradient) and its Open_ES meta-training.

Paper: Jackson, Lu, Kirsch, Lange, Whiteson, Foerster, "Discovering Temporally-Aware Reinforcement
Learning Algorithms", ICLR 2024, arXiv 2402.05828 (TA-LPG); LPG: Oh et al., "Discovering
Reinforcement Learning Algorithms", NeurIPS 2020, arXiv 2007.08794.

Inner loop (one agent lifetime of N updates, all in one jitted `lax.scan`): every update the agent
(a softmax policy pi and a K-way prediction head y) collects a rollout of `num_steps` steps from
`num_envs` gymnax envs; the LPG network (`rlpost.meta.lpg.lpg_targets`, reverse GRU) reads
[r_t, d_t, pi(a_t|s_t), phi(y_t), phi(y_{t+1}), progress] per env and emits targets (pi_hat_t,
y_hat_t); the agent takes one Adam step on

    L(agent) = masked_mean_t[ log pi(a_t|s_t) * pi_hat_t + 0.5 * KL(y_t || y_hat_t) ]

(`rlpost.meta.lpg.lpg_agent_loss_per_step`; eq. of the LPG agent update, Oh et al. 2020 eq. 2
without the entropy/L2 regularisers, which groove's ES variant also drops). Progress inputs are
n/N and log N ("paper") or groove's raw n and N ("raw", the official code); "none" is plain LPG.
Like `rlpost.control.ppo.make_train`, the lifetime N is a traced input and updates n >= N are
discarded, so one compiled program serves a population with mixed lifetimes.

The inner loop takes a pluggable `target_fn(lpg_params, r, done, pi, y_t, y_tp1, step, lifetime)
-> (pi_hat [T], y_hat [T, K])` (one env, time-major). `reinforce_targets` is the PG-equivalent
"identity" target pi_hat = -G_t (discounted return-to-go within the episode), with which the
agent's policy gradient is exactly REINFORCE (`rlpost.core.pg_loss_per_token` with advantages G_t);
it is the property check of the plumbing.

Meta-training reuses `rlpost.meta.es` (evosax 0.3 Open_ES, antithetic pairs sharing an agent seed
and a log-uniform lifetime, centred-rank shaping of -final return).

Deviations: agent and GRU widths are CPU-sized (paper: GRU 256, MLP agents); the agent update is
one Adam step per rollout with a constant lr; groove's per-pair
winner fitness is replaced by population-wide centred ranks (as in `rlpost.meta.es`).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rlpost import core as rl_core
from rlpost.control import ppo
from rlpost.meta import es as es_lib
from rlpost.meta import lpg as lpg_lib

Array = jax.Array
PyTree = Any
TargetFn = Callable[..., tuple[Array, Array]]


@dataclasses.dataclass(frozen=True)
class LPGAgentConfig:
  """Inner-loop settings. Paper defaults: 64 envs, rollout 20, K = 8, GRU 256, gamma .99."""
  env_name: str = "CartPole-v1"
  num_envs: int = 64
  num_steps: int = 20
  num_updates: int = 250  # scan length = the largest lifetime served
  hidden_size: int = 32
  target_width: int = 8
  gru_width: int = 256
  lr: float = 1e-3
  max_grad_norm: float = 0.5
  target_coef: float = 0.5
  gamma: float = 0.99  # used by `reinforce_targets` only
  progress_mode: str = "paper"

  def __post_init__(self):
    for name in ("num_envs", "num_steps", "num_updates", "hidden_size", "target_width",
                 "gru_width"):
      if int(getattr(self, name)) <= 0:
        raise ValueError(f"LPGAgentConfig.{name} must be > 0; got {getattr(self, name)!r}")
    for name in ("lr", "max_grad_norm", "target_coef"):
      if getattr(self, name) < 0:
        raise ValueError(f"LPGAgentConfig.{name} must be >= 0; got {getattr(self, name)!r}")
    if not 0.0 <= self.gamma <= 1.0:
      raise ValueError(f"LPGAgentConfig.gamma must be in [0, 1]; got {self.gamma!r}")
    if self.progress_mode not in lpg_lib.PROGRESS_MODES:
      raise ValueError(f"LPGAgentConfig.progress_mode must be one of {lpg_lib.PROGRESS_MODES}; "
                       f"got {self.progress_mode!r}")
    if self.env_name not in gymnax.registered_envs:
      raise ValueError(f"LPGAgentConfig.env_name {self.env_name!r} is not a gymnax env")


def init_lpg_for(config: LPGAgentConfig, key: Array) -> dict[str, Any]:
  """LPG parameters matching the config's widths and progress mode."""
  return lpg_lib.init_lpg_params(key, target_width=config.target_width,
                                 gru_width=config.gru_width, progress_mode=config.progress_mode)


def _init_mlp(key: Array, sizes: list[int], out_gain: float) -> list[dict[str, Array]]:
  # std = gain / sqrt(fan_in) normal init (no vmapped LAPACK QR; see rlpost.control.ppo).
  keys = jax.random.split(key, len(sizes) - 1)
  return [{"w": (out_gain if i == len(sizes) - 2 else jnp.sqrt(2.0)) / jnp.sqrt(n_in)
           * jax.random.normal(k, (n_in, n_out), jnp.float32),
           "b": jnp.zeros((n_out,), jnp.float32)}
          for i, (k, n_in, n_out) in enumerate(zip(keys, sizes[:-1], sizes[1:]))]


def _apply_mlp(layers, x: Array) -> Array:
  for layer in layers[:-1]:
    x = jnp.tanh(x @ layer["w"] + layer["b"])
  return x @ layers[-1]["w"] + layers[-1]["b"]


def init_agent(key: Array, obs_dim: int, num_actions: int, *, hidden_size: int,
               target_width: int) -> dict[str, Any]:
  """Separate policy and prediction MLPs (2 tanh layers; PureJaxRL gains sqrt 2 / 0.01 / 1)."""
  k_pi, k_y = jax.random.split(key)
  return {"actor": _init_mlp(k_pi, [obs_dim, hidden_size, hidden_size, num_actions], 0.01),
          "pred": _init_mlp(k_y, [obs_dim, hidden_size, hidden_size, target_width], 1.0)}


def agent_apply(params, obs: Array) -> tuple[Array, Array]:
  """(policy logits [..., A], prediction logits [..., K])."""
  return _apply_mlp(params["actor"], obs), _apply_mlp(params["pred"], obs)


def lpg_network_targets(lpg_params, r, done, pi, y_t, y_tp1, step, lifetime, *,
                        progress_mode: str = "paper"):
  """The learned targets (`rlpost.meta.lpg.lpg_targets`)."""
  return lpg_lib.lpg_targets(lpg_params, r, done, pi, y_t, y_tp1, step, lifetime,
                             progress_mode=progress_mode)


def reinforce_targets(lpg_params, r, done, pi, y_t, y_tp1, step, lifetime, *, gamma: float = 0.99):
  """PG-equivalent targets: pi_hat_t = -G_t (return-to-go, cut at episode ends), y_hat = y_t.

  With these, grad of log pi * pi_hat is -G_t grad log pi, i.e. REINFORCE (Williams 1992), and the
  KL term vanishes. `lpg_params` etc. are ignored (same signature as the learned targets).
  """
  del lpg_params, pi, y_tp1, step, lifetime
  discount = gamma * (1.0 - done.astype(jnp.float32))
  _, returns = rl_core.gae_advantages(r.astype(jnp.float32), discount,
                                      jnp.zeros((r.shape[0] + 1,), jnp.float32), lambda_=1.0)
  return -returns, jax.lax.stop_gradient(y_t)


def make_agent_loss(config: LPGAgentConfig, target_fn: TargetFn):
  """`loss(agent_params, lpg_params, rollout, step, lifetime) -> (scalar, metrics)`.

  `rollout` holds time-major `[T, E]` arrays: obs, next_obs (the true s_{t+1}, also at episode
  ends), action, reward, done.
  """

  def loss_fn(agent_params, lpg_params, rollout, step, lifetime):
    logits, y_logits = agent_apply(agent_params, rollout["obs"])
    _, y_next_logits = agent_apply(agent_params, rollout["next_obs"])
    logp_all = jax.nn.log_softmax(logits)
    logp = jnp.take_along_axis(logp_all, rollout["action"][..., None], -1)[..., 0]
    y_t = jax.nn.softmax(y_logits)
    y_tp1 = jax.nn.softmax(y_next_logits)
    sg = jax.lax.stop_gradient
    pi_hat, y_hat = jax.vmap(target_fn, in_axes=(None, 1, 1, 1, 1, 1, None, None),
                             out_axes=(1, 1))(
        lpg_params, rollout["reward"], rollout["done"], sg(jnp.exp(logp)), sg(y_t), sg(y_tp1),
        step, lifetime)
    mask = jnp.ones(logp.shape, bool)
    per_step, aux = lpg_lib.lpg_agent_loss_per_step(logp, pi_hat, y_logits, y_hat, mask,
                                                    target_coef=config.target_coef)
    loss = rl_core.masked_mean(per_step, mask)
    return loss, {"loss": loss, "entropy": rl_core.masked_mean(
        rl_core.entropy_from_logits(logits), mask), **aux}

  return loss_fn


def make_lpg_train(config: LPGAgentConfig, *, target_fn: TargetFn | None = None):
  """Builds `train(key, lpg_params, lifetime=None) -> {"params", "final_return", "metrics"}`.

  `target_fn` defaults to the LPG network with `config.progress_mode`. The lifetime N is traced
  (<= config.num_updates); updates n >= N are discarded. `final_return` is the mean over envs of
  each env's last finished-episode return at update N - 1; `metrics` are per update.
  """
  if target_fn is None:
    target_fn = functools.partial(lpg_network_targets, progress_mode=config.progress_mode)
  env, env_params = ppo.make_env(config.env_name)
  obs_dim = int(env.observation_space(env_params).shape[0])
  num_actions = int(env.action_space(env_params).n)
  grad_fn = jax.value_and_grad(make_agent_loss(config, target_fn), has_aux=True)
  tx = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(config.lr))

  def train(key: Array, lpg_params: PyTree = None, lifetime: Array | int | None = None):
    lifetime = jnp.asarray(config.num_updates if lifetime is None else lifetime, jnp.int32)
    key, k_net, k_reset = jax.random.split(key, 3)
    params = init_agent(k_net, obs_dim, num_actions, hidden_size=config.hidden_size,
                        target_width=config.target_width)
    opt_state = tx.init(params)
    obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(
        jax.random.split(k_reset, config.num_envs), env_params)

    def env_step(carry, _):
      params, env_state, obs, key = carry
      key, k_act, k_step = jax.random.split(key, 3)
      logits, _ = agent_apply(params, obs)
      action = jax.random.categorical(k_act, logits)
      obs_next, env_state, reward, terminated, truncated, info = jax.vmap(
          env.step, in_axes=(0, 0, 0, None))(
              jax.random.split(k_step, config.num_envs), env_state, action, env_params)
      done = jnp.logical_or(terminated, truncated)
      out = {"obs": obs, "next_obs": info["final_observation"], "action": action,
             "reward": reward.astype(jnp.float32), "done": done,
             "episode_return": info["returned_episode_returns"]}
      return (params, env_state, obs_next, key), out

    def update(carry, step):
      params, opt_state, env_state, obs, key = carry
      (_, env_state, obs, key), rollout = jax.lax.scan(
          env_step, (params, env_state, obs, key), None, length=config.num_steps)
      (_, metrics), grads = grad_fn(params, lpg_params, rollout, step, lifetime)
      updates, new_opt_state = tx.update(grads, opt_state, params)
      new_params = optax.apply_updates(params, updates)
      alive = step < lifetime
      params, opt_state = jax.tree.map(lambda n, o: jnp.where(alive, n, o),
                                       (new_params, new_opt_state), (params, opt_state))
      metrics["last_return"] = jnp.mean(env_state.returned_episode_returns)
      return (params, opt_state, env_state, obs, key), metrics

    (params, *_), metrics = jax.lax.scan(
        update, (params, opt_state, env_state, obs, key), jnp.arange(config.num_updates))
    final_return = metrics["last_return"][jnp.clip(lifetime - 1, 0, config.num_updates - 1)]
    return {"params": params, "final_return": final_return, "metrics": metrics}

  return train


def make_population_fitness(config: LPGAgentConfig, *, seeds_per_member: int = 1,
                            fast_compile: bool = False):
  """Jitted `fitness(population [P, ...], member_keys [P], lifetimes [P]) -> final returns [P]`."""
  train = make_lpg_train(config)

  def member(params, key, lifetime):
    out = jax.vmap(train, in_axes=(0, None, None))(
        jax.random.split(key, seeds_per_member), params, lifetime)
    return jnp.mean(out["final_return"])

  return jax.jit(jax.vmap(member),
                 compiler_options=ppo.FAST_COMPILE_OPTIONS if fast_compile else None)


def meta_train_lpg(key: Array, config: LPGAgentConfig, es_config: es_lib.ESConfig, *,
                   init_params: PyTree | None = None,
                   callback: Callable[[dict[str, float]], None] | None = None,
                   fast_compile: bool = False) -> es_lib.MetaTrainResult:
  """Open_ES meta-training of the (TA-)LPG network (protocol of `rlpost.meta.es.meta_train`).

  History rows: `generation`, `return_mean/max/min` over the population (final returns after the
  sampled lifetimes: the meta-training curve), `lifetime_mean`, `sigma`, `seconds`.
  """
  if config.num_updates < es_config.max_lifetime:
    raise ValueError(f"LPGAgentConfig.num_updates={config.num_updates} must be >= "
                     f"ESConfig.max_lifetime={es_config.max_lifetime}")
  key, k_init = jax.random.split(key)
  if init_params is None:
    init_params = init_lpg_for(config, k_init)
  es = es_lib.make_open_es(es_config, init_params)
  es_params = es.default_params
  key, k_es = jax.random.split(key)
  state = es.init(k_es, init_params, es_params)
  fitness = make_population_fitness(config, seeds_per_member=es_config.seeds_per_member,
                                    fast_compile=fast_compile)
  history = []
  for generation in range(es_config.num_generations):
    t0 = time.perf_counter()
    key, k_ask, k_task, k_tell = jax.random.split(key, 4)
    population, state = es.ask(k_ask, state, es_params)
    member_keys, lifetimes = es_lib.sample_antithetic_tasks(
        k_task, es_config.population_size, min_lifetime=es_config.min_lifetime,
        max_lifetime=es_config.max_lifetime)
    returns = np.asarray(fitness(population, member_keys, lifetimes))
    if not np.all(np.isfinite(returns)):
      raise FloatingPointError(f"non-finite LPG fitness at generation {generation}: {returns}")
    state, _ = es.tell(k_tell, population, -jnp.asarray(returns), state, es_params)
    row = {"generation": generation, "return_mean": float(returns.mean()),
           "return_max": float(returns.max()), "return_min": float(returns.min()),
           "lifetime_mean": float(np.mean(np.asarray(lifetimes))), "sigma": float(state.std),
           "seconds": time.perf_counter() - t0}
    history.append(row)
    if callback is not None:
      callback(row)
  return es_lib.MetaTrainResult(mean_params=es.get_mean(state), history=history)


def evaluate_lpg(key: Array, config: LPGAgentConfig, lpg_params: PyTree, lifetimes, *,
                 num_seeds: int = 4, fast_compile: bool = False) -> dict[str, Any]:
  """Final returns of LPG-trained agents per lifetime: {str(N): {"mean", "stderr", "returns"}}.

  Seeds are `jax.random.split(key, num_seeds)` for every lifetime (paired across lifetimes).
  """
  if num_seeds < 1 or not lifetimes or min(lifetimes) < 1:
    raise ValueError(f"need num_seeds >= 1 and lifetimes >= 1; got {num_seeds}, {lifetimes}")
  config = dataclasses.replace(config, num_updates=max(lifetimes))
  train = make_lpg_train(config)
  keys = jax.random.split(key, num_seeds)
  grid_keys = jnp.concatenate([keys] * len(lifetimes))
  grid_life = jnp.repeat(jnp.asarray(lifetimes, jnp.int32), num_seeds)
  run = jax.jit(jax.vmap(lambda k, n: train(k, lpg_params, n)["final_return"]),
                compiler_options=ppo.FAST_COMPILE_OPTIONS if fast_compile else None)
  final = np.asarray(run(grid_keys, grid_life)).reshape(len(lifetimes), num_seeds)
  table = {}
  for n, r in zip(lifetimes, final):
    table[str(n)] = {"mean": float(r.mean()),
                     "stderr": float(r.std(ddof=1) / np.sqrt(len(r))) if len(r) > 1 else 0.0,
                     "returns": [float(x) for x in r]}
  return table
