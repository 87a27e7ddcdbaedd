"""HNPG: hybrid natural policy gradient with offline data, on a combination lock.

Paper: Zhou, Sekhari, Song, Sun, "Offline Data Enhanced On-Policy Policy Gradient with Provable
Guarantees", 2023 (official code YifeiZhou02/HNPG, `trpo.py`).

Per iteration (finite horizon H, gamma = 1, one policy and one critic per step h):
  1. roll out the current policies on-policy; Monte-Carlo returns;
  2. for h = H-1 ... 0 fit Q_h on   (Q_h(s,a) - G)^2            on-policy returns
                                  + w (Q_h(s,a) - [r + V_{h+1}(s')])^2   offline fitted-Q targets
     where V_{h+1}(s') = E_{a' ~ pi_{h+1}} Q_{h+1}(s', a');
  3. advantages A = Q_h(s, a) - V_h(s) on the on-policy samples and at a~ ~ pi_h on offline states;
  4. one natural-gradient (TRPO) step per h on the union: conjugate gradient on Fisher-vector
     products (damping), step scaled to KL = max_kl, backtracking line search that accepts only
     steps with KL <= max_kl and a surrogate improvement.

Deviations (also in BUILD_NOTES.md): the critic and policy are linear in a one-hot(state, step)
feature plus a few noise features (the paper uses MLPs on rich observations); advantages use
Q - V directly instead of GAE(0.97) on the on-policy part (with exact per-step Q the two coincide
in expectation). With `offline_weight=0` and no offline data the method is per-step NPG.

The combination lock: states {good, dead} at each of H steps. In the good state only the secret
action a*_h keeps the agent on the good chain; anything else drops it into the absorbing dead
chain. Reward 1 arrives only for the correct final action, so uniform exploration succeeds with
probability A^-H: on-policy NPG alone almost never sees a reward, while the offline data (from
pi* with epsilon-greedy noise, epsilon = 1/H) covers the good chain.
"""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rlpost import core

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class CombinationLock:
  """A horizon-H combination lock with `num_actions` actions and `noise_dims` distractor features."""

  horizon: int = 10
  num_actions: int = 4
  noise_dims: int = 4
  seed: int = 0

  def __post_init__(self):
    if self.horizon < 1 or self.num_actions < 2:
      raise ValueError(f"need horizon >= 1 and num_actions >= 2; got horizon={self.horizon}, "
                       f"num_actions={self.num_actions}")

  @property
  def secret(self) -> Array:
    return jax.random.randint(jax.random.PRNGKey(self.seed), (self.horizon,), 0, self.num_actions)

  @property
  def feature_dim(self) -> int:
    return 2 + self.noise_dims

  def features(self, good: Array, key: Array) -> Array:
    """[good, dead, noise...] observation for a batch of `good` flags."""
    onehot = jax.nn.one_hot(jnp.where(good, 0, 1), 2)
    noise = jax.random.normal(key, good.shape + (self.noise_dims,))
    return jnp.concatenate([onehot, noise], axis=-1)

  def step(self, h: int, good: Array, action: Array) -> tuple[Array, Array]:
    """(next good flag, reward) for step h."""
    right = good & (action == self.secret[h])
    reward = jnp.where(right & (h == self.horizon - 1), 1.0, 0.0)
    return right, reward


class Trajectories(NamedTuple):
  """Per-step batches, time-major: obs [H, N, D], actions [H, N], rewards [H, N], good [H+1, N]."""

  obs: Array
  actions: Array
  rewards: Array
  next_obs: Array


def _logits(policy_h: Array, obs: Array) -> Array:
  return obs @ policy_h  # [N, D] @ [D, A]


def _q_values(critic_h: Array, obs: Array) -> Array:
  return obs @ critic_h  # [N, A]: a linear Q over (obs) per action


def init_params(env: CombinationLock) -> tuple[Array, Array]:
  """Zero-initialised per-step policies `[H, D, A]` (uniform) and critics `[H, D, A]`."""
  shape = (env.horizon, env.feature_dim, env.num_actions)
  return jnp.zeros(shape), jnp.zeros(shape)


