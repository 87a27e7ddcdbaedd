"""The discover-objective pipeline: meta-train LPO / TA-LPO with ES, then the generalisation table.

Used by `experiments/discover_objective.py` and the notebook; kept here so both import one thing.
Spec: Lu et al. 2022 (arXiv 2210.05639) and Jackson et al. 2024 (arXiv 2402.05828), see
`rlpost.meta.es` for the ES protocol and `rlpost.meta.evaluate` for the table.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping

import jax

from rlpost.control import ppo
from rlpost.meta import drift as drift_lib
from rlpost.meta import es as es_lib
from rlpost.meta import evaluate as eval_lib

LEARNED = ("lpo", "ta_lpo")
FIXED = ("ppo", "dpo")


def ppo_config_from_dict(values: Mapping[str, Any], **overrides) -> ppo.PPOConfig:
  """`PPOConfig(**values, **overrides)`, with unknown field names reported by name."""
  fields = {f.name for f in dataclasses.fields(ppo.PPOConfig)}
  merged = {**dict(values), **overrides}
  unknown = sorted(set(merged) - fields)
  if unknown:
    raise ValueError(f"unknown PPO config field(s) {unknown}; valid: {sorted(fields)}")
  return ppo.PPOConfig(**merged)


def es_config_from_dict(values: Mapping[str, Any]) -> es_lib.ESConfig:
  fields = {f.name for f in dataclasses.fields(es_lib.ESConfig)}
  unknown = sorted(set(values) - fields)
  if unknown:
    raise ValueError(f"unknown ES config field(s) {unknown}; valid: {sorted(fields)}")
  return es_lib.ESConfig(**dict(values))


def objective_fns(*, ppo_init: bool = True, clip_eps: float = 0.2) -> dict[str, ppo.DriftFn]:
  """Name -> DriftFn for "ppo", "dpo", "lpo", "ta_lpo"."""
  return {
      "ppo": functools.partial(drift_lib.ppo_drift, clip_eps=clip_eps),
      "dpo": drift_lib.dpo_drift,
      "lpo": functools.partial(drift_lib.lpo_drift, ppo_init=ppo_init, clip_eps=clip_eps),
      "ta_lpo": functools.partial(drift_lib.ta_lpo_drift, ppo_init=ppo_init, clip_eps=clip_eps),
  }


def run_discovery(config, *, callback: Callable[[str, dict], None] | None = None,
                  log: Callable[[str], None] = print,
                  on_meta_trained: Callable[[dict], None] | None = None) -> dict[str, Any]:
  """Meta-trains the objectives in `config.objectives`, then evaluates them against PPO and DPO.

  `config` is the ConfigDict of `experiments/configs/discover_objective.py`. `callback(name, row)`
  sees every ES generation; `on_meta_trained(params)` gets the discovered parameters (name ->
  pytree) before the (long) evaluation starts.

  Returns:
    {"history": {name: [rows]}, "params": {name: pytree}, "generalisation": {env: {"lifetimes",
    "table", "curves"}}} where each table maps objective -> lifetime -> {mean, stderr, returns}.
  """
  for name in config.objectives:
    if name not in LEARNED:
      raise ValueError(f"config.objectives entries must be in {LEARNED}; got {name!r}")
  es_config = es_config_from_dict(config.es)
  meta_ppo = ppo_config_from_dict(config.ppo, env_name=config.train_env).with_lifetime(
      es_config.max_lifetime)
  fns = objective_fns(ppo_init=config.ppo_init, clip_eps=meta_ppo.clip_eps)
  key = jax.random.key(config.seed)
  key, *k_init = jax.random.split(key, 1 + len(config.objectives))
  objectives = {
      name: (fns[name], drift_lib.init_lpo_params(
          k, hidden_size=config.drift_hidden_size, time_aware=(name == "ta_lpo"),
          output_scale=config.init_output_scale))
      for name, k in zip(config.objectives, k_init)
  }
  log(f"meta-training {list(objectives)} on {config.train_env}: population "
      f"{es_config.population_size}, {es_config.num_generations} generations, lifetimes "
      f"[{es_config.min_lifetime}, {es_config.max_lifetime}] updates of "
      f"{meta_ppo.batch_size} steps")
  key, k_meta = jax.random.split(key)
  results = es_lib.meta_train(k_meta, objectives, meta_ppo, es_config, callback=callback,
                              fast_compile=config.fast_compile)

  if on_meta_trained is not None:
    on_meta_trained({name: r.mean_params for name, r in results.items()})
  evaluated = {name: (fns[name], None) for name in FIXED}
  evaluated.update({name: (fns[name], results[name].mean_params) for name in results})
  generalisation = {}
  for env_name, lifetimes in ((config.train_env, config.eval.train_env_lifetimes),
                              (config.eval.heldout_env, config.eval.heldout_env_lifetimes)):
    if not lifetimes:
      continue
    log(f"evaluating {list(evaluated)} on {env_name}, lifetimes {list(lifetimes)}, "
        f"{config.eval.num_seeds} seeds")
    key, k_eval = jax.random.split(key)
    eval_ppo = ppo_config_from_dict(config.ppo, env_name=env_name)
    out = eval_lib.evaluate_objectives(k_eval, eval_ppo, evaluated, list(lifetimes),
                                       num_seeds=config.eval.num_seeds,
                                       fast_compile=config.fast_compile)
    generalisation[env_name] = {"lifetimes": list(lifetimes), **out}
  return {
      "history": {name: r.history for name, r in results.items()},
      "params": {name: r.mean_params for name, r in results.items()},
      "generalisation": generalisation,
  }
