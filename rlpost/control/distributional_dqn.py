"""A DQN-style categorical (C51) agent with stock augmentation on a gymnax env.

Paper: Pires, Rowland, Borsa, Guo, Khetarpal, Barreto, Abel, Munos, Dabney, "Optimizing Return
Distributions with Distributional Dynamic Programming", JMLR 2025, arXiv 2501.13028 (the deep
agent "DηN" = DQN + stock augmentation); categorical representation and projection from C51,
Bellemare, Dabney, Munos, "A Distributional Perspective on Reinforcement Learning", ICML 2017,
arXiv 1707.06887.

State augmentation: the observation carries the stock c_t, updated as

    c_{t+1} = (c_t + r_t) / gamma          (`rlpost.core.stock_update`),

so that c_0 + G_0 = gamma^t (c_t + G_t). The network outputs, per action, a categorical law of the
return-to-go G_t on a fixed support z_1..z_M given (s_t, c_t); the law of c_t + G_t is the same law
with atoms shifted by c_t. Greedy actions maximise an objective F of that law:

  * "expectation": F = E[c + G]  (standard RL; c only shifts it, so the argmax ignores c);
  * "cvar": F = E f(c + G) with f(x) = min(x, 0) / tau (`rlpost.core.cvar_stock_utility`). With
    c_0 = -b this is the Rockafellar-Uryasev form CVaR_tau(G) = max_b {b - E(b - G)^+ / tau}; at the
    start of an evaluation episode c_0 is chosen by the outer max over a grid,
    c_0* = argmax_{c_0} {-c_0 + max_a E f(c_0 + G_a(s_0, c_0))} (`start_objective`).

Target (C51, eq. 7 of Bellemare et al.): a* = argmax_a F(law at (s', c')) under the target net,
then the Cramer projection (`rlpost.core.categorical_projection`) of r + gamma (1 - terminal) z_j
onto the support; loss = cross-entropy to the projected target.

Choices / deviations (no official code exists): (a) the network models G_t given (s, c), not
c + G, so the support stays bounded while c grows like gamma^{-t}; the stock enters the network as
tanh(c / stock_scale); (b) during training each episode starts from a c_0 drawn uniformly from the
grid (so the network sees every threshold), evaluation uses the outer max; (c) with f(x) =
min(x, 0) / tau every action ties once c >= 0 (the threshold is met), so ties are broken by
`tie_break * E[G]`; (d) time-limit truncations bootstrap from the final observation; (e) a single
jitted `lax.scan` holds envs, a circular replay buffer and the updates (PureJaxRL DQN layout).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rlpost import core as rl_core
from rlpost.control import ppo

Array = jax.Array
OBJECTIVES = ("expectation", "cvar")


@dataclasses.dataclass(frozen=True)
class DQNConfig:
  """C51 + stock augmentation; defaults sized for CartPole-v1 on a CPU."""
  env_name: str = "CartPole-v1"
  objective: str = "expectation"
  tau: float = 0.25  # CVaR level
  num_atoms: int = 51
  v_min: float = 0.0  # support of the return-to-go G
  v_max: float = 100.0
  num_stocks: int = 11  # grid of c_0 in [-v_max, 0] for "cvar"
  stock_scale: float = 100.0
  tie_break: float = 1e-3
  gamma: float = 0.99
  num_envs: int = 8
  num_iterations: int = 5_000  # env steps per env
  buffer_size: int = 20_000
  batch_size: int = 64
  learning_starts: int = 1_000  # transitions in the buffer before updates start
  target_update_every: int = 250  # iterations
  lr: float = 5e-4
  max_grad_norm: float = 10.0
  eps_start: float = 1.0
  eps_end: float = 0.05
  eps_fraction: float = 0.5
  hidden_size: int = 64

  def __post_init__(self):
    if self.objective not in OBJECTIVES:
      raise ValueError(f"DQNConfig.objective must be one of {OBJECTIVES}; got {self.objective!r}")
    if not 0.0 < self.tau <= 1.0:
      raise ValueError(f"DQNConfig.tau must be in (0, 1]; got {self.tau!r}")
    if self.num_atoms < 2:
      raise ValueError(f"DQNConfig.num_atoms must be >= 2; got {self.num_atoms}")
    if self.v_max <= self.v_min:
      raise ValueError(f"DQNConfig.v_max={self.v_max} must be > v_min={self.v_min}")
    if not 0.0 < self.gamma <= 1.0:
      raise ValueError(f"DQNConfig.gamma must be in (0, 1]; got {self.gamma!r}")
    for name in ("num_stocks", "num_envs", "num_iterations", "buffer_size", "batch_size",
                 "target_update_every", "hidden_size"):
      if int(getattr(self, name)) < 1:
        raise ValueError(f"DQNConfig.{name} must be >= 1; got {getattr(self, name)!r}")
    if self.buffer_size < self.num_envs:
      raise ValueError(f"DQNConfig.buffer_size={self.buffer_size} must be >= num_envs")
    for name in ("lr", "stock_scale"):
      if getattr(self, name) <= 0:
        raise ValueError(f"DQNConfig.{name} must be > 0; got {getattr(self, name)!r}")
    if not 0.0 <= self.eps_end <= self.eps_start <= 1.0:
      raise ValueError("DQNConfig.eps_end/eps_start must satisfy 0 <= eps_end <= eps_start <= 1")
    if self.env_name not in gymnax.registered_envs:
      raise ValueError(f"DQNConfig.env_name {self.env_name!r} is not a gymnax env")

  @property
  def support(self) -> Array:
    return jnp.linspace(self.v_min, self.v_max, self.num_atoms)

  @property
  def stock_grid(self) -> Array:
    """Candidate c_0 values (c_0 = -b in the Rockafellar-Uryasev form); [0.] for expectation."""
    if self.objective == "expectation":
      return jnp.zeros((1,))
    return jnp.linspace(-self.v_max, 0.0, self.num_stocks)


# --------------------------------------------------------------------------------- network


def init_network(key: Array, obs_dim: int, num_actions: int, num_atoms: int, *,
                 hidden_size: int = 64) -> list[dict[str, Array]]:
  """MLP [obs, tanh(c / scale)] -> hidden -> hidden -> A x M logits (normal init, as PPO's)."""
  sizes = [obs_dim + 1, hidden_size, hidden_size, num_actions * num_atoms]
  keys = jax.random.split(key, len(sizes) - 1)
  return [{"w": jax.random.normal(k, (i, o)) * (jnp.sqrt(2.0) if n < len(sizes) - 2 else 0.01)
           / jnp.sqrt(i), "b": jnp.zeros((o,))}
          for n, (k, i, o) in enumerate(zip(keys, sizes[:-1], sizes[1:]))]


def network_apply(params, obs: Array, stock: Array, *, num_actions: int,
                  stock_scale: float) -> Array:
  """Log-probabilities of the return-to-go law, shape [..., A, M]."""
  x = jnp.concatenate([obs, jnp.tanh(stock / stock_scale)[..., None]], axis=-1)
  for layer in params[:-1]:
    x = jax.nn.relu(x @ layer["w"] + layer["b"])
  logits = x @ params[-1]["w"] + params[-1]["b"]
  logits = logits.reshape(logits.shape[:-1] + (num_actions, -1))
  return jax.nn.log_softmax(logits, axis=-1)


# ------------------------------------------------------------------------------ objectives


def law_objective(probs: Array, support: Array, stock: Array, *, objective: str,
                  tau: float = 0.25, tie_break: float = 0.0, centred: bool = False) -> Array:
  """F(law of c + G) for a categorical law of G: probs [..., M] on support [M], stock [...].

  "expectation": c + E[G]. "cvar": E min(c + G, 0) / tau (+ tie_break * E[G]), computed as
  (c + E min(G, -c)) / tau. `centred=True` drops the action-independent term (c, resp. c / tau):
  same argmax over actions, and no float32 cancellation when |c| >> G (used for greedy actions).
  """
  mean = rl_core.expectation(support, probs)
  stock = jnp.asarray(stock, jnp.float32)
  if objective == "expectation":
    return mean if centred else stock + mean
  if objective == "cvar":
    capped = jnp.minimum(support, -stock[..., None])  # min(G, -c) = min(c + G, 0) - c
    value = rl_core.expectation(capped, probs) / tau + tie_break * mean
    return value if centred else value + stock / tau
  raise ValueError(f"objective must be one of {OBJECTIVES}; got {objective!r}")


def start_objective(probs: Array, support: Array, stocks: Array, *, objective: str,
                    tau: float = 0.25) -> tuple[Array, Array]:
  """Outer max over c_0 at an episode start.

  Args:
    probs: [K, A, M] laws of G at (s_0, c_0 = stocks[k]) for each action.
    stocks: [K] candidate c_0.

  Returns:
    (value, index of the best c_0): for "cvar", max_k {-c_0k + max_a E f(c_0k + G_a)}, the
    Rockafellar-Uryasev CVaR_tau of the greedy law; for "expectation", max_a E[G_a] at k = 0.
  """
  per_action = law_objective(probs, support, stocks[:, None], objective=objective, tau=tau)
  per_stock = jnp.max(per_action, axis=-1) - stocks
  best = jnp.argmax(per_stock)
  return per_stock[best], best


def greedy_actions(params, obs: Array, stock: Array, config: DQNConfig, num_actions: int,
                   ) -> Array:
  """argmax_a F(law at (s, c)) for a batch of (obs [..., d], stock [...])."""
  logp = network_apply(params, obs, stock, num_actions=num_actions,
                       stock_scale=config.stock_scale)
  values = law_objective(jnp.exp(logp), config.support, stock[..., None],
                         objective=config.objective, tau=config.tau,
                         tie_break=config.tie_break, centred=True)
  return jnp.argmax(values, axis=-1)


def categorical_td_loss(params, target_params, batch: dict[str, Array], config: DQNConfig,
                        num_actions: int) -> tuple[Array, Array]:
  """Per-sample C51 cross-entropy to the projected target; returns (loss [B], Q-mean [B])."""
  support = config.support
  apply = lambda p, o, c: network_apply(p, o, c, num_actions=num_actions,
                                        stock_scale=config.stock_scale)
  next_logp = apply(target_params, batch["next_obs"], batch["next_stock"])  # [B, A, M]
  next_probs = jnp.exp(next_logp)
  next_values = law_objective(next_probs, support, batch["next_stock"][:, None],
                              objective=config.objective, tau=config.tau,
                              tie_break=config.tie_break, centred=True)
  a_star = jnp.argmax(next_values, axis=-1)
  p_star = jnp.take_along_axis(next_probs, a_star[:, None, None], axis=1)[:, 0]
  cont = config.gamma * (1.0 - batch["terminal"].astype(jnp.float32))
  target_locs = batch["reward"][:, None] + cont[:, None] * support
  target = jax.lax.stop_gradient(rl_core.categorical_projection(target_locs, p_star, support))
  logp = apply(params, batch["obs"], batch["stock"])
  logp_a = jnp.take_along_axis(logp, batch["action"][:, None, None], axis=1)[:, 0]
  loss = -jnp.sum(target * logp_a, axis=-1)
  return loss, rl_core.expectation(support, jnp.exp(logp_a))


# ------------------------------------------------------------------------------- training


def make_train(config: DQNConfig):
  """Builds `train(key) -> {"params", "metrics"}` (one jitted scan; vmap over seeds).

  `metrics` are per iteration: `loss`, `q_mean`, `epsilon`, `last_return` (mean over envs of the
  last finished-episode return).
  """
  env, env_params = ppo.make_env(config.env_name)
  obs_dim = int(env.observation_space(env_params).shape[0])
  num_actions = int(env.action_space(env_params).n)
  tx = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(config.lr))
  grid = config.stock_grid
  n = config.num_envs

  def loss_fn(params, target_params, batch):
    loss, q = categorical_td_loss(params, target_params, batch, config, num_actions)
    return jnp.mean(loss), jnp.mean(q)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def train(key: Array):
    key, k_net, k_reset, k_c0 = jax.random.split(key, 4)
    params = init_network(k_net, obs_dim, num_actions, config.num_atoms,
                          hidden_size=config.hidden_size)
    opt_state = tx.init(params)
    obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(k_reset, n),
                                                             env_params)
    stock = grid[jax.random.randint(k_c0, (n,), 0, grid.shape[0])]
    size = config.buffer_size
    buffer = {"obs": jnp.zeros((size, obs_dim)), "next_obs": jnp.zeros((size, obs_dim)),
              "stock": jnp.zeros((size,)), "next_stock": jnp.zeros((size,)),
              "action": jnp.zeros((size,), jnp.int32), "reward": jnp.zeros((size,)),
              "terminal": jnp.zeros((size,), bool)}
    decay_steps = max(1, int(config.eps_fraction * config.num_iterations))

    def iteration(carry, it):
      params, target_params, opt_state, buffer, env_state, obs, stock, key = carry
      key, k_eps, k_rand, k_step, k_c0, k_batch = jax.random.split(key, 6)
      frac = jnp.minimum(it / decay_steps, 1.0)
      eps = config.eps_start + frac * (config.eps_end - config.eps_start)
      greedy = greedy_actions(params, obs, stock, config, num_actions)
      random = jax.random.randint(k_rand, (n,), 0, num_actions)
      action = jnp.where(jax.random.uniform(k_eps, (n,)) < eps, random, greedy)
      obs_next, env_state, reward, terminated, truncated, info = jax.vmap(
          env.step, in_axes=(0, 0, 0, None))(jax.random.split(k_step, n), env_state, action,
                                             env_params)
      reward = reward.astype(jnp.float32)
      next_stock = rl_core.stock_update(stock, reward, discount=config.gamma)
      transition = {"obs": obs, "next_obs": info["final_observation"], "stock": stock,
                    "next_stock": next_stock, "action": action, "reward": reward,
                    "terminal": terminated}
      slots = (it * n + jnp.arange(n)) % size
      buffer = jax.tree.map(lambda b, x: b.at[slots].set(x), buffer, transition)
      done = jnp.logical_or(terminated, truncated)
      fresh = grid[jax.random.randint(k_c0, (n,), 0, grid.shape[0])]
      stock = jnp.where(done, fresh, next_stock)
      filled = jnp.minimum((it + 1) * n, size)
      idx = jax.random.randint(k_batch, (config.batch_size,), 0, filled)
      batch = jax.tree.map(lambda b: b[idx], buffer)
      (loss, q_mean), grads = grad_fn(params, target_params, batch)
      updates, new_opt_state = tx.update(grads, opt_state, params)
      learn = (it + 1) * n >= config.learning_starts
      params, opt_state = jax.tree.map(lambda a, b: jnp.where(learn, a, b),
                                       (optax.apply_updates(params, updates), new_opt_state),
                                       (params, opt_state))
      sync = (it % config.target_update_every) == 0
      target_params = jax.tree.map(lambda t, p: jnp.where(sync, p, t), target_params, params)
      metrics = {"loss": loss, "q_mean": q_mean, "epsilon": eps,
                 "last_return": jnp.mean(env_state.returned_episode_returns)}
      return (params, target_params, opt_state, buffer, env_state, obs_next, stock, key), metrics

    carry = (params, params, opt_state, buffer, env_state, obs, stock, key)
    (params, *_), metrics = jax.lax.scan(iteration, carry, jnp.arange(config.num_iterations))
    return {"params": params, "metrics": metrics}

  return train


