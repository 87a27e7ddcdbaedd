"""Deep IWOCS: incremental worst-case search with PPO as the static solver (parametric CartPole).

Paper: A. Zouitine, M. Geist, E. Rachelson, "Solving robust MDPs as a sequence of static RL
problems" (IWOCS / Deep-IWOCS), 2024, arXiv 2410.06212. Tabular variant: `rlpost.planning.iwocs`.

The uncertainty set is a box of physical parameters xi of gymnax CartPole-v1 (default: pole half
length, pole mass, force magnitude around the nominal 0.5, 0.1, 10). With U_0 = {xi_0} (nominal):

  1. static solve: train PPO (`rlpost.control.ppo.make_train`) on the model xi_i -> actor-critic
     pi_i, V_i, added to the policy set;
  2. robust policy on the set, "greedy against the set's worst": in state s use the member
     j*(s) = argmin_j V_j(s) (the lowest value estimate) and act greedily with its actor (the
     paper's lowest-value rule with critics in place of tabular values);
  3. worst-case search xi_{i+1} = argmin_{xi in box} J(pi_i; xi) with evosax 0.3 CMA-ES over
     z in R^d, xi = low + (high - low) sigmoid(z); J = mean undiscounted return of greedy episodes
     with common random numbers (the same episode keys for every candidate);
  4. U_{i+1} = U_i + {xi_{i+1}}; repeat.

Choices / deviations (the deep trust rule is only sketched in the paper's summary): (a) no
predictive-coding trust indicators: every critic is trusted everywhere; (b) the paper's deep
variant uses SAC; here PPO from rlpost.control (discrete CartPole); (c) the search result is
min(best CMA-ES candidate, nominal model) under common random numbers, so the reported worst case
of a policy is never above its nominal return; (d) PPO learns on xi through `make_train`'s
`train(..., env_params=...)` argument: the model's gymnax `EnvParams` are traced inputs
(`make_model_train`), so one compiled program trains on any model in the box.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

from evosax.algorithms import CMA_ES
import jax
import jax.numpy as jnp
import numpy as np

from rlpost.control import ppo

Array = jax.Array
PyTree = Any


@dataclasses.dataclass(frozen=True)
class CartPoleUncertainty:
  """A box over CartPole physical parameters (names are gymnax `EnvParams` fields)."""
  names: tuple[str, ...] = ("length", "masspole", "force_mag")
  low: tuple[float, ...] = (0.25, 0.05, 5.0)
  high: tuple[float, ...] = (1.0, 0.5, 15.0)
  max_steps: int = 200  # episode cap used for training and evaluation

  def __post_init__(self):
    allowed = ("length", "masspole", "masscart", "force_mag", "gravity")
    if not self.names or any(n not in allowed for n in self.names):
      raise ValueError(f"CartPoleUncertainty.names must be a subset of {allowed}; got {self.names}")
    if len(self.low) != len(self.names) or len(self.high) != len(self.names):
      raise ValueError("CartPoleUncertainty.low/high must have one entry per name")
    if any(lo <= 0 or hi <= lo for lo, hi in zip(self.low, self.high)):
      raise ValueError(f"CartPoleUncertainty needs 0 < low < high; got {self.low}, {self.high}")
    if self.max_steps < 1:
      raise ValueError(f"CartPoleUncertainty.max_steps must be >= 1; got {self.max_steps}")

  @property
  def nominal(self) -> Array:
    _, params = ppo.make_env("CartPole-v1")
    return jnp.asarray([getattr(params, n) for n in self.names], jnp.float32)

  def clip(self, xi: Array) -> Array:
    return jnp.clip(xi, jnp.asarray(self.low), jnp.asarray(self.high))

  def from_unconstrained(self, z: Array) -> Array:
    low, high = jnp.asarray(self.low), jnp.asarray(self.high)
    return low + (high - low) * jax.nn.sigmoid(z)

  def env_params(self, xi: Array):
    """gymnax CartPole `EnvParams` for the model xi (derived masses kept consistent)."""
    _, params = ppo.make_env("CartPole-v1")
    values = dict(zip(self.names, [xi[i] for i in range(len(self.names))]))
    params = params.replace(max_steps_in_episode=self.max_steps, **values)
    return params.replace(total_mass=params.masspole + params.masscart,
                          polemass_length=params.masspole * params.length)


def make_model_train(ppo_config: ppo.PPOConfig, uncertainty: CartPoleUncertainty):
  """`train(key, xi) -> ppo outputs`: PPO on the CartPole model xi (traced, one compile).

  The model's `EnvParams` (`uncertainty.env_params(xi)`, episode cap `uncertainty.max_steps`) go
  to `ppo.make_train`'s `train(key, env_params=...)`, so xi may be a traced value.
  """
  if ppo_config.env_name != "CartPole-v1":
    raise ValueError(f"deep IWOCS models CartPole-v1; got ppo env {ppo_config.env_name!r}")
  inner = ppo.make_train(ppo_config)

  def train(key: Array, xi: Array):
    return inner(key, env_params=uncertainty.env_params(xi))

  return train


class PolicySet(NamedTuple):
  """Stacked actor-critic params [M, ...] of which the first `count` are in the set."""
  params: PyTree
  count: Array


def set_action(policy_set: PolicySet, obs: Array, *, activation: str = "tanh") -> Array:
  """Lowest-value rule: greedy action of the member whose critic is lowest at `obs`."""
  logits, values = jax.vmap(lambda p: ppo.actor_critic_apply(p, obs, activation=activation))(
      policy_set.params)
  members = jnp.arange(values.shape[0])
  j = jnp.argmin(jnp.where(members < policy_set.count, values, jnp.inf))
  return jnp.argmax(logits[j], axis=-1)


def make_evaluate(uncertainty: CartPoleUncertainty, *, num_episodes: int = 16,
                  activation: str = "tanh"):
  """`evaluate(policy_set, xi, key) -> mean return` of greedy episodes on the model xi."""
  env, _ = ppo.make_env("CartPole-v1")

  def episode(policy_set, env_params, key):
    k_reset, k_run = jax.random.split(key)
    obs, state = env.reset(k_reset, env_params)

    def step(carry, k):
      obs, state, alive, ret = carry
      action = set_action(policy_set, obs, activation=activation)
      obs, state, reward, terminated, truncated, _ = env.step(k, state, action, env_params)
      ret = ret + alive * reward
      alive = alive * (1.0 - jnp.logical_or(terminated, truncated).astype(jnp.float32))
      return (obs, state, alive, ret), None

    (_, _, _, ret), _ = jax.lax.scan(step, (obs, state, 1.0, 0.0),
                                     jax.random.split(k_run, uncertainty.max_steps))
    return ret

  def evaluate(policy_set, xi, key):
    env_params = uncertainty.env_params(xi)
    keys = jax.random.split(key, num_episodes)
    return jnp.mean(jax.vmap(episode, in_axes=(None, None, 0))(policy_set, env_params, keys))

  return evaluate


def make_worst_case_search(uncertainty: CartPoleUncertainty, *, population_size: int = 8,
                           num_generations: int = 8, num_episodes: int = 16,
                           std_init: float = 1.0, activation: str = "tanh"):
  """Jitted `search(policy_set, key, eval_key) -> (xi_worst, value)` by CMA-ES (minimising).

  Every candidate is scored with the same `eval_key` (common random numbers); the nominal model is
  scored too and returned if no candidate is worse.
  """
  evaluate = make_evaluate(uncertainty, num_episodes=num_episodes, activation=activation)
  dim = len(uncertainty.names)
  template = jnp.zeros((dim,), jnp.float32)
  es = CMA_ES(population_size=population_size, solution=template)
  es_params = es.default_params.replace(std_init=jnp.asarray(std_init, jnp.float32))

  @jax.jit
  def search(policy_set: PolicySet, key: Array, eval_key: Array):
    fitness = lambda z: evaluate(policy_set, uncertainty.from_unconstrained(z), eval_key)
    k_init, key = jax.random.split(key)
    state = es.init(k_init, template, es_params)

    def generation(state, key):
      k_ask, k_tell = jax.random.split(key)
      population, state = es.ask(k_ask, state, es_params)
      values = jax.vmap(fitness)(population)
      state, _ = es.tell(k_tell, population, values, state, es_params)
      return state, None

    state, _ = jax.lax.scan(generation, state, jax.random.split(key, num_generations))
    xi_best = uncertainty.from_unconstrained(state.best_solution)
    v_best = evaluate(policy_set, xi_best, eval_key)
    xi_nom = uncertainty.nominal
    v_nom = evaluate(policy_set, xi_nom, eval_key)
    worse = v_best < v_nom
    return jnp.where(worse, xi_best, xi_nom), jnp.where(worse, v_best, v_nom)

  return search, evaluate


def iwocs_deep(key: Array, ppo_config: ppo.PPOConfig, uncertainty: CartPoleUncertainty, *,
               num_iterations: int = 2, population_size: int = 8, num_generations: int = 8,
               num_episodes: int = 16, log=print) -> dict[str, Any]:
  """Deep IWOCS (steps 1-4 of the module docstring); the nominal PPO is the set after step 1.

  Returns a dict with `models` [I+1, d] (xi_0 nominal, then the worst cases found),
  `search_values` [I] (worst-case return of the set before each addition), `policy_set` (the
  final set), `nominal_set` (the nominal PPO alone), `train_returns` [I+1] (PPO's final training
  return on each model), and the final comparison `worst_case` = {"nominal_ppo": (xi, value),
  "iwocs": (xi, value)} and `nominal_model_return` = {"nominal_ppo", "iwocs"}, searched with a
  fresh key and common evaluation episodes.
  """
  if num_iterations < 0:
    raise ValueError(f"num_iterations must be >= 0; got {num_iterations}")
  ppo_config = dataclasses.replace(ppo_config, env_name="CartPole-v1")
  train = jax.jit(make_model_train(ppo_config, uncertainty))
  search, evaluate = make_worst_case_search(
      uncertainty, population_size=population_size, num_generations=num_generations,
      num_episodes=num_episodes, activation=ppo_config.activation)
  evaluate = jax.jit(evaluate)
  size = num_iterations + 1
  key, k_train, k_eval = jax.random.split(key, 3)
  xi = uncertainty.nominal
  out = train(k_train, xi)
  stacked = jax.tree.map(lambda x: jnp.stack([x] * size), out["params"])
  policy_set = PolicySet(stacked, jnp.asarray(1, jnp.int32))
  nominal_set = policy_set
  models, search_values = [np.asarray(xi)], []
  train_returns = [float(out["final_return"])]
  log(f"[iwocs] model 0 (nominal) {np.round(np.asarray(xi), 3)}: PPO train return "
      f"{train_returns[-1]:.1f}")
  for i in range(num_iterations):
    key, k_search, k_train = jax.random.split(key, 3)
    xi, value = search(policy_set, k_search, k_eval)
    search_values.append(float(value))
    models.append(np.asarray(xi))
    out = train(k_train, xi)
    train_returns.append(float(out["final_return"]))
    stacked = jax.tree.map(lambda s, p: s.at[i + 1].set(p), policy_set.params, out["params"])
    policy_set = PolicySet(stacked, jnp.asarray(i + 2, jnp.int32))
    log(f"[iwocs] iteration {i}: set worst case {value:.1f} at {np.round(np.asarray(xi), 3)}; "
        f"PPO train return on it {train_returns[-1]:.1f}")
  key, k_final, k_final_eval = jax.random.split(key, 3)
  worst = {}
  nominal_return = {}
  for name, s in (("nominal_ppo", nominal_set), ("iwocs", policy_set)):
    xi_w, v_w = search(s, k_final, k_final_eval)
    worst[name] = (np.asarray(xi_w), float(v_w))
    nominal_return[name] = float(evaluate(s, uncertainty.nominal, k_final_eval))
  return {"models": np.stack(models), "search_values": np.asarray(search_values),
          "policy_set": policy_set, "nominal_set": nominal_set,
          "train_returns": np.asarray(train_returns), "worst_case": worst,
          "nominal_model_return": nominal_return}


# ------------------------------------------------------------------------ experiment runners


def random_rmdp(seed: int, *, num_states: int = 5, num_actions: int = 2, num_vertices: int = 3,
                discount: float = 0.9):
  """A random sa-rectangular RMDP: (nominal TabularMDP, vertices [J, S, A, S'])."""
  from rlpost.core.distributional import TabularMDP  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  vertices = rng.dirichlet(np.full(num_states, 0.5),
                           size=(num_vertices, num_states, num_actions)).astype(np.float32)
  rewards = rng.uniform(-1, 1, size=(num_states, num_actions, num_states)).astype(np.float32)
  mdp = TabularMDP(jnp.asarray(vertices[0]), jnp.asarray(rewards), jnp.zeros(num_states, bool),
                   discount)
  return mdp, jnp.asarray(vertices)


def run_tabular(config, *, log=print) -> dict[str, Any]:
  """Tabular IWOCS vs robust VI and the nominal VI policy on `config.num_problems` random RMDPs.

  Returns {"rows": [per problem: nominal / iwocs / robust_vi worst-case start values, and the
  IWOCS set-worst curve]}.
  """
  from rlpost.planning import iwocs as iwocs_tab  # pylint: disable=g-import-not-at-top
  from rlpost.planning import tabular  # pylint: disable=g-import-not-at-top
  if config.num_problems < 1:
    raise ValueError(f"config.num_problems must be >= 1; got {config.num_problems}")
  rows = []
  for seed in range(config.num_problems):
    mdp, vertices = random_rmdp(seed, num_states=config.num_states,
                                num_actions=config.num_actions,
                                num_vertices=config.num_vertices)
    mu0 = jnp.full(config.num_states, 1.0 / config.num_states)
    v_robust, _ = tabular.robust_value_iteration(vertices, mdp)
    _, q_nom = tabular.value_iteration(mdp)
    nominal_policy = jnp.argmax(q_nom, -1)
    result = iwocs_tab.iwocs(mdp, vertices, mu0, jax.random.PRNGKey(seed),
                             num_iterations=config.num_iterations,
                             population_size=config.population_size,
                             num_generations=config.num_generations)
    worst = lambda pi: float(mu0 @ tabular.robust_policy_evaluation(pi, vertices, mdp))
    row = {"problem": seed, "nominal_worst": worst(nominal_policy),
           "iwocs_worst": worst(result.policy), "robust_vi": float(mu0 @ v_robust),
           "set_worst_values": [float(x) for x in result.set_worst_values],
           "search_values": [float(x) for x in result.search_values]}
    rows.append(row)
    log(f"[tabular] problem {seed}: worst-case start value nominal {row['nominal_worst']:.3f}  "
        f"IWOCS {row['iwocs_worst']:.3f}  robust VI {row['robust_vi']:.3f}")
  return {"rows": rows}


def run_deep(config, *, log=print) -> dict[str, Any]:
  """Deep IWOCS on parametric CartPole; `config.ppo` holds `PPOConfig` fields."""
  fields = {f.name for f in dataclasses.fields(ppo.PPOConfig)}
  unknown = sorted(set(config.ppo) - fields)
  if unknown:
    raise ValueError(f"unknown config.ppo field(s) {unknown}; valid: {sorted(fields)}")
  ppo_config = ppo.PPOConfig(env_name="CartPole-v1", **dict(config.ppo))
  uncertainty = CartPoleUncertainty(names=tuple(config.uncertainty.names),
                                    low=tuple(config.uncertainty.low),
                                    high=tuple(config.uncertainty.high),
                                    max_steps=config.uncertainty.max_steps)
  out = iwocs_deep(jax.random.key(config.seed), ppo_config, uncertainty,
                   num_iterations=config.num_iterations, population_size=config.population_size,
                   num_generations=config.num_generations, num_episodes=config.num_episodes,
                   log=log)
  return {
      "names": list(uncertainty.names),
      "models": out["models"].tolist(),
      "search_values": out["search_values"].tolist(),
      "train_returns": out["train_returns"].tolist(),
      "worst_case": {k: {"xi": v[0].tolist(), "return": v[1]}
                     for k, v in out["worst_case"].items()},
      "nominal_model_return": out["nominal_model_return"],
  }
