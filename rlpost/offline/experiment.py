"""The offline-RL experiment behind `experiments/offline.py` (and the notebook).

For every (env, dataset kind) it loads or generates the D4RL-style dataset, then runs the
requested methods and scores them with the D4RL normalised score (0 = random, 100 = expert):
  - "td3", "td3_bc", "prdc": trained from scratch on the dataset (`rlpost.offline.td3`, `.prdc`);
  - "cdsa": a frozen TD3+BC policy (reused when "td3_bc" ran first) corrected at decision time by
    a denoising score model (`rlpost.offline.cdsa`); reports frozen vs corrected, incl. CVaR_10%;
  - "pgd": TD3+BC trained on synthetic transitions from an EDM trajectory diffusion model,
    unguided and guided by the TD3+BC policy (`rlpost.offline.diffusion`), vs real data only.
"""
import json
import pathlib
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from rlpost.offline import cdsa
from rlpost.offline import datasets
from rlpost.offline import diffusion
from rlpost.offline import envs
from rlpost.offline import prdc
from rlpost.offline import td3

METHODS = ("td3", "td3_bc", "prdc", "cdsa", "pgd")


def validate_config(config) -> None:
  """Raises ValueError naming the offending field."""
  for name in config.env_names:
    if name not in envs.ENV_NAMES:
      raise ValueError(f"config.env_names: unknown env {name!r}; choose from {envs.ENV_NAMES}")
  for kind in config.dataset_kinds:
    if kind not in datasets.DATASET_KINDS:
      raise ValueError(f"config.dataset_kinds: unknown kind {kind!r}; choose from "
                       f"{datasets.DATASET_KINDS}")
  for method in config.methods:
    if method not in METHODS:
      raise ValueError(f"config.methods: unknown method {method!r}; choose from {METHODS}")
  if config.num_steps <= 0 or config.num_steps % config.eval_every:
    raise ValueError(f"config.num_steps ({config.num_steps}) must be a positive multiple of "
                     f"config.eval_every ({config.eval_every})")
  for field in ("eval_episodes", "final_eval_episodes", "batch_size"):
    if config[field] < 1:
      raise ValueError(f"config.{field} must be >= 1, got {config[field]}")


def _td3_config(config, method: str) -> td3.TD3Config:
  return td3.TD3Config(actor_loss="td3_bc" if method in ("cdsa", "pgd") else method,
                       alpha=config.alpha, batch_size=config.batch_size,
                       hidden_sizes=tuple(config.hidden_sizes))


def train_td3_family(method: str, data: dict[str, jax.Array], spec: envs.EnvSpec,
                     obs_mean, obs_std, key: jax.Array, config,
                     log: Callable[[dict], None], compiled: dict | None = None):
  """Trains TD3 / TD3+BC / PRDC offline on `data` (normalised states).

  Returns `(agent, final state, curve [(step, mean return)], evaluate)`, where the jitted
  `evaluate(actor_params, key) -> returns [eval_episodes]` can be reused without recompiling.
  `compiled` (a dict) caches the jitted functions per method across calls with the same env and
  normalisation, so e.g. the two synthetic-data runs of "pgd" compile once.
  """
  compiled = {} if compiled is None else compiled
  if method not in compiled:
    agent = td3.make_td3_agent(observation_size=spec.observation_size,
                               action_size=spec.action_size, max_action=spec.max_action,
                               config=_td3_config(config, method))
    reference_fn = td3.dataset_action_reference
    if method == "prdc":
      nn_fn = prdc.make_prdc_reference_fn(beta=config.prdc_beta,
                                          block_size=config.prdc_block_size)
      reference_fn = lambda b, pi, keys: spec.max_action * nn_fn(b, pi / spec.max_action, keys)
    chunk = td3.make_offline_train_chunk(agent, config.eval_every, reference_fn)
    evaluate = jax.jit(lambda params, k: envs.rollout_returns(
        spec, td3.make_policy_fn(agent, params, obs_mean, obs_std), k, config.eval_episodes))
    compiled[method] = (agent, chunk, evaluate)
  agent, chunk, evaluate = compiled[method]
  extra = None
  if method == "prdc":
    extra = prdc.dataset_keys(data["observations"], data["actions"] / spec.max_action,
                              beta=config.prdc_beta)
  init_key, key = jax.random.split(key)
  state = td3.init_td3_state(agent, init_key, spec.observation_size)
  curve = []
  for step in range(config.eval_every, config.num_steps + 1, config.eval_every):
    key, train_key, eval_key = jax.random.split(key, 3)
    state, metrics = chunk(state, data, train_key, extra)
    metrics = {k: float(v) for k, v in metrics.items()}
    if not all(np.isfinite(v) for v in metrics.values()):
      raise FloatingPointError(f"{method}: non-finite metrics at step {step}: {metrics}")
    mean_return = float(jnp.mean(evaluate(state.actor_params, eval_key)))
    curve.append((step, mean_return))
    log(dict(metrics, step=step, eval_return=mean_return))
  return agent, state, curve, evaluate


