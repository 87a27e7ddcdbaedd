"""Meta-training learned objectives with evosax 0.3 Open_ES over vmapped inner PPO lifetimes.

Each generation (Jackson et al., "Discovering Temporally-Aware Reinforcement Learning
Algorithms", ICLR 2024, arXiv 2402.05828; LPO, Lu et al., NeurIPS 2022, arXiv 2210.05639):

  1. `Open_ES.ask` samples P = 2K objective parameters theta_i = mu +- sigma z_k (antithetic; evosax
     lays the pairs out as halves [z, -z], not interleaved);
  2. each antithetic pair gets one task: an agent seed and a lifetime N drawn log-uniformly from
     [min_lifetime, max_lifetime] updates ("antithetic task sampling": both members of a pair train
     on the same task, so their difference measures the perturbation, not the task);
  3. every member trains `seeds_per_member` PPO agents for N updates with its objective (one jitted
     program, vmapped over members and seeds; the lifetime is a traced input, see
     `rlpost.control.ppo.make_train`), and its fitness is the mean final return;
  4. `Open_ES.tell` gets -return (evosax minimises) and applies its fitness shaping: centred
     ranks by default (rank-based, so the update is invariant to monotone transforms of the
     returns), or z-scores as in LPO.

Deviations: groove scores each antithetic pair by the winner (1/0); we use evosax's centred-rank
shaping over the whole population (the brief's "rank-based fitness via evosax"), and one lifetime
distribution per run instead of groove's per-environment level sampler.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Mapping

from evosax.algorithms import Open_ES
from evosax.core import fitness_shaping
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rlpost.control import ppo
from rlpost.meta import drift as drift_lib

Array = jax.Array
PyTree = Any

FITNESS_SHAPING = {
    "centered_rank": fitness_shaping.centered_rank_fitness_shaping_fn,
    "z_score": fitness_shaping.standardize_fitness_shaping_fn,
}


@dataclasses.dataclass(frozen=True)
class ESConfig:
  """Open_ES settings; defaults follow groove's TA-LPG ES (lr 1e-2, decay .999, sigma 0.1)."""
  population_size: int = 32
  num_generations: int = 64
  learning_rate: float = 1e-2
  lr_decay: float = 0.999
  lr_limit: float = 1e-5
  sigma_init: float = 0.1
  sigma_decay: float = 1.0
  sigma_limit: float = 0.1
  seeds_per_member: int = 1
  min_lifetime: int = 8
  max_lifetime: int = 32
  fitness_shaping: str = "centered_rank"

  def __post_init__(self):
    if self.population_size < 2 or self.population_size % 2:
      raise ValueError(f"ESConfig.population_size must be even and >= 2 (antithetic pairs); "
                       f"got {self.population_size}")
    for name in ("num_generations", "seeds_per_member", "min_lifetime"):
      if getattr(self, name) < 1:
        raise ValueError(f"ESConfig.{name} must be >= 1; got {getattr(self, name)}")
    if self.max_lifetime < self.min_lifetime:
      raise ValueError(f"ESConfig.max_lifetime={self.max_lifetime} must be >= min_lifetime="
                       f"{self.min_lifetime}")
    for name in ("learning_rate", "sigma_init"):
      if getattr(self, name) <= 0:
        raise ValueError(f"ESConfig.{name} must be > 0; got {getattr(self, name)}")
    if self.fitness_shaping not in FITNESS_SHAPING:
      raise ValueError(f"ESConfig.fitness_shaping must be one of {sorted(FITNESS_SHAPING)}; "
                       f"got {self.fitness_shaping!r}")


def make_open_es(config: ESConfig, solution: PyTree) -> Open_ES:
  """evosax 0.3 `Open_ES` with antithetic sampling, Adam with decayed lr, and sigma schedule."""
  lr = optax.exponential_decay(config.learning_rate, transition_steps=1,
                               decay_rate=config.lr_decay, end_value=config.lr_limit)
  std = optax.exponential_decay(config.sigma_init, transition_steps=1,
                                decay_rate=config.sigma_decay, end_value=config.sigma_limit)
  if config.sigma_decay == 1.0:
    std = optax.constant_schedule(config.sigma_init)
  return Open_ES(population_size=config.population_size, solution=solution,
                 use_antithetic_sampling=True, optimizer=optax.adam(lr), std_schedule=std,
                 fitness_shaping_fn=FITNESS_SHAPING[config.fitness_shaping])


def sample_lifetimes(key: Array, num: int, *, min_lifetime: int, max_lifetime: int) -> Array:
  """`num` integer lifetimes, log-uniform in [min_lifetime, max_lifetime] (groove's vrandlife)."""
  u = jax.random.uniform(key, (num,), minval=math.log(min_lifetime),
                         maxval=math.log(max_lifetime + 1))
  return jnp.clip(jnp.floor(jnp.exp(u)), min_lifetime, max_lifetime).astype(jnp.int32)


def sample_antithetic_tasks(key: Array, population_size: int, *, min_lifetime: int,
                            max_lifetime: int) -> tuple[Array, Array]:
  """Per-member (agent key, lifetime); member i and i + P/2 (an evosax antithetic pair) share
  both, matching the [z, -z] halves layout of `Open_ES.ask`."""
  half = population_size // 2
  k_agent, k_life = jax.random.split(key)
  keys = jax.random.split(k_agent, half)
  lifetimes = sample_lifetimes(k_life, half, min_lifetime=min_lifetime,
                               max_lifetime=max_lifetime)
  return jnp.concatenate([keys, keys]), jnp.concatenate([lifetimes, lifetimes])


