"""The model-based experiment behind `experiments/model_based.py` (and the notebook).

Methods:
  - "coplanner": the Dyna/MBPO loop with COPlanner's conservative model rollouts and optimistic
    exploration (`rlpost.planning.mbpo`, use_coplanner=True);
  - "mbpo": the same loop without COPlanner (baseline);
  - "scalezero": the multi-task PPO learner with a MoE feed-forward and Dynamic Parameter
    Scaling (`rlpost.planning.multitask`);
  - "scalezero_dense": the same learner with a dense feed-forward and no DPS.
Scores are D4RL-style normalised, 100 (R - R_random) / (R_expert - R_random): the MBPO loops use
the reference returns of `rlpost.offline.datasets` for the same env (uniform policy / the
noise-free expert trained there); the multi-task learner uses a uniform policy measured here and
each task's solved threshold as "expert".
"""
import json
import pathlib
import time
from typing import Any, Callable

import numpy as np

from rlpost.offline import datasets
from rlpost.offline import envs

METHODS = ("coplanner", "mbpo", "scalezero", "scalezero_dense")


def validate_config(config) -> None:
  """Raises ValueError naming the offending field."""
  if not config.methods:
    raise ValueError("config.methods must not be empty")
  for method in config.methods:
    if method not in METHODS:
      raise ValueError(f"config.methods: unknown method {method!r}; choose from {METHODS}")
  if not config.seeds:
    raise ValueError("config.seeds must not be empty")
  if config.mbpo.env_name not in envs.ENV_NAMES:
    raise ValueError(f"config.mbpo.env_name: unknown env {config.mbpo.env_name!r}; choose from "
                     f"{envs.ENV_NAMES}")
  if config.reference_preset not in ("default", "smoke"):
    raise ValueError(f"config.reference_preset must be 'default' or 'smoke', got "
                     f"{config.reference_preset!r}")


def _mbpo_config(config, use_coplanner: bool):
  from rlpost.planning import mbpo  # pylint: disable=g-import-not-at-top
  fields = dict(config.mbpo)
  fields["hidden_sizes"] = tuple(fields["hidden_sizes"])
  try:
    return mbpo.MBPOConfig(use_coplanner=use_coplanner, **fields)
  except (TypeError, ValueError) as e:
    raise ValueError(f"config.mbpo: {e}") from e


def _plot(curves: dict[str, tuple[list, np.ndarray]], xlabel: dict[str, str],
          path: pathlib.Path) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  groups = sorted({k.split("/")[0] for k in curves}) or ["(no curves)"]
  fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 3.5), squeeze=False)
  for ax, group in zip(axes[0], groups):
    for name, (x, y) in curves.items():
      if name.split("/")[0] != group:
        continue
      y = np.asarray(y)
      mean = y.mean(0)
      ax.plot(x, mean, label=name.split("/", 1)[1])
      if y.shape[0] > 1:
        ax.fill_between(x, y.min(0), y.max(0), alpha=0.2)
    ax.set_title(group)
    ax.set_xlabel(xlabel.get(group, "env steps"))
    ax.set_ylabel("normalised score")
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)


def run_experiment(config, workdir, progress: Callable[[str], None] = print,
                   show_bar: bool = True) -> dict[str, Any]:
  """Runs every method of `config`; writes metrics.jsonl, summary.json and curves.png."""
  validate_config(config)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  start = time.time()
  rows, curves, xlabels = [], {}, {}
  with open(workdir / "metrics.jsonl", "w") as metrics_file:

    def log(record):
      record = dict(record, wall_s=round(time.time() - start, 1))
      metrics_file.write(json.dumps(record) + "\n")
      metrics_file.flush()

    for method in config.methods:
      t0 = time.time()
      if method in ("coplanner", "mbpo"):
        rows.extend(_run_mbpo(config, method, log, curves, progress, show_bar))
        xlabels[config.mbpo.env_name] = "env steps"
      else:
        rows.extend(_run_scalezero(config, method, log, curves, progress, show_bar))
        xlabels["multitask"] = "env steps (all tasks)"
      progress(f"done {method} in {time.time() - t0:.0f} s")
      # Rewritten after every method, so a long run leaves usable partial results.
      summary = {"rows": rows, "wall_s": round(time.time() - start, 1),
                 "config": json.loads(config.to_json_best_effort())}
      (workdir / "summary.json").write_text(json.dumps(summary, indent=1))
      _plot(curves, xlabels, workdir / "curves.png")
  return summary


