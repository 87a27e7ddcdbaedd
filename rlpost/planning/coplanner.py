"""COPlanner: uncertainty-aware policy-guided MPC over a learned ensemble dynamics model.

Paper: Wang et al., "COPlanner: Plan to Roll Out Conservatively but to Explore Optimistically for
Model-Based RL", ICLR 2024, arXiv 2310.07220 (official code si0wang/COPlanner, `mpc_select_action`).

From a state s, K candidate first actions are drawn from the policy; each is rolled out H steps in
the ensemble with the policy acting, and scored

    score_k = sum_{i<H} gamma_r^i r_i  -/+  rate * sum_{i<H} gamma_u^i u_i,

u_i being the disagreement of the ensemble (mean over output dimensions of the std across the
members' sampled predictions). Model rollouts for policy learning use -conservative_rate (avoid
model error); real-environment exploration uses +optimistic_rate (go where the model is unsure but
returns look high). The first action of the best candidate is executed.

The ensemble here is a plain pytree of E Gaussian MLPs (vmapped), predicting (delta_state, reward).
"""

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import optax

Array = jax.Array
PolicyFn = Callable[[Array, Array], Array]  # (obs [N, ds], key) -> actions [N, da]


@dataclasses.dataclass(frozen=True)
class EnsembleConfig:
  obs_dim: int
  action_dim: int
  num_members: int = 5
  hidden: int = 64
  min_logstd: float = -5.0
  max_logstd: float = 1.0


def _init_mlp(key: Array, sizes: list[int]) -> list[dict[str, Array]]:
  layers = []
  for k, (a, b) in zip(jax.random.split(key, len(sizes) - 1), zip(sizes[:-1], sizes[1:])):
    layers.append({"w": jax.random.normal(k, (a, b)) * jnp.sqrt(1.0 / a), "b": jnp.zeros(b)})
  return layers


def init_ensemble(config: EnsembleConfig, key: Array) -> list[dict[str, Array]]:
  """E independently initialised members, stacked on a leading axis."""
  out = 2 * (config.obs_dim + 1)  # mean and log-std of (delta_state, reward)
  sizes = [config.obs_dim + config.action_dim, config.hidden, config.hidden, out]
  return jax.vmap(lambda k: _init_mlp(k, sizes))(jax.random.split(key, config.num_members))


def _member_forward(params, obs: Array, action: Array, config: EnsembleConfig):
  x = jnp.concatenate([obs, action], axis=-1)
  for layer in params[:-1]:
    x = jax.nn.silu(x @ layer["w"] + layer["b"])
  out = x @ params[-1]["w"] + params[-1]["b"]
  mean, logstd = jnp.split(out, 2, axis=-1)
  return mean, jnp.clip(logstd, config.min_logstd, config.max_logstd)


def ensemble_predict(params, obs: Array, action: Array, key: Array, config: EnsembleConfig
                     ) -> tuple[Array, Array]:
  """Sampled (delta_state ++ reward) per member, `[E, N, ds + 1]`, and the disagreement `[N]`.

  u = mean over output dimensions of the std across members' sampled predictions (official code).
  """
  mean, logstd = jax.vmap(lambda p: _member_forward(p, obs, action, config))(params)
  sample = mean + jnp.exp(logstd) * jax.random.normal(key, mean.shape)
  return sample, jnp.mean(jnp.std(sample, axis=0), axis=-1)


def _member_nll(params, obs, action, next_obs, reward, config: EnsembleConfig) -> Array:
  target = jnp.concatenate([next_obs - obs, reward[:, None]], axis=-1)
  mean, logstd = _member_forward(params, obs, action, config)
  return jnp.mean(0.5 * jnp.square((target - mean) / jnp.exp(logstd)) + logstd)


def ensemble_nll(params, obs: Array, action: Array, next_obs: Array, reward: Array,
                 config: EnsembleConfig) -> Array:
  """Gaussian negative log-likelihood of (delta_state, reward), summed over members."""
  per_member = jax.vmap(lambda p: _member_nll(p, obs, action, next_obs, reward, config))(params)
  return jnp.sum(per_member)