def rollout(env: CombinationLock, policy: Array, key: Array, num: int, *,
            epsilon_greedy_secret: float | None = None) -> Trajectories:
  """Samples `num` episodes with the per-step policies (or with pi* and epsilon-greedy noise)."""
  good = jnp.ones(num, bool)
  obs_l, act_l, rew_l, nobs_l = [], [], [], []
  for h in range(env.horizon):
    key, k_obs, k_act, k_eps, k_next = jax.random.split(key, 5)
    obs = env.features(good, k_obs)
    if epsilon_greedy_secret is None:
      action = jax.random.categorical(k_act, _logits(policy[h], obs))
    else:
      rand = jax.random.randint(k_act, (num,), 0, env.num_actions)
      explore = jax.random.uniform(k_eps, (num,)) < epsilon_greedy_secret
      action = jnp.where(explore, rand, env.secret[h])
    good, reward = env.step(h, good, action)
    obs_l.append(obs)
    act_l.append(action)
    rew_l.append(reward)
    nobs_l.append(env.features(good, k_next))
  return Trajectories(jnp.stack(obs_l), jnp.stack(act_l), jnp.stack(rew_l), jnp.stack(nobs_l))


def make_offline_dataset(env: CombinationLock, key: Array, num_episodes: int) -> Trajectories:
  """Offline data from the optimal policy with epsilon-greedy noise, epsilon = 1/H (paper)."""
  return rollout(env, None, key, num_episodes, epsilon_greedy_secret=1.0 / env.horizon)


def _critic_loss(w: Array, obs_on, act_on, ret_on, obs_off, act_off, target_off,
                 offline_weight) -> Array:
  """(Q(s,a) - G)^2 on on-policy samples + w (Q(s,a) - target)^2 on offline samples (means)."""

  def sq(obs, act, target):
    q = jnp.take_along_axis(_q_values(w, obs), act[:, None], 1)[:, 0]
    return core.masked_mean(jnp.square(q - target), jnp.ones_like(target))  # 0 when empty

  return sq(obs_on, act_on, ret_on) + offline_weight * sq(obs_off, act_off, target_off)


def _fit_one_step(w: Array, data, *, steps: int, lr: float, offline_weight: float) -> Array:
  import optax  # pylint: disable=g-import-not-at-top

  opt = optax.adam(lr)

  def body(_, carry):
    w, state = carry
    g = jax.grad(_critic_loss)(w, *data, offline_weight)
    u, state = opt.update(g, state, w)
    return optax.apply_updates(w, u), state

  return jax.lax.fori_loop(0, steps, body, (w, opt.init(w)))[0]


_fit_one_step_jit = jax.jit(_fit_one_step, static_argnames=("steps", "lr", "offline_weight"))


def fit_critics(critic: Array, policy: Array, on: Trajectories | None, off: Trajectories | None,
                *, steps: int = 30, lr: float = 3e-2, offline_weight: float = 1.0) -> Array:
  """Backward critic fit, h = H-1 ... 0: on-policy MC returns plus offline fitted-Q targets.

  The offline target at step h bootstraps from the already-refitted critic of step h+1 under the
  current policy, V_{h+1}(s') = E_{a' ~ pi_{h+1}} Q_{h+1}(s', a'). Adam runs `steps` steps per h
  (paper: 30 steps at 3e-4 for an MLP; the linear critic here uses 3e-2).
  """
  horizon, dim, _ = critic.shape
  empty_obs = jnp.zeros((0, dim))
  empty = jnp.zeros((0,))
  empty_act = jnp.zeros((0,), jnp.int32)
  if on is not None:
    returns = jnp.flip(jnp.cumsum(jnp.flip(on.rewards, 0), 0), 0)  # [H, N], gamma = 1
  for h in reversed(range(horizon)):
    if on is not None:
      on_data = (on.obs[h], on.actions[h], returns[h])
    else:
      on_data = (empty_obs, empty_act, empty)
    if off is not None:
      target = off.rewards[h]
      if h < horizon - 1:
        pi_next = jax.nn.softmax(_logits(policy[h + 1], off.next_obs[h]))
        target = target + jnp.sum(pi_next * _q_values(critic[h + 1], off.next_obs[h]), axis=-1)
      off_data = (off.obs[h], off.actions[h], jax.lax.stop_gradient(target))
    else:
      off_data = (empty_obs, empty_act, empty)
    critic = critic.at[h].set(_fit_one_step_jit(critic[h], on_data + off_data, steps=steps, lr=lr,
                                                offline_weight=float(offline_weight)))
  return critic


