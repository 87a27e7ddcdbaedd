"""Policy-gradient training loop for the variance-reduced optimizer comparison.

Paper: Fatkhullin, Barakat, Kireeva, He, "Stochastic Policy Gradient Methods: Improved Sample
Complexity for Fisher-non-degenerate Policies", ICML 2023, arXiv 2302.01734 (N-PG-IGT, eq. of
normalised momentum with implicit gradient transport; (N)-HARPG, Hessian-aided recursive momentum).

Compares vanilla REINFORCE (GPOMDP + SGD), normalised momentum (N-MPG), N-PG-IGT and N-HARPG on
gymnax CartPole-v1 and a linear-quadratic control task. Policies are linear (softmax for CartPole,
Gaussian with fixed std for LQ); the gradient is GPOMDP (discounted rewards-to-go, no baseline);
the optimizers come from `rlpost.core.optim`. Each (env, method) trains `num_seeds` seeds vmapped
in one jitted `lax.scan`. Used by `experiments/pg_optimizers.py` (the binary only does I/O).

Deviations: step-size schedules are inferred (lr / (1 + t)^power for the normalised methods); the
N-HARPG Hessian-vector product samples a second batch at the interpolation point (2x
trajectories per iteration, counted in the sample complexity).
"""
import time
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rlpost.core import optim

METHODS = ("reinforce", "n_momentum", "n_pg_igt", "n_harpg")


# ------------------------------------------------------------------------------ envs


class Task:
  """A fixed-horizon episodic task with a linear policy (reset, step, log-prob, sample)."""

  def __init__(self, name, horizon, action_std=0.3):
    self.name, self.horizon, self.action_std = name, horizon, action_std
    if name == "cartpole":
      import gymnax  # pylint: disable=g-import-not-at-top
      self.env, self.env_params = gymnax.make("CartPole-v1")
      self.obs_dim, self.out_dim = 4, 2
    elif name == "lq":
      self.a_mat = jnp.array([[1.0, 0.1], [0.0, 1.0]])  # double integrator, dt = 0.1
      self.b_mat = jnp.array([[0.0], [0.1]])
      self.obs_dim, self.out_dim = 2, 1
    else:
      raise ValueError(f"config.envs: unknown env {name!r} (use 'cartpole' or 'lq')")

  def init_params(self):
    return {"w": jnp.zeros((self.obs_dim, self.out_dim)), "b": jnp.zeros(self.out_dim)}

  def log_prob(self, params, obs, action):
    out = obs @ params["w"] + params["b"]
    if self.name == "cartpole":
      return jax.nn.log_softmax(out)[action]
    z = (action - out[0]) / self.action_std
    return -0.5 * z**2 - jnp.log(self.action_std) - 0.5 * jnp.log(2 * jnp.pi)

  def sample(self, params, obs, key):
    out = obs @ params["w"] + params["b"]
    if self.name == "cartpole":
      return jax.random.categorical(key, out)
    return out[0] + self.action_std * jax.random.normal(key)

  def rollout(self, params, key):
    """One episode of ``horizon`` steps: (obs[T, d], actions[T], rewards[T]) with 0 after done."""
    reset_key, key = jax.random.split(key)
    if self.name == "cartpole":
      obs, state = self.env.reset(reset_key, self.env_params)
    else:
      obs = state = jax.random.uniform(reset_key, (2,), minval=-1.0, maxval=1.0)

    def step(carry, key):
      obs, state, alive = carry
      act_key, env_key = jax.random.split(key)
      action = self.sample(params, obs, act_key)
      if self.name == "cartpole":
        next_obs, next_state, reward, terminated, truncated, _ = self.env.step(
            env_key, state, action, self.env_params)
        done = jnp.logical_or(terminated, truncated)
      else:
        u = jnp.clip(action, -5.0, 5.0)
        reward = -(jnp.sum(state**2) + 0.1 * u**2)
        next_state = self.a_mat @ state + self.b_mat[:, 0] * u
        next_state = next_state + 0.01 * jax.random.normal(env_key, (2,))
        next_obs, done = next_state, jnp.array(False)
      out = (obs, action, reward * alive)
      return (next_obs, next_state, alive * (1.0 - done.astype(jnp.float32))), out

    _, (obs_t, act_t, r_t) = jax.lax.scan(
        step, (obs, state, jnp.array(1.0)), jax.random.split(key, self.horizon))
    return obs_t, act_t, r_t


def rewards_to_go(r_t, discount):
  """sum_{t' >= t} gamma^{t'} r_{t'} (GPOMDP weights, reverse scan)."""
  disc = discount ** jnp.arange(r_t.shape[0])
  def body(acc, x):
    acc = acc + x
    return acc, acc
  _, out = jax.lax.scan(body, 0.0, disc * r_t, reverse=True)
  return out


# --------------------------------------------------------------------------- training


def _per_traj_fns(task, batch, discount):
  """Per-trajectory loss -Phi_i (GPOMDP surrogate) and log p(tau_i) as functions of params."""
  obs, actions, rewards = batch
  weights = jax.vmap(rewards_to_go, in_axes=(0, None))(rewards, discount)

  def logp_t(params):
    return jax.vmap(jax.vmap(task.log_prob, in_axes=(None, 0, 0)), in_axes=(None, 0, 0))(
        params, obs, actions)

  def loss_i(params):
    return -jnp.sum(logp_t(params) * weights, axis=-1)

  def logp_i(params):
    return jnp.sum(logp_t(params), axis=-1)

  return loss_i, logp_i