def make_population_fitness(ppo_config: ppo.PPOConfig, drift_fn: ppo.DriftFn, *,
                            seeds_per_member: int = 1, fast_compile: bool = False,
                            ) -> Callable[[PyTree, Array, Array], Array]:
  """Jitted `fitness(population_params, member_keys [P], lifetimes [P]) -> final returns [P]`.

  `ppo_config.num_updates` must be >= the largest lifetime (it is the scan length).
  `fast_compile` compiles with `ppo.FAST_COMPILE_OPTIONS` (smoke runs).
  """
  train = ppo.make_train(ppo_config, drift_fn=drift_fn)

  def member(params, key, lifetime):
    out = jax.vmap(train, in_axes=(0, None, None))(
        jax.random.split(key, seeds_per_member), params, lifetime)
    return jnp.mean(out["final_return"])

  return jax.jit(jax.vmap(member),
                 compiler_options=ppo.FAST_COMPILE_OPTIONS if fast_compile else None)


@dataclasses.dataclass
class MetaTrainResult:
  mean_params: PyTree  # the ES mean after the last generation (the discovered objective)
  history: list[dict[str, float]]  # one row per generation


def meta_train(key: Array, objectives: Mapping[str, tuple[ppo.DriftFn, PyTree]],
               ppo_config: ppo.PPOConfig, es_config: ESConfig, *,
               callback: Callable[[str, dict[str, float]], None] | None = None,
               fast_compile: bool = False) -> dict[str, MetaTrainResult]:
  """Open_ES meta-training of one or more objectives, in lockstep.

  Args:
    key: PRNG key.
    objectives: name -> (drift_fn, init_params); one independent Open_ES per objective.
    ppo_config: the inner loop; `num_updates` must be >= `es_config.max_lifetime`.
    es_config: ES settings (population, generations, lifetime range, ...).
    callback: called with (name, history row) after every generation.
    fast_compile: compile the inner loop with `ppo.FAST_COMPILE_OPTIONS` (smoke runs).

  All objectives' populations are evaluated by one compiled program (the drifts are joined with
  `switch_drift` and the members of every population are vmapped together) on the same antithetic
  tasks, so the objectives are compared on common random numbers.

  Returns:
    name -> MetaTrainResult. History rows have `generation`, `return_mean` / `return_max` /
    `return_min` over that objective's population (final returns: the meta-training curve),
    `lifetime_mean`, `sigma` and `seconds` (wall time of the whole generation).
  """
  if ppo_config.num_updates < es_config.max_lifetime:
    raise ValueError(f"ppo_config.num_updates={ppo_config.num_updates} must be >= "
                     f"ESConfig.max_lifetime={es_config.max_lifetime}")
  names = list(objectives)
  num, pop = len(names), es_config.population_size
  strategies, states = [], []
  es_params = None
  for name in names:
    es = make_open_es(es_config, objectives[name][1])
    es_params = es.default_params
    key, k_init = jax.random.split(key)
    strategies.append(es)
    states.append(es.init(k_init, objectives[name][1], es_params))
  fitness = make_population_fitness(
      ppo_config, drift_lib.switch_drift([objectives[n][0] for n in names]),
      seeds_per_member=es_config.seeds_per_member, fast_compile=fast_compile)
  index = jnp.repeat(jnp.arange(num, dtype=jnp.int32), pop)
  history = {name: [] for name in names}
  for generation in range(es_config.num_generations):
    t0 = time.perf_counter()
    key, k_task, *k_es = jax.random.split(key, 2 + 2 * num)
    populations = []
    for i, es in enumerate(strategies):
      population, states[i] = es.ask(k_es[2 * i], states[i], es_params)
      populations.append(population)
    # Branch j's parameters, tiled over every objective's members (only members of objective j
    # read them).
    branch_params = tuple(
        jax.tree.map(lambda x: jnp.concatenate([x] * num), p) for p in populations)
    member_keys, lifetimes = sample_antithetic_tasks(
        k_task, pop, min_lifetime=es_config.min_lifetime, max_lifetime=es_config.max_lifetime)
    returns = fitness((index, branch_params), jnp.concatenate([member_keys] * num),
                      jnp.concatenate([lifetimes] * num))
    returns = np.asarray(returns).reshape(num, pop)
    if not np.all(np.isfinite(returns)):
      raise FloatingPointError(f"non-finite fitness at generation {generation}: {returns}")
    seconds = time.perf_counter() - t0
    for i, (name, es) in enumerate(zip(names, strategies)):
      states[i], _ = es.tell(k_es[2 * i + 1], populations[i], -jnp.asarray(returns[i]),
                             states[i], es_params)
      row = {
          "generation": generation,
          "return_mean": float(np.mean(returns[i])),
          "return_max": float(np.max(returns[i])),
          "return_min": float(np.min(returns[i])),
          "lifetime_mean": float(np.mean(np.asarray(lifetimes))),
          "sigma": float(states[i].std),
          "seconds": seconds,
      }
      history[name].append(row)
      if callback is not None:
        callback(name, row)
  return {name: MetaTrainResult(mean_params=es.get_mean(state), history=history[name])
          for name, es, state in zip(names, strategies, states)}
