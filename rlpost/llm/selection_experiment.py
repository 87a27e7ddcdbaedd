"""Data-selection experiment: GRPO against D3S, VADE, V0 and a difficulty curriculum.

Every method starts from the same policy (the shipped SFT checkpoint by default) on the same
multi-level synthetic pool, with the same seeds, and logs the mechanism metric its paper claims:

  d3s         Var(A) of the rollouts the gradient sees and the gradient norm per step
              (D3S, arXiv 2509.22115; registry preset "d3s");
  vade        fraction of zero-spread groups and sample efficiency (held-out lift per 1k generated
              completions) (VADE, arXiv 2511.18902; `prompt_samplers.VadeSampler`);
  v0          informative groups (mixed outcomes) per rollout (V0, arXiv 2602.03584;
              `prompt_samplers.V0Sampler`);
  curriculum  greedy accuracy on the hardest level (CRAFT-GUI, arXiv 2508.11360;
              `prompt_samplers.CurriculumSampler`).

All metrics are logged for every method, so each sits beside the GRPO baseline. The run reuses
`train.build` (tokenizer, checkpoint, reward), `RLTrainer` and `train.evaluate`. One trainer per
objective is compiled once and reused across samplers and seeds (its data seed and sampler state
are reset per run), which keeps a 2-core CPU run affordable. D3S runs at a fixed point of its
schedule (`selection.d3s_*`); the paper's endpoints are unpublished.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import time
from typing import Any, Callable, Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from rlpost import core
from rlpost import objectives
from rlpost.llm import prompt_samplers
from rlpost.llm import rl as rl_lib
from rlpost.llm import train
from rlpost.llm.sampler import Sampler

METHODS = ("grpo", "d3s", "vade", "v0", "curriculum")


def _as_dict(c) -> dict[str, Any]:
  return c.to_dict() if hasattr(c, "to_dict") else dict(c)


def d3s_objective(*, group_size: int, sample_keep: int, token_keep_frac: float,
                  overrides: Mapping[str, Any] | None = None,
                  max_new_tokens: int) -> objectives.Objective:
  """The registry's "d3s" preset with its selector set for this loop's group size."""
  if not 1 <= sample_keep <= group_size:
    raise ValueError(f"selection.d3s_sample_keep must be in [1, rl.group_size={group_size}]; got "
                     f"{sample_keep!r}")
  if not 0.0 < token_keep_frac <= 1.0:
    raise ValueError(f"selection.d3s_token_keep_frac must be in (0, 1]; got {token_keep_frac!r}")
  base = rl_lib.make_objective("d3s", overrides, max_new_tokens=max_new_tokens).config
  sel = {**base.selector_kwargs["d3s"], "group_size": group_size, "sample_keep": sample_keep,
         "token_keep_frac": token_keep_frac}
  return objectives.Objective(dataclasses.replace(base, selector_kwargs={"d3s": sel}))


def make_pool(task, *, split: str, size_per_level: int, unique: bool = False, levels=None,
              tokenizer=None, max_prompt_len: int | None = None) -> list[Any]:
  """`size_per_level` synthetic problems of each of `levels` (default task.levels).

  With a tokenizer, problems whose prompt is longer than `max_prompt_len` tokens are dropped (the
  loop's prompt bucket must stay a power of two: the sampler pads prompts up to one).
  """
  from rlpost.llm import tasks  # pylint: disable=g-import-not-at-top
  out = []
  for lv in task.levels if levels is None else levels:
    recs = tasks.generate_dataset(size_per_level, seed=task.seed, split=split, level=int(lv),
                                  families=tuple(task.families), style=task.style, unique=unique)
    if tokenizer is not None:
      recs = [r for r in recs
              if len(tasks.encode_example(tokenizer, r, add_eos=False)[0]) <= max_prompt_len]
    out += recs
  return out


def validate(config) -> None:
  """Errors name the bad field (train_llm fields are checked by `train.build`)."""
  sel = config.selection
  if not sel.methods:
    raise ValueError("config.selection.methods must name at least one method")
  for m in sel.methods:
    if m not in METHODS:
      raise ValueError(f"config.selection.methods has unknown method {m!r}; valid: "
                       f"{', '.join(METHODS)}")
  if not sel.seeds:
    raise ValueError("config.selection.seeds must list at least one seed")
  if not config.task.levels or sorted(config.task.levels) != list(config.task.levels):
    raise ValueError(f"config.task.levels must be a non-empty ascending list; got "
                     f"{config.task.levels!r}")
  for f in ("train_per_level", "eval_per_level"):
    v = sel[f]
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
      raise ValueError(f"config.selection.{f} must be a positive int; got {v!r}")


def _step_diagnostics(groups: Mapping[str, np.ndarray], *, d3s_keep: int | None
                      ) -> dict[str, float]:
  """Mechanism metrics of one rollout: informative groups and Var(A) of the trained rollouts."""
  acc = np.asarray(groups["acc"])
  valid = groups.get("valid")  # variable group sizes (V0): a padded grid
  if valid is None:
    valid = np.ones(acc.shape, bool)
  valid = np.asarray(valid, bool)
  adv = core.grpo_advantages(jnp.asarray(groups["rewards"]), valid=jnp.asarray(valid))
  if d3s_keep is not None:
    keep = np.asarray(core.d3s_sample_mask(adv, n_keep=d3s_keep))
  else:
    keep = np.ones(adv.shape, bool)
  keep = keep & valid & (np.asarray(groups["mask"]).sum(-1) > 0)
  a = np.asarray(adv)[keep]
  informative = prompt_samplers.informative_rows(acc, valid)
  return {"informative_groups": float(np.sum(informative)),
          # comparable across layouts (V0's variable groups): completions in mixed-outcome groups
          "informative_completion_frac": float(np.sum(valid[informative]) / max(valid.sum(), 1)),
          "var_adv": float(a.var()) if a.size else 0.0,
          "var_adv_full": float(np.asarray(adv)[valid].var())}


def run_selection(config, workdir: str | os.PathLike, *, progress: bool = True,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
  """Runs every (method, seed); writes metrics.jsonl, curves.png, summary.json; returns summary."""
  workdir = pathlib.Path(workdir)
  validate(config)
  summary_path = workdir / "summary.json"
  if summary_path.exists():
    summary = json.loads(summary_path.read_text())
    log(format_table(summary))
    return summary
  t_begin = time.perf_counter()
  c, sel = config, config.selection
  s = train.build(c)  # validates the train_llm fields; loads tokenizer, policy and reward
  rl_cfg, tok = s["rl_config"], s["tokenizer"]
  fit = dict(tokenizer=tok, max_prompt_len=c.prompt_len)
  pool = make_pool(c.task, split="train", size_per_level=sel.train_per_level, **fit)
  eval_sets = {int(lv): make_pool(c.task, split=c.eval.split, size_per_level=sel.eval_per_level,
                                  unique=c.eval.split != "train", levels=(lv,), **fit)
               for lv in c.task.levels}
  hardest = int(c.task.levels[-1])
  workdir.mkdir(parents=True, exist_ok=True)
  writer = train.MetricsWriter(workdir, tensorboard=False)
  writer.truncate(lambda r: False)
  shared_sampler = Sampler(nnx.merge(s["graphdef"], s["params"]))

  def evaluate(params) -> dict[int, float]:
    return {lv: train.evaluate(shared_sampler, params, tok, recs, prompt_len=c.prompt_len,
                               max_new_tokens=rl_cfg.max_new_tokens,
                               batch_size=c.eval.batch_size)["accuracy"]
            for lv, recs in eval_sets.items()}

  start = evaluate(s["params"])
  writer.write({"phase": "eval", "method": "start", "seed": -1, "step": 0,
                **{f"accuracy_level{lv}": a for lv, a in start.items()}})
  optimizer = train.make_optimizer(learning_rate=c.rl.learning_rate,
                                   warmup_steps=c.rl.warmup_steps,
                                   weight_decay=c.rl.weight_decay,
                                   max_grad_norm=c.rl.max_grad_norm)
  overrides = _as_dict(c.objective_overrides)
  objs = {"grpo": s["objective"]}
  trainers: dict[str, rl_lib.RLTrainer] = {}
  captured: dict[str, Any] = {}

  def trainer_for(method: str) -> rl_lib.RLTrainer:
    key = "d3s" if method == "d3s" else "grpo"
    if key not in trainers:
      if key == "d3s":
        objs["d3s"] = d3s_objective(group_size=rl_cfg.group_size, sample_keep=sel.d3s_sample_keep,
                                    token_keep_frac=sel.d3s_token_keep_frac, overrides=overrides,
                                    max_new_tokens=rl_cfg.max_new_tokens)
      tr = rl_lib.RLTrainer(graphdef=s["graphdef"], params=s["params"], tokenizer=tok,
                            objective=objs[key], rl_config=rl_cfg, optimizer=optimizer,
                            pool=pool, data_seed=0, prompt_len=c.prompt_len,
                            reward_fn=s["reward_fn"], ref_params=s["params"])
      tr.sampler = shared_sampler
      inner = tr.rollout

      def rollout(params, data_pos, rkey, _inner=inner):
        out = _inner(params, data_pos, rkey)
        captured["groups"] = out[0]
        return out

      tr.rollout = rollout
      trainers[key] = tr
    return trainers[key]

  samplers = {"vade": prompt_samplers.VadeSampler(**_as_dict(sel.vade)),
              "v0": prompt_samplers.V0Sampler(**_as_dict(sel.v0)),
              "curriculum": prompt_samplers.CurriculumSampler(**_as_dict(sel.curriculum))}
  pbar = None
  if progress:
    from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
    pbar = tqdm(total=len(sel.methods) * len(sel.seeds) * c.rl.steps, desc="selection",
                dynamic_ncols=True)
  runs = []
  for method in sel.methods:
    for seed in sel.seeds:
      tr = trainer_for(method)
      tr.data_seed = int(seed) + 1
      tr.prompt_sampler = samplers.get(method)
      tr.prompt_sampler_state = (None if tr.prompt_sampler is None
                                 else tr.prompt_sampler.init_state(pool))
      obj = tr.objective
      state = train.init_train_state(s["params"], optimizer, seed=int(seed) + 1,
                                     objective_state=obj.init_state())
      t0 = time.perf_counter()
      rows = []
      for _ in range(c.rl.steps):
        state, met = tr.step(state)
        diag = _step_diagnostics(captured["groups"],
                                 d3s_keep=sel.d3s_sample_keep if method == "d3s" else None)
        extra = dict(getattr(tr, "last_rollout_stats", {}) or {}) if tr.prompt_sampler else {}
        rec = {"phase": "rl", "method": method, "seed": int(seed), **met, **diag,
               **{k: v for k, v in extra.items() if k not in met and k not in diag}}
        train.check_finite(rec, phase=f"rl/{method}", step=met["step"])
        writer.write(rec)
        rows.append(rec)
        if pbar is not None:
          pbar.update(1)
          pbar.set_postfix(method=method, seed=seed, acc=f"{met['accuracy']:.2f}")
      wall = time.perf_counter() - t0
      final = evaluate(state["params"])
      writer.write({"phase": "eval", "method": method, "seed": int(seed), "step": c.rl.steps,
                    **{f"accuracy_level{lv}": a for lv, a in final.items()}})
      runs.append(_run_summary(method, int(seed), rows, final, start, rl_cfg, hardest, wall))
  if pbar is not None:
    pbar.close()
  summary = _summarise(runs, start, c, hardest, time.perf_counter() - t_begin, len(pool),
                       {str(k): len(v) for k, v in eval_sets.items()})
  writer.close()
  plot_selection(writer.records(), workdir / "curves.png")
  tmp = summary_path.with_suffix(".tmp")
  tmp.write_text(json.dumps(summary, indent=2))
  os.replace(tmp, summary_path)
  log(format_table(summary))
  return summary


def _run_summary(method, seed, rows, final, start, rl_cfg, hardest, wall) -> dict[str, Any]:
  completions = len(rows) * rl_cfg.batch_size
  mean_final = float(np.mean(list(final.values())))
  mean_start = float(np.mean(list(start.values())))
  return {
      "method": method, "seed": seed, "steps": len(rows), "rl_wall_s": wall,
      "final_accuracy_by_level": {str(k): v for k, v in final.items()},
      "final_accuracy_mean": mean_final,
      "hardest_level_accuracy": final[hardest],
      "train_accuracy_mean": float(np.mean([r["accuracy"] for r in rows])),
      "zero_spread_frac_mean": float(np.mean([r["zero_spread_frac"] for r in rows])),
      "informative_groups_per_rollout": float(np.mean([r["informative_groups"] for r in rows])),
      "informative_completion_frac": float(np.mean([r["informative_completion_frac"]
                                                    for r in rows])),
      "var_adv_per_step": [r["var_adv"] for r in rows],
      "grad_norm_per_step": [r["grad_norm"] for r in rows],
      "var_adv_mean": float(np.mean([r["var_adv"] for r in rows])),
      "grad_norm_mean": float(np.mean([r["grad_norm"] for r in rows])),
      "completions": completions,
      # Held-out lift (mean over levels, points) per 1000 generated completions.
      "sample_efficiency": 100 * (mean_final - mean_start) / (completions / 1000.0),
  }


_KEYS = ("final_accuracy_mean", "hardest_level_accuracy", "zero_spread_frac_mean",
         "informative_groups_per_rollout", "informative_completion_frac", "var_adv_mean",
         "grad_norm_mean", "sample_efficiency",
         "train_accuracy_mean", "rl_wall_s")


def _summarise(runs, start, c, hardest, wall, pool_size, eval_sizes) -> dict[str, Any]:
  methods = {}
  for m in dict.fromkeys(r["method"] for r in runs):
    rs = [r for r in runs if r["method"] == m]
    methods[m] = {k: {"mean": float(np.mean([r[k] for r in rs])),
                      "std": float(np.std([r[k] for r in rs]))} for k in _KEYS}
  mech = {
      "d3s": ("var_adv_mean", "grad_norm_mean"),
      "vade": ("zero_spread_frac_mean", "sample_efficiency"),
      "v0": ("informative_groups_per_rollout", "informative_completion_frac"),
      "curriculum": ("hardest_level_accuracy",),
  }
  mechanism = {m: {k: {"method": methods[m][k]["mean"],
                       "grpo": methods["grpo"][k]["mean"] if "grpo" in methods else None}
                   for k in ks} for m, ks in mech.items() if m in methods}
  return {"start_accuracy_by_level": {str(k): v for k, v in start.items()},
          "pool_size": pool_size, "eval_sizes": eval_sizes,
          "hardest_level": hardest, "levels": list(c.task.levels),
          "seeds": list(c.selection.seeds), "steps": c.rl.steps,
          "batch_size": c.rl.batch_size, "group_size": c.rl.group_size,
          "methods": methods, "mechanism": mechanism, "runs": runs, "wall_s": wall}


def format_table(summary: Mapping[str, Any]) -> str:
  hl = summary["hardest_level"]
  lines = [f"{'method':<11} {'final acc':>10} {'L' + str(hl) + ' acc':>8} {'0-spread':>9} "
           f"{'inform.':>8} {'Var(A)':>7} {'|grad|':>7} {'eff.':>7}   (mean over "
           f"{len(summary['seeds'])} seeds, {summary['steps']} steps)"]
  for m, v in summary["methods"].items():
    lines.append(f"{m:<11} {100 * v['final_accuracy_mean']['mean']:9.1f}% "
                 f"{100 * v['hardest_level_accuracy']['mean']:7.1f}% "
                 f"{v['zero_spread_frac_mean']['mean']:9.2f} "
                 f"{v['informative_groups_per_rollout']['mean']:8.2f} "
                 f"{v['var_adv_mean']['mean']:7.3f} {v['grad_norm_mean']['mean']:7.3f} "
                 f"{v['sample_efficiency']['mean']:7.2f}")
  start = summary["start_accuracy_by_level"]
  lines.append("start accuracy by level: " + ", ".join(f"L{k} {100 * a:.1f}%"
                                                      for k, a in start.items()))
  return "\n".join(lines)


def plot_selection(records, path) -> None:
  """curves.png: train accuracy, zero-spread fraction, informative groups, Var(A) and grad norm
  against step, mean over seeds per method."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  rl_rows = [r for r in records if r.get("phase") == "rl"]
  keys = ("accuracy", "zero_spread_frac", "informative_groups", "var_adv", "grad_norm")
  fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.6))
  for m in dict.fromkeys(r["method"] for r in rl_rows):
    rows = [r for r in rl_rows if r["method"] == m]
    steps = sorted({r["step"] for r in rows})
    for ax, k in zip(axes, keys):
      ax.plot(steps, [np.mean([r[k] for r in rows if r["step"] == st]) for st in steps], label=m)
  for ax, k in zip(axes, keys):
    ax.set(xlabel="RL step", title=k)
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)