def conjugate_gradient(fvp, b: Array, *, iters: int = 10, tol: float = 1e-10) -> Array:
  """Solves F x = b for a symmetric positive-definite F given as a matrix-vector product."""

  def body(_, carry):
    x, r, p, rr = carry
    fp = fvp(p)
    alpha = rr / jnp.maximum(jnp.vdot(p, fp), 1e-30)
    x = x + alpha * p
    r = r - alpha * fp
    rr_new = jnp.vdot(r, r)
    p = r + (rr_new / jnp.maximum(rr, 1e-30)) * p
    return jnp.where(rr > tol, x, carry[0]), r, p, rr_new

  x0 = jnp.zeros_like(b)
  x, *_ = jax.lax.fori_loop(0, iters, body, (x0, b, b, jnp.vdot(b, b)))
  return x


def _mean_kl(theta_old: Array, theta: Array, obs: Array) -> Array:
  lp_old = jax.nn.log_softmax(_logits(theta_old, obs))
  lp = jax.nn.log_softmax(_logits(theta, obs))
  return jnp.mean(jnp.sum(jnp.exp(lp_old) * (lp_old - lp), axis=-1))


def npg_step(theta: Array, obs: Array, actions: Array, advantages: Array, *, max_kl: float = 0.01,
             damping: float = 0.1, cg_iters: int = 10, backtracks: int = 10,
             accept_ratio: float = 0.1) -> tuple[Array, dict[str, Array]]:
  """One TRPO/NPG step for a softmax policy `theta [D, A]` on (obs, action, advantage) samples.

  Surrogate L(theta') = mean(exp(logp' - logp_old) A) (maximised). Direction d = F^-1 g by CG on
  Fisher-vector products (Hessian of the mean KL at theta, plus damping); step scaled so that the
  quadratic KL model equals max_kl; backtracking halves the step until the true KL <= max_kl and
  the improvement is >= accept_ratio of the linear prediction. Returns (new theta, info).
  """
  theta_old = jax.lax.stop_gradient(theta)
  logp_old = jnp.take_along_axis(jax.nn.log_softmax(_logits(theta_old, obs)), actions[:, None],
                                 1)[:, 0]
  adv = jax.lax.stop_gradient(advantages)

  def surrogate(t):  # the TRPO importance-weighted surrogate E[r A] (no clipping), maximised
    logp = jnp.take_along_axis(jax.nn.log_softmax(_logits(t, obs)), actions[:, None], 1)[:, 0]
    return jnp.mean(jnp.exp(logp - logp_old) * adv)

  g = jax.grad(surrogate)(theta).reshape(-1)
  shape = theta.shape

  def fvp(v):
    kl_grad = lambda t: jax.grad(lambda tt: _mean_kl(theta_old, tt, obs))(t).reshape(-1)
    return jax.jvp(kl_grad, (theta,), (v.reshape(shape),))[1] + damping * v

  d = conjugate_gradient(fvp, g, iters=cg_iters)
  shs = 0.5 * jnp.vdot(d, fvp(d))
  scale = jnp.sqrt(max_kl / jnp.maximum(shs, 1e-12))
  full = (scale * d).reshape(shape)
  expected = jnp.vdot(g, scale * d)
  base = surrogate(theta)

  def try_step(frac):
    cand = theta + frac * full
    improve = surrogate(cand) - base
    kl = _mean_kl(theta_old, cand, obs)
    ok = (kl <= max_kl) & (improve > accept_ratio * frac * expected) & (expected > 0)
    return ok, cand, kl

  fracs = 0.5 ** jnp.arange(backtracks)
  oks, cands, kls = jax.vmap(try_step)(fracs)
  first = jnp.argmax(oks)
  accepted = jnp.any(oks)
  new = jnp.where(accepted, cands[first], theta)
  return new, {"kl": jnp.where(accepted, kls[first], 0.0), "accepted": accepted}