def _run_mbpo(config, method, log, curves, progress, show_bar) -> list[dict]:
  from rlpost.planning import mbpo  # pylint: disable=g-import-not-at-top
  mcfg = _mbpo_config(config, use_coplanner=method == "coplanner")
  env = mcfg.env_name
  ref = datasets.load_dataset(env, "random",
                              config=datasets.default_dataset_config(env, config.reference_preset))
  score = lambda r: 100.0 * (np.asarray(r) - ref.random_return) / (
      ref.expert_return - ref.random_return)
  out = mbpo.train_mbpo(mcfg, list(config.seeds), progress=show_bar,
                        log_fn=lambda r: log(dict(r, eval_score=score(r["eval_return"]).tolist())))
  scores = score(out["returns"])  # [seeds, evals]
  curves[f"{env}/{method}"] = (out["env_steps"], scores)
  final = scores[:, -1]
  last_metrics = out["metrics"][-1] if out["metrics"] else {}
  row = {"task": env, "method": method, "seeds": list(config.seeds),
         "env_steps": out["env_steps"][-1], "score": float(final.mean()),
         "score_per_seed": final.tolist(), "return": float(out["returns"][:, -1].mean()),
         "auc_score": float(scores.mean()),
         "rollout_uncertainty": float(np.mean(last_metrics.get("rollout_uncertainty", np.nan))),
         "random_return": ref.random_return, "expert_return": ref.expert_return,
         "curve_env_steps": out["env_steps"], "curve_score_mean": scores.mean(0).tolist()}
  progress(f"{method}: final score {row['score']:.1f} (seeds {np.round(final, 1).tolist()})")
  return [row]


def _run_scalezero(config, method, log, curves, progress, show_bar) -> list[dict]:
  from rlpost.planning import multitask  # pylint: disable=g-import-not-at-top
  fields = dict(config.scalezero)
  fields["tasks"] = tuple(fields["tasks"])
  fields["target_returns"] = tuple(fields["target_returns"])
  use = method == "scalezero"
  try:
    mcfg = multitask.MultiTaskConfig(use_moe=use, use_dps=use, **fields)
  except (TypeError, ValueError) as e:
    raise ValueError(f"config.scalezero: {e}") from e
  out = multitask.train_multitask(mcfg, list(config.seeds), progress=show_bar,
                                  log_fn=lambda r: log(dict(r, method=method)))
  rows = []
  curves[f"multitask/{method}"] = (out["env_steps"], out["mean_score"])
  for t, task in enumerate(mcfg.tasks):
    final = out["score"][:, -1, t]
    rows.append({"task": task, "method": method, "seeds": list(config.seeds),
                 "score": float(final.mean()), "score_per_seed": final.tolist(),
                 "return": float(out["returns"][:, -1, t].mean()),
                 "env_steps": float(out["task_env_steps"][:, t].mean()),
                 "steps_to_solve": out["steps_to_solve"][:, t].tolist(),
                 "random_return": float(out["random_returns"][t]),
                 "expert_return": mcfg.target_returns[t]})
  rows.append({"task": "all", "method": method, "seeds": list(config.seeds),
               "score": float(out["mean_score"][:, -1].mean()),
               "return": float("nan"),
               "env_steps": float(out["task_env_steps"].sum(-1).mean()),
               "grad_cosine": float(np.mean(out["grad_cosine"])),
               "grad_cosine_late": float(np.mean(out["grad_cosine"][:, -max(
                   1, out["grad_cosine"].shape[1] // 4):])),
               "final_stage": out["final_stage"].tolist()})
  progress(f"{method}: mean score {rows[-1]['score']:.1f}, grad cosine "
           f"{rows[-1]['grad_cosine']:.3f}, env steps {rows[-1]['env_steps']:.0f}")
  return rows


def format_table(rows: list[dict]) -> str:
  header = (f"{'task':<16}{'method':<18}{'score':>8}{'return':>10}{'env steps':>11}"
            f"{'grad cos':>10}")
  lines = [header, "-" * len(header)]
  for r in rows:
    cos = r.get("grad_cosine")
    lines.append(f"{r['task']:<16}{r['method']:<18}{r['score']:>8.1f}{r['return']:>10.1f}"
                 f"{r['env_steps']:>11.0f}{'' if cos is None else f'{cos:10.3f}'}")
  return "\n".join(lines)