def fit_ensemble(params, data: dict[str, Array], config: EnsembleConfig, key: Array, *,
                 steps: int = 200, batch: int = 256, lr: float = 1e-3,
                 size: Array | None = None):
  """Adam on the ensemble NLL; each member sees its own bootstrap minibatch. Returns
  (params, final loss).

  `size` (optional, may be traced) limits sampling to the first `size` rows, so a fixed-capacity
  replay buffer can be passed under jit; by default every row is used. The optimiser state is
  fresh on each call.
  """
  opt = optax.adam(lr)
  n = data["obs"].shape[0] if size is None else jnp.maximum(size, 1)

  def step(carry, k):
    p, state = carry
    idx = jax.random.randint(k, (config.num_members, batch), 0, n)

    def loss(pp):
      return jnp.sum(jax.vmap(lambda m, i: _member_nll(
          m, data["obs"][i], data["action"][i], data["next_obs"][i], data["reward"][i],
          config))(pp, idx))

    value, g = jax.value_and_grad(loss)(p)
    u, state = opt.update(g, state, p)
    return (optax.apply_updates(p, u), state), value

  (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), jax.random.split(key, steps))
  return params, losses[-1]


def plan_scores(params, policy: PolicyFn, obs: Array, first_actions: Array, key: Array,
                config: EnsembleConfig, *, horizon: int = 5, gamma_r: float = 0.97,
                gamma_u: float = 0.97) -> tuple[Array, Array]:
  """Discounted model return and discounted uncertainty of each candidate `[K]` (single state).

  Each step uses one member's sample chosen at random (as MBPO-style rollouts do) for the next
  state and reward, and the ensemble disagreement for u.
  """
  k = first_actions.shape[0]
  s = jnp.broadcast_to(obs, (k, obs.shape[-1]))

  def step(carry, xs):
    s, a, ret, unc = carry
    i, key_i = xs
    k_pred, k_member, k_pi = jax.random.split(key_i, 3)
    sample, u = ensemble_predict(params, s, a, k_pred, config)
    member = jax.random.randint(k_member, (k,), 0, config.num_members)
    pick = sample[member, jnp.arange(k)]
    s_next = s + pick[:, :-1]
    r = pick[:, -1]
    ret = ret + (gamma_r ** i) * r
    unc = unc + (gamma_u ** i) * u
    a_next = policy(s_next, k_pi)
    return (s_next, a_next, ret, unc), None

  init = (s, first_actions, jnp.zeros(k), jnp.zeros(k))
  xs = (jnp.arange(horizon, dtype=jnp.float32), jax.random.split(key, horizon))
  (_, _, ret, unc), _ = jax.lax.scan(step, init, xs)
  return ret, unc


def coplanner_select_action(params, policy: PolicyFn, obs: Array, key: Array,
                            config: EnsembleConfig, *, rate: float, num_candidates: int = 5,
                            horizon: int = 5, gamma_r: float = 0.97, gamma_u: float = 0.97
                            ) -> tuple[Array, dict[str, Array]]:
  """Uncertainty-aware policy-guided MPC for one state.

  `rate` is signed: -conservative_rate (paper 2) when generating model rollouts for policy
  learning, +optimistic_rate (paper 1) when acting in the real environment. rate = 0 picks the
  candidate with the highest model return. Defaults K = 5, H = 5, gamma_r = gamma_u = 0.97 (MBPO
  variant of the official config).

  Returns:
    (chosen first action `[da]`, info with `returns`, `uncertainty`, `scores`, `index`).
  """
  k_cand, k_plan = jax.random.split(key)
  obs_k = jnp.broadcast_to(obs, (num_candidates, obs.shape[-1]))
  first = policy(obs_k, k_cand)
  ret, unc = plan_scores(params, policy, obs, first, k_plan, config, horizon=horizon,
                         gamma_r=gamma_r, gamma_u=gamma_u)
  scores = ret + rate * unc
  best = jnp.argmax(scores)
  return first[best], {"returns": ret, "uncertainty": unc, "scores": scores, "index": best}