def evaluate_many(evaluate, actor_params, key: jax.Array, num_episodes: int) -> np.ndarray:
  """Repeats the jitted `evaluate` (fixed batch of episodes) until `num_episodes` returns."""
  out, i = [], 0
  while sum(len(x) for x in out) < num_episodes:
    out.append(np.asarray(evaluate(actor_params, jax.random.fold_in(key, i))))
    i += 1
  return np.concatenate(out)[:num_episodes]


def _score_returns(returns: np.ndarray, ds: datasets.OfflineDataset) -> dict[str, float]:
  return {"return": float(np.mean(returns)),
          "score": float(ds.normalized_score(np.mean(returns))),
          "score_std": float(np.std(ds.normalized_score(returns))),
          "cvar10_score": float(ds.normalized_score(envs.cvar(jnp.asarray(returns), alpha=0.1)))}


def run_experiment(config, workdir: str | pathlib.Path, progress: Callable[[str], None] = print
                   ) -> dict[str, Any]:
  """Runs every (env, dataset, method) of `config`; writes metrics.jsonl, summary.json,
  curves.png under `workdir` and returns the summary."""
  validate_config(config)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  cache_dir = config.cache_dir.replace("__workdir__", str(workdir)) or None
  metrics_file = open(workdir / "metrics.jsonl", "w")
  rows, curves = [], {}
  start = time.time()

  def logger(**tags):
    def log(record):
      record = dict(tags, **record, wall_s=round(time.time() - start, 1))
      metrics_file.write(json.dumps(record) + "\n")
      metrics_file.flush()
      if "step" in record:
        progress(f"[{record['wall_s']:7.1f}s] {tags} step {record['step']} "
                 f"return {record.get('eval_return', float('nan')):.1f}")
    return log

  key = jax.random.key(config.seed)
  try:
    for env_name in config.env_names:
      spec = envs.make_env(env_name)
      ds_config = datasets.default_dataset_config(env_name, config.dataset_preset)
      for kind in config.dataset_kinds:
        ds = datasets.load_dataset(env_name, kind, config=ds_config, cache_dir=cache_dir,
                                   log_fn=logger(env=env_name, dataset="generation"))
        data = ds.as_arrays(normalize=True)
        obs_mean, obs_std = (jnp.asarray(x, jnp.float32) for x in ds.normalization())
        trained, compiled = {}, {}
        for method in config.methods:
          key, method_key = jax.random.split(key)
          tags = dict(env=env_name, dataset=kind, method=method)
          log = logger(**tags)
          final_key = jax.random.fold_in(method_key, 7)
          eval_many = lambda evaluate, params: evaluate_many(evaluate, params, final_key,
                                                             config.final_eval_episodes)
          if method in ("td3", "td3_bc", "prdc"):
            agent, state, curve, evaluate = train_td3_family(
                method, data, spec, obs_mean, obs_std, method_key, config, log, compiled)
            trained[method] = (agent, state, evaluate)
            curves[f"{env_name}/{kind}/{method}"] = [(s, float(ds.normalized_score(r)))
                                                     for s, r in curve]
            returns = eval_many(evaluate, state.actor_params)
            rows.append(dict(tags, **_score_returns(returns, ds)))
          elif method == "cdsa":
            rows.extend(_run_cdsa(config, spec, ds, data, obs_mean, obs_std, trained, compiled,
                                  method_key, eval_many, log, tags))
          elif method == "pgd":
            rows.extend(_run_pgd(config, spec, ds, data, obs_mean, obs_std, trained, compiled,
                                 method_key, eval_many, log, tags, curves))
          progress(f"done {tags}: {rows[-1]}")
  finally:
    metrics_file.close()
  summary = {"rows": rows, "wall_s": round(time.time() - start, 1),
             "config": json.loads(config.to_json_best_effort())}
  (workdir / "summary.json").write_text(json.dumps(summary, indent=1))
  _plot_curves(curves, workdir / "curves.png")
  return summary


def _frozen_td3_bc(config, spec, data, obs_mean, obs_std, trained, compiled, key, log):
  if "td3_bc" in trained:
    return trained["td3_bc"]
  agent, state, _, evaluate = train_td3_family("td3_bc", data, spec, obs_mean, obs_std, key,
                                               config, log, compiled)
  trained["td3_bc"] = (agent, state, evaluate)
  return trained["td3_bc"]