def make_optimizer(method, lr, config):
  """The optax transform for ``method``; lr decays as lr / (1 + t)^power for normalised ones."""
  power = config.lr_decay_power
  schedule = lambda t: lr / (1.0 + t) ** power
  eta = {} if config.momentum == "paper" else {"momentum": float(config.momentum)}
  if method == "reinforce":
    return optax.sgd(lr)
  if method == "n_momentum":
    return optim.normalized_momentum(schedule, **eta)
  if method == "n_pg_igt":
    return optim.npg_igt(schedule, **eta)
  if method == "n_harpg":
    return optim.harpg(schedule, **eta)
  raise ValueError(f"config.methods: unknown method {method!r}; choose from {METHODS}")


def make_train(task, method, config):
  """Returns (train(key) -> mean episode return per iteration [I], trajectories per iteration)."""
  if method not in METHODS:
    raise ValueError(f"config.methods: unknown method {method!r}; choose from {METHODS}")
  lr_table = getattr(config, task.name).lr
  if method not in lr_table:
    raise ValueError(f"config.{task.name}.lr has no learning rate for method {method!r}")
  lr = float(lr_table[method])
  tx = make_optimizer(method, lr, config)
  batch_size, discount = config.batch_size, config.discount

  def sample(params, key):
    return jax.vmap(task.rollout, in_axes=(None, 0))(params, jax.random.split(key, batch_size))

  def train(key):
    params = task.init_params()
    opt_state = tx.init(params)

    def iteration(carry, key):
      params, opt_state = carry
      k_batch, k_q, k_hat = jax.random.split(key, 3)
      batch = sample(params, k_batch)
      loss_i, _ = _per_traj_fns(task, batch, discount)
      grads = jax.grad(lambda p: jnp.mean(loss_i(p)))(params)
      if method == "n_harpg":
        point, direction = optim.harpg_interpolation(params, opt_state, k_q)
        hat_loss_i, hat_logp_i = _per_traj_fns(task, sample(point, k_hat), discount)
        hvp = optim.policy_hessian_vector_product(hat_loss_i, hat_logp_i, point, direction)
        updates, opt_state = tx.update(grads, opt_state, params, hvp=hvp)
      else:
        updates, opt_state = tx.update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
      episode_return = jnp.mean(jnp.sum(batch[2], axis=-1))
      return (params, opt_state), episode_return

    _, returns = jax.lax.scan(iteration, (params, opt_state),
                              jax.random.split(key, config.num_iterations))
    return returns

  per_iteration = batch_size * (2 if method == "n_harpg" else 1)
  return train, per_iteration


def run(config, *, log=print, callback=None):
  """Trains every (env, method); returns {env: {method: dict(returns [S, I], trajectories [I])}}."""
  for field in ("num_seeds", "num_iterations", "batch_size"):
    if int(config[field]) < 1:
      raise ValueError(f"config.{field} must be >= 1, got {config[field]}")
  if not 0.0 < config.discount <= 1.0:
    raise ValueError(f"config.discount must be in (0, 1], got {config.discount}")
  results = {}
  key = jax.random.PRNGKey(config.seed)
  for env_name in config.envs:
    env_cfg = getattr(config, env_name, None)
    if env_cfg is None:
      raise ValueError(f"config.envs: no config block for env {env_name!r}")
    task = Task(env_name, int(env_cfg.horizon), float(env_cfg.get("action_std", 0.3)))
    results[env_name] = {}
    for method in config.methods:
      start = time.perf_counter()
      train, per_iteration = make_train(task, method, config)
      # zlib.crc32, not hash(): str hashes change between processes (PYTHONHASHSEED).
      stream = zlib.crc32(f"{env_name}/{method}".encode()) % (2**31)
      keys = jax.random.split(jax.random.fold_in(key, stream), config.num_seeds)
      returns = np.asarray(jax.jit(jax.vmap(train))(keys))
      if not np.all(np.isfinite(returns)):
        raise FloatingPointError(f"non-finite return for {env_name}/{method}")
      trajectories = per_iteration * np.arange(1, config.num_iterations + 1)
      results[env_name][method] = dict(returns=returns, trajectories=trajectories,
                                       seconds=time.perf_counter() - start)
      if callback is not None:
        callback(env_name, method, results[env_name][method])
      log(f"[{env_name}] {method:11s} final return {returns[:, -1].mean():9.2f}  "
          f"({time.perf_counter() - start:.1f}s)")
  return results


def trajectories_to_threshold(returns, trajectories, threshold, window=10):
  """First trajectory count at which the seed-mean return (moving average) reaches threshold."""
  mean = returns.mean(axis=0)
  window = max(1, min(window, mean.shape[0]))
  smooth = np.convolve(mean, np.ones(window) / window, mode="valid")
  hit = np.nonzero(smooth >= threshold)[0]
  return int(trajectories[hit[0] + window - 1]) if hit.size else None


def summarize(results, thresholds=None, tail_fraction=0.1):
  """Per (env, method): final return (last 10% of iterations; mean/std over seeds) and the
  trajectories needed to reach the env's threshold (None if never reached)."""
  thresholds = thresholds or {}
  table = {}
  for env_name, methods in results.items():
    table[env_name] = {}
    for method, res in methods.items():
      returns = res["returns"]
      tail = max(1, int(returns.shape[1] * tail_fraction))
      final = returns[:, -tail:].mean(axis=1)
      threshold = thresholds.get(env_name)
      table[env_name][method] = dict(
          final_return_mean=float(final.mean()), final_return_std=float(final.std()),
          trajectories=int(res["trajectories"][-1]), seconds=float(res["seconds"]),
          threshold=threshold,
          trajectories_to_threshold=None if threshold is None else trajectories_to_threshold(
              returns, res["trajectories"], threshold))
  return table
