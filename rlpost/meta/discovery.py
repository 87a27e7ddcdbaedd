"""The discover-objective pipeline: meta-train LPO / TA-LPO (or LPG / TA-LPG) with ES, then the
generalisation table against PPO.

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
from rlpost.meta import lpg_train

LEARNED = ("lpo", "ta_lpo")
FIXED = ("ppo", "dpo")
LPG_OBJECTIVES = ("lpg", "ta_lpg")


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
    With `config.family == "lpg"` the work is done by `run_lpg_discovery` (same output layout).
  """
  family = config.get("family", "lpo")
  if family == "lpg":
    return run_lpg_discovery(config, callback=callback, log=log, on_meta_trained=on_meta_trained)
  if family != "lpo":
    raise ValueError(f"config.family must be 'lpo' or 'lpg'; got {family!r}")
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


def lpg_config_from_dict(values: Mapping[str, Any], **overrides) -> lpg_train.LPGAgentConfig:
  """`LPGAgentConfig(**values, **overrides)`, with unknown field names reported by name."""
  fields = {f.name for f in dataclasses.fields(lpg_train.LPGAgentConfig)}
  merged = {**dict(values), **overrides}
  unknown = sorted(set(merged) - fields)
  if unknown:
    raise ValueError(f"unknown config.lpg field(s) {unknown}; valid: {sorted(fields)}")
  return lpg_train.LPGAgentConfig(**merged)


def run_lpg_discovery(config, *, callback: Callable[[str, dict], None] | None = None,
                      log: Callable[[str], None] = print,
                      on_meta_trained: Callable[[dict], None] | None = None) -> dict[str, Any]:
  """Meta-trains LPG ("lpg", no progress inputs) and/or TA-LPG ("ta_lpg") with Open_ES, then
  compares the discovered rules with PPO (same envs x steps per update) across lifetimes.

  TA-LPG's progress inputs follow `config.lpg_progress_mode` ("paper": n/N, log N; "raw":
  groove's raw step and lifetime). Output layout as `run_discovery`.
  """
  for name in config.objectives:
    if name not in LPG_OBJECTIVES:
      raise ValueError(f"config.objectives entries must be in {LPG_OBJECTIVES} when "
                       f"config.family == 'lpg'; got {name!r}")
  es_config = es_config_from_dict(config.es)
  key = jax.random.key(config.seed)
  history, params, agent_configs = {}, {}, {}
  for name in config.objectives:
    mode = "none" if name == "lpg" else config.lpg_progress_mode
    agent = lpg_config_from_dict(config.lpg, env_name=config.train_env, progress_mode=mode,
                                 num_updates=es_config.max_lifetime)
    agent_configs[name] = agent
    log(f"meta-training {name} (progress inputs: {mode}) on {config.train_env}: population "
        f"{es_config.population_size}, {es_config.num_generations} generations, lifetimes "
        f"[{es_config.min_lifetime}, {es_config.max_lifetime}] updates of "
        f"{agent.num_envs * agent.num_steps} steps")
    key, k_meta = jax.random.split(key)
    result = lpg_train.meta_train_lpg(
        k_meta, agent, es_config, fast_compile=config.fast_compile,
        callback=None if callback is None else functools.partial(callback, name))
    history[name], params[name] = result.history, result.mean_params
  if on_meta_trained is not None:
    on_meta_trained(params)
  lifetimes = list(config.eval.train_env_lifetimes)
  generalisation = {}
  if lifetimes:
    log(f"evaluating ppo + {list(params)} on {config.train_env}, lifetimes {lifetimes}, "
        f"{config.eval.num_seeds} seeds")
    key, k_eval = jax.random.split(key)
    first = agent_configs[config.objectives[0]]
    eval_ppo = ppo_config_from_dict(config.ppo, env_name=config.train_env,
                                    num_envs=first.num_envs, num_steps=first.num_steps)
    out = eval_lib.evaluate_objectives(
        k_eval, eval_ppo, {"ppo": (objective_fns()["ppo"], None)}, lifetimes,
        num_seeds=config.eval.num_seeds, fast_compile=config.fast_compile)
    table = dict(out["table"])
    for name in params:
      table[name] = lpg_train.evaluate_lpg(k_eval, agent_configs[name], params[name], lifetimes,
                                           num_seeds=config.eval.num_seeds,
                                           fast_compile=config.fast_compile)
    generalisation[config.train_env] = {"lifetimes": lifetimes, "table": table, "curves": {}}
  return {"history": history, "params": params, "generalisation": generalisation}