def make_evaluate(config: DQNConfig, *, num_episodes: int = 64, max_steps: int | None = None):
  """`evaluate(params, key) -> {"return" [E], "discounted_return" [E], "c0" [E]}`.

  Greedy episodes; each starts from the c_0 chosen by `start_objective` at its first state. The
  returns are the undiscounted and gamma-discounted sums of rewards of the first episode.
  """
  env, env_params = ppo.make_env(config.env_name)
  num_actions = int(env.action_space(env_params).n)
  horizon = int(max_steps or env_params.max_steps_in_episode)
  grid = config.stock_grid

  def episode(params, key):
    k_reset, k_run = jax.random.split(key)
    obs, state = env.reset(k_reset, env_params)
    logp = network_apply(params, jnp.broadcast_to(obs, (grid.shape[0],) + obs.shape), grid,
                         num_actions=num_actions, stock_scale=config.stock_scale)
    _, best = start_objective(jnp.exp(logp), config.support, grid, objective=config.objective,
                              tau=config.tau)
    c0 = grid[best]

    def step(carry, k):
      obs, state, stock, alive, ret, disc_ret, t = carry
      action = greedy_actions(params, obs, stock, config, num_actions)
      obs, state, reward, terminated, truncated, _ = env.step(k, state, action, env_params)
      ret = ret + alive * reward
      disc_ret = disc_ret + alive * config.gamma**t * reward
      alive = alive * (1.0 - jnp.logical_or(terminated, truncated).astype(jnp.float32))
      stock = rl_core.stock_update(stock, reward, discount=config.gamma)
      return (obs, state, stock, alive, ret, disc_ret, t + 1.0), None

    init = (obs, state, c0, 1.0, 0.0, 0.0, 0.0)
    (_, _, _, _, ret, disc_ret, _), _ = jax.lax.scan(step, init, jax.random.split(k_run, horizon))
    return {"return": ret, "discounted_return": disc_ret, "c0": c0}

  def evaluate(params, key):
    return jax.vmap(episode, in_axes=(None, 0))(params, jax.random.split(key, num_episodes))

  return evaluate