def _run_cdsa(config, spec, ds, data, obs_mean, obs_std, trained, compiled, key, eval_many, log,
              tags):
  pre_key, score_key = jax.random.split(key)
  agent, state, evaluate = _frozen_td3_bc(config, spec, data, obs_mean, obs_std, trained,
                                          compiled, pre_key, log)
  cfg = cdsa.CDSAConfig(correction_sigma=config.cdsa.correction_sigma,
                        step_size=config.cdsa.step_size,
                        num_correction_steps=config.cdsa.num_correction_steps,
                        batch_size=config.batch_size, hidden_sizes=tuple(config.hidden_sizes))
  model, params, losses = cdsa.train_score_model(data, score_key, action_size=spec.action_size,
                                                 max_action=spec.max_action,
                                                 num_steps=config.cdsa.num_steps, config=cfg)
  log({"score_model_loss_first": float(losses[0]), "score_model_loss_last": float(losses[-1])})
  frozen = eval_many(evaluate, state.actor_params)
  corrected_eval = jax.jit(lambda p, k: envs.rollout_returns(spec, cdsa.make_corrected_policy_fn(
      agent.actor.apply, state.actor_params, model, p, obs_mean, obs_std,
      max_action=spec.max_action, config=cfg), k, config.eval_episodes))
  corrected = eval_many(corrected_eval, params)
  frozen_row = dict(tags, method="cdsa:frozen_td3_bc", **_score_returns(frozen, ds))
  corrected_row = dict(tags, method="cdsa", **_score_returns(corrected, ds))
  corrected_row["improvement"] = corrected_row["score"] - frozen_row["score"]
  corrected_row["cvar10_improvement"] = corrected_row["cvar10_score"] - frozen_row["cvar10_score"]
  return [frozen_row, corrected_row]


def _run_pgd(config, spec, ds, data, obs_mean, obs_std, trained, compiled, key, eval_many, log,
             tags, curves):
  pre_key, diff_key, sample_key, k_unguided, k_guided = jax.random.split(key, 5)
  agent, state, evaluate = _frozen_td3_bc(config, spec, data, obs_mean, obs_std, trained,
                                          compiled, pre_key, log)
  real = eval_many(evaluate, state.actor_params)
  rows = [dict(tags, method="pgd:real_only", **_score_returns(real, ds))]
  pcfg = config.pgd
  windows = diffusion.trajectory_windows(ds, horizon=pcfg.horizon, stride=pcfg.stride,
                                         max_action=spec.max_action)
  model = diffusion.train_trajectory_diffusion(windows, diff_key, num_steps=pcfg.train_steps,
                                               batch_size=pcfg.batch_size,
                                               hidden_sizes=tuple(pcfg.hidden_sizes))
  log({"diffusion_loss_first": model.losses[0], "diffusion_loss_last": model.losses[-1]})
  target_mean_fn = lambda obs_n: agent.actor.apply(state.actor_params, obs_n) / spec.max_action
  for name, coeff, k in (("pgd:unguided", 0.0, k_unguided), ("pgd", pcfg.guidance_coeff, k_guided)):
    synth = diffusion.sample_transitions(
        model, windows, sample_key, num_trajectories=pcfg.num_trajectories,
        num_sampling_steps=pcfg.sampling_steps, guidance_coeff=coeff,
        target_mean_fn=target_mean_fn, max_action=spec.max_action)
    log({"variant": name, "synthetic_transitions": int(synth["observations"].shape[0])})
    _, s_state, curve, _ = train_td3_family("td3_bc", synth, spec, obs_mean, obs_std, k, config,
                                            log, compiled)
    curves[f"{spec.name}/{ds.kind}/{name}"] = [(s, float(ds.normalized_score(r)))
                                              for s, r in curve]
    returns = eval_many(evaluate, s_state.actor_params)
    rows.append(dict(tags, method=name, **_score_returns(returns, ds)))
  return rows


def _plot_curves(curves: dict[str, list], path: pathlib.Path) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  groups = sorted({k.rsplit("/", 1)[0] for k in curves}) or ["(no curves)"]
  fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 3.5), squeeze=False)
  for ax, group in zip(axes[0], groups):
    for name, curve in curves.items():
      if name.rsplit("/", 1)[0] == group and curve:
        steps, scores = zip(*curve)
        ax.plot(steps, scores, label=name.rsplit("/", 1)[1])
    ax.set_title(group)
    ax.set_xlabel("gradient steps")
    ax.set_ylabel("normalised score")
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)


def format_table(rows: list[dict]) -> str:
  header = f"{'env':<11}{'dataset':<15}{'method':<22}{'score':>8}{'cvar10':>9}{'return':>10}"
  lines = [header, "-" * len(header)]
  for r in rows:
    lines.append(f"{r['env']:<11}{r['dataset']:<15}{r['method']:<22}{r['score']:>8.1f}"
                 f"{r['cvar10_score']:>9.1f}{r['return']:>10.1f}")
  return "\n".join(lines)