@dataclasses.dataclass(frozen=True)
class HNPGConfig:
  iterations: int = 60
  batch: int = 256
  offline_episodes: int = 256
  use_offline: bool = True  # False = pure on-policy NPG
  on_policy: bool = True  # False = pure offline fitting (FQE + greedy policy improvement)
  offline_weight: float = 1.0
  critic_steps: int = 30
  max_kl: float = 0.01
  seed: int = 0


def success_rate(env: CombinationLock, policy: Array, key: Array, num: int = 512) -> float:
  traj = rollout(env, policy, key, num)
  return float(jnp.mean(jnp.sum(traj.rewards, axis=0)))


def train_hnpg(env: CombinationLock, config: HNPGConfig, *, log=None) -> dict[str, list[float]]:
  """Runs HNPG (or its ablations) and returns the success-rate curve per iteration."""
  if not (config.use_offline or config.on_policy):
    raise ValueError("at least one of use_offline / on_policy must be True")
  key = jax.random.PRNGKey(config.seed)
  policy, critic = init_params(env)
  key, k_off = jax.random.split(key)
  off = make_offline_dataset(env, k_off, config.offline_episodes) if config.use_offline else None
  step = jax.jit(lambda th, o, a, adv: npg_step(th, o, a, adv, max_kl=config.max_kl))
  curve = {"iteration": [], "success": [], "samples": []}
  for it in range(config.iterations):
    key, k_roll, k_eval = jax.random.split(key, 3)
    # Pure offline fitting uses no on-policy data in the critic or in the step.
    on = rollout(env, policy, k_roll, config.batch) if config.on_policy else None
    critic = fit_critics(critic, policy, on, off, steps=config.critic_steps,
                         offline_weight=config.offline_weight)
    for h in range(env.horizon):
      obs_parts, act_parts, adv_parts = [], [], []
      if config.on_policy:
        q = _q_values(critic[h], on.obs[h])
        v = jnp.sum(jax.nn.softmax(_logits(policy[h], on.obs[h])) * q, axis=-1)
        obs_parts.append(on.obs[h])
        act_parts.append(on.actions[h])
        adv_parts.append(jnp.take_along_axis(q, on.actions[h][:, None], 1)[:, 0] - v)
      if off is not None:
        key, k_a = jax.random.split(key)
        probs = jax.nn.softmax(_logits(policy[h], off.obs[h]))
        a_tilde = jax.random.categorical(k_a, jnp.log(probs + 1e-12))
        q = _q_values(critic[h], off.obs[h])
        v = jnp.sum(probs * q, axis=-1)
        obs_parts.append(off.obs[h])
        act_parts.append(a_tilde)
        adv_parts.append(jnp.take_along_axis(q, a_tilde[:, None], 1)[:, 0] - v)
      new_h, _ = step(policy[h], jnp.concatenate(obs_parts), jnp.concatenate(act_parts),
                      jnp.concatenate(adv_parts))
      policy = policy.at[h].set(new_h)
    sr = success_rate(env, policy, k_eval)
    curve["iteration"].append(it + 1)
    curve["success"].append(sr)
    curve["samples"].append((it + 1) * config.batch * env.horizon * int(config.on_policy))
    if log is not None:
      log(it + 1, sr)
  return curve


def exact_q(env: CombinationLock, policy: Array) -> np.ndarray:
  """Exact Q^pi_h(good, a) by backward induction on the noise-free good state (for tests)."""
  horizon, a = env.horizon, env.num_actions
  good_obs = jnp.concatenate([jnp.array([1.0, 0.0]), jnp.zeros(env.noise_dims)])[None]
  q = np.zeros((horizon, a))
  v_next = 0.0
  for h in reversed(range(horizon)):
    for act in range(a):
      right = act == int(env.secret[h])
      q[h, act] = (1.0 if (right and h == horizon - 1) else 0.0) + (v_next if right and
                                                                   h < horizon - 1 else 0.0)
    pi = np.asarray(jax.nn.softmax(_logits(policy[h], good_obs))[0])
    v_next = float(pi @ q[h])
  return q