def return_statistics(returns: np.ndarray, *, tau: float) -> dict[str, float]:
  """Mean and lower-tail CVaR_tau (`rlpost.core.cvar`, equal weights) of sampled returns."""
  returns = jnp.asarray(returns, jnp.float32)
  probs = jnp.full(returns.shape, 1.0 / returns.shape[0])
  return {"mean": float(jnp.mean(returns)),
          "cvar": float(rl_core.cvar(returns, probs, tau=tau)),
          "min": float(jnp.min(returns))}


def config_from_dict(values, **overrides) -> DQNConfig:
  """`DQNConfig(**values, **overrides)` with unknown fields reported by name."""
  fields = {f.name for f in dataclasses.fields(DQNConfig)}
  merged = {**dict(values), **overrides}
  unknown = sorted(set(merged) - fields)
  if unknown:
    raise ValueError(f"unknown config.dqn field(s) {unknown}; valid: {sorted(fields)}")
  return DQNConfig(**merged)


def run_experiment(config, *, log=print, fast_compile: bool = False) -> dict[str, Any]:
  """Trains one agent per `config.objectives` entry (`config.num_seeds` seeds vmapped) and
  evaluates greedy episodes. Returns {objective: {"curve" [I] (seed mean of last_return),
  "eval": {"return": stats, "discounted_return": stats}, "c0": mean chosen c_0, "seconds"}}.
  """
  import time  # pylint: disable=g-import-not-at-top
  if config.num_seeds < 1 or config.num_eval_episodes < 2:
    raise ValueError("config.num_seeds must be >= 1 and config.num_eval_episodes >= 2")
  options = ppo.FAST_COMPILE_OPTIONS if fast_compile else None
  results = {}
  for objective in config.objectives:
    start = time.perf_counter()
    cfg = config_from_dict(config.dqn, objective=objective, tau=config.tau)
    keys = jax.random.split(jax.random.key(config.seed), config.num_seeds)
    out = jax.jit(jax.vmap(make_train(cfg)), compiler_options=options)(keys)
    evaluate = make_evaluate(cfg, num_episodes=config.num_eval_episodes)
    ev = jax.jit(jax.vmap(evaluate), compiler_options=options)(
        out["params"], jax.random.split(jax.random.key(config.seed + 1), config.num_seeds))
    curve = np.asarray(out["metrics"]["last_return"]).mean(0)
    rets = np.asarray(ev["return"]).reshape(-1)
    disc = np.asarray(ev["discounted_return"]).reshape(-1)
    if not (np.all(np.isfinite(rets)) and np.all(np.isfinite(curve))):
      raise FloatingPointError(f"non-finite results for objective {objective!r}")
    results[objective] = {
        "curve": curve.tolist(),
        "eval": {"return": return_statistics(rets, tau=config.tau),
                 "discounted_return": return_statistics(disc, tau=config.tau)},
        "per_seed_mean_return": np.asarray(ev["return"]).mean(-1).tolist(),
        "c0_mean": float(np.mean(np.asarray(ev["c0"]))),
        "seconds": time.perf_counter() - start,
    }
    r = results[objective]["eval"]
    log(f"[{objective}] eval return mean {r['return']['mean']:.1f} CVaR_{config.tau} "
        f"{r['return']['cvar']:.1f}; discounted mean {r['discounted_return']['mean']:.2f} CVaR "
        f"{r['discounted_return']['cvar']:.2f} ({results[objective]['seconds']:.0f}s)")
  return results
