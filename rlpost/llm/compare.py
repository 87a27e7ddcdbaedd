"""Seeded objective comparison (issue 5): every method against GRPO from one SFT start, N seeds.

`compare_seeded(config, workdir)` runs, for each objective in `config.objectives` (GRPO is added
first when missing) and each seed `config.seed + k`, k < `config.num_seeds`, a full
`train.run_experiment` in `workdir/<variant>/seed<k>` from the same starting policy. Variants
`<name>@<f>xlr` rerun `config.high_lr_objectives` at `config.high_lr_factor` times the learning
rate (CAPO's stability claim: GRPO and CAPO both at a large lr). A run stopped by the NaN guard
counts as diverged.

Artefacts: `summary.json` (one entry per variant: final held-out accuracy mean +- stderr over
seeds, the mechanism metrics and the paper's claim checked mechanically against GRPO at the same
lr), `comparison.json` (rows), `comparison.md` (table) and `comparison.png` (accuracy, entropy
and zero-spread fraction vs step, mean over seeds).

Mechanism metrics (per run, then mean over seeds; logged by `RLConfig.mechanism_metrics`):
  DCPO       nonzero_grad_frac (tokens whose loss gradient is non-zero) up, clip_frac down
             (arXiv 2509.02333)
  Clip-/KL-Cov  entropy over the last quarter of steps stays higher (arXiv 2505.22617)
  BNPO       variance of the gradient norm across steps down (arXiv 2506.02864)
  dist_po    |H - H0| (sampled-token entropy estimate vs its target) down (arXiv 2601.12730)
  CAPO       final accuracy at a 10x lr where GRPO degrades (arXiv 2510.00819)
  EMPG       corr(|A|, token entropy) down: confident tokens get larger updates (arXiv 2509.09265)
  AEPO       entropy kept (no collapse) (arXiv 2510.14545)
  OBLR-PO    gradient-norm variance down (optimal baseline; arXiv 2511.23310, inferred)
  ADORA      final accuracy only (arXiv 2602.10019)
"""
from __future__ import annotations

import json
import math
import pathlib
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from rlpost.llm import train

# objective -> (metric key in the per-variant entry, direction vs GRPO, claim text)
CLAIMS: dict[str, tuple[tuple[str, str], ...]] = {
    "dcpo": (("nonzero_grad_frac", "higher"), ("clip_frac", "lower")),
    "dcpo_script": (("nonzero_grad_frac", "higher"), ("clip_frac", "lower")),
    "clip_cov": (("entropy_last", "higher"),),
    "kl_cov": (("entropy_last", "higher"),),
    "kl_cov_verl": (("entropy_last", "higher"),),
    "bnpo": (("grad_norm_var", "lower"),),
    "dist_po": (("entropy_target_abs_dev", "lower"),),
    "capo": (("final_accuracy", "higher"),),
    "dr_capo": (("final_accuracy", "higher"),),
    "empg": (("adv_abs_entropy_corr", "lower"),),
    "aepo": (("entropy_last", "higher"),),
    "oblr_po": (("grad_norm_var", "lower"),),
    "adora": (("final_accuracy", "higher"),),
}
# Per-step metrics averaged over all RL steps of a run.
STEP_MEANS = ("clip_frac", "nonzero_grad_frac", "adv_nonzero_resp_frac", "adv_abs_entropy_corr",
              "capo_reject_frac", "zero_spread_frac", "grad_norm", "oblr_scale", "empg_steps_mean")


def _mean_stderr(xs: Sequence[float]) -> tuple[float | None, float | None]:
  xs = [x for x in xs if x is not None and math.isfinite(x)]
  if not xs:
    return None, None
  if len(xs) == 1:
    return float(xs[0]), 0.0
  return float(np.mean(xs)), float(np.std(xs, ddof=1) / math.sqrt(len(xs)))


def run_metrics(records: Sequence[Mapping[str, Any]], *, entropy_target: float = 0.5
                ) -> dict[str, float | None]:
  """Scalar mechanism metrics of one run from its `phase == "rl"` metrics records."""
  rl = [r for r in records if r.get("phase") == "rl"]
  if not rl:
    return {}
  tail = rl[-max(1, len(rl) // 4):]
  col = lambda rows, k: [float(r[k]) for r in rows if r.get(k) is not None]
  out: dict[str, float | None] = {}
  for k in STEP_MEANS:
    v = col(rl, k)
    out[k] = float(np.mean(v)) if v else None
  gn = col(rl, "grad_norm")
  out["grad_norm_var"] = float(np.var(gn, ddof=1)) if len(gn) > 1 else 0.0
  out["grad_norm_max"] = float(np.max(gn)) if gn else None
  for k in ("entropy", "accuracy", "nll_mean"):
    v = col(tail, k)
    out[f"{k}_last"] = float(np.mean(v)) if v else None
  ent0 = col(rl[:1], "entropy")
  out["entropy_first"] = ent0[0] if ent0 else None
  nll = col(tail, "nll_mean")
  out["entropy_target_abs_dev"] = (float(np.mean(np.abs(np.asarray(nll) - entropy_target)))
                                   if nll else None)
  return out


def _variants(config) -> list[tuple[str, str, float]]:
  """(variant name, objective, lr multiplier)."""
  names = list(config.objectives)
  if "grpo" not in names:
    names = ["grpo"] + names
  out = [(n, n, 1.0) for n in names]
  factor = float(config.get("high_lr_factor", 10.0))
  for n in config.get("high_lr_objectives", ()) or ():
    tag = f"{factor:g}xlr"
    if ("grpo", tag) not in [(v[1], v[0].split("@")[-1]) for v in out if "@" in v[0]]:
      out.append((f"grpo@{tag}", "grpo", factor))
    if n != "grpo":
      out.append((f"{n}@{tag}", n, factor))
  seen, uniq = set(), []
  for v in out:
    if v[0] not in seen:
      seen.add(v[0])
      uniq.append(v)
  return uniq


def _claim(name: str, entry: Mapping[str, Any], base: Mapping[str, Any] | None) -> dict[str, Any]:
  obj = name.split("@")[0]
  if obj not in CLAIMS or base is None:
    return {}
  checks = []
  for key, direction in CLAIMS[obj]:
    a = entry["final_accuracy_mean"] if key == "final_accuracy" else entry["mechanism"].get(key)
    b = base["final_accuracy_mean"] if key == "final_accuracy" else base["mechanism"].get(key)
    ok = None
    if a is not None and b is not None:
      ok = bool(a > b) if direction == "higher" else bool(a < b)
    checks.append({"metric": key, "expected": f"{direction} than {base['variant']}", "value": a,
                   "baseline": b, "holds": ok})
  holds = [c["holds"] for c in checks]
  return {"checks": checks, "holds": None if None in holds else all(holds)}


def compare_seeded(config, workdir, *, progress: bool = False,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
  """Runs every variant x seed from one start; writes summary.json etc. (see module docstring)."""
  workdir = pathlib.Path(workdir)
  num_seeds = config.num_seeds
  if isinstance(num_seeds, bool) or not isinstance(num_seeds, int) or num_seeds < 1:
    raise ValueError(f"config.num_seeds must be a positive int, got {num_seeds!r}")
  factor = config.get("high_lr_factor", 10.0)
  if not factor > 0:
    raise ValueError(f"config.high_lr_factor must be > 0, got {factor!r}")
  variants = _variants(config)
  from rlpost.llm import rl as rl_lib  # pylint: disable=g-import-not-at-top
  for _, n, _ in variants:  # fail fast on a bad name or override, before any run
    rl_lib.make_objective(n, dict(config.objective_overrides),
                          max_new_tokens=config.rl.max_new_tokens)
  start = config.init_checkpoint
  if not start:
    sft_cfg = config.copy_and_resolve_references()
    with sft_cfg.unlocked():
      sft_cfg.rl.steps, sft_cfg.control = 0, False
    train.run_experiment(sft_cfg, workdir / "sft", progress=progress, log=log)
    start = str(workdir / "sft" / "policy")
  entries: dict[str, dict[str, Any]] = {}
  curves: dict[str, list[list[dict[str, Any]]]] = {}
  for variant, name, mult in variants:
    runs, curves[variant] = [], []
    for k in range(num_seeds):
      cfg = config.copy_and_resolve_references()
      with cfg.unlocked():
        cfg.objective, cfg.init_checkpoint, cfg.sft.steps, cfg.control = name, start, 0, False
        cfg.seed = int(config.seed) + k
        cfg.rl.learning_rate = float(config.rl.learning_rate) * mult
        cfg.rl.mechanism_metrics = True
      run_dir = workdir / variant.replace("@", "_") / f"seed{k}"
      diverged, summary, error = False, None, None
      try:
        summary = train.run_experiment(cfg, run_dir, progress=progress, log=lambda s: None)
      except FloatingPointError as e:  # the NaN guard stopped the run
        diverged = True
        log(f"{variant} seed {k}: diverged ({e})")
      except Exception as e:  # pylint: disable=broad-except
        if not config.get("keep_going", True):
          raise
        error = f"{type(e).__name__}: {e}"  # recorded in summary.json; the other runs go on
        log(f"{variant} seed {k}: FAILED ({error})")
      recs = train.MetricsWriter(run_dir, tensorboard=False).records()
      curves[variant].append([r for r in recs if r.get("phase") == "rl"])
      ent_target = float(rl_lib.make_objective(
          "dist_po", {}, max_new_tokens=config.rl.max_new_tokens
      ).config.advantage_kwargs["entropy_target"])
      runs.append({"seed": cfg.seed, "diverged": diverged, "error": error,
                   "start_accuracy": summary["sft_accuracy"] if summary else None,
                   "final_accuracy": summary["final_accuracy"] if summary else None,
                   "rl_wall_s": summary["rl_wall_s"] if summary else None,
                   **run_metrics(recs, entropy_target=ent_target)})
      acc_txt = ("diverged" if diverged else "failed" if summary is None else
                 f"{100 * summary['final_accuracy']:.1f}%")
      log(f"{variant} seed {k}: final accuracy {acc_txt}")
    acc_m, acc_se = _mean_stderr([r["final_accuracy"] for r in runs])
    keys = sorted({k for r in runs for k in r} - {"seed", "diverged", "error", "start_accuracy",
                                                    "final_accuracy", "rl_wall_s"})
    mech = {k: _mean_stderr([r.get(k) for r in runs])[0] for k in keys}
    entries[variant] = {
        "variant": variant, "objective": name, "learning_rate": float(config.rl.learning_rate) * mult,
        "num_seeds": num_seeds, "diverged_seeds": int(sum(r["diverged"] for r in runs)),
        "failed_seeds": int(sum(r["error"] is not None for r in runs)),
        "start_accuracy": next((r["start_accuracy"] for r in runs if r["start_accuracy"] is not None),
                               None),
        "final_accuracy_mean": acc_m, "final_accuracy_stderr": acc_se,
        "final_accuracy_per_seed": [r["final_accuracy"] for r in runs],
        "rl_wall_s": float(sum(r["rl_wall_s"] or 0.0 for r in runs)),
        "mechanism": mech, "runs": runs,
    }
    # Partial artefacts after every variant, so an interrupted comparison still reports.
    summary = _summarise(config, entries, num_seeds, start, factor)
    _write(workdir, summary, curves, log if len(entries) == len(variants) else lambda s: None)
  return summary


def _summarise(config, entries, num_seeds, start, factor) -> dict[str, Any]:
  for variant, e in entries.items():
    tag = variant.split("@")[1] if "@" in variant else None
    base = entries.get("grpo" if tag is None else f"grpo@{tag}")
    e["claim"] = _claim(variant, e, base) if e["objective"] != "grpo" else {}
  return {"baseline": "grpo", "num_seeds": num_seeds, "start_checkpoint": start,
          "steps": int(config.rl.steps), "learning_rate": float(config.rl.learning_rate),
          "high_lr_factor": float(factor), "objectives": entries}


def _fmt(x, scale=1.0, nd=3):
  return "-" if x is None else f"{scale * x:.{nd}f}"


def _write(workdir: pathlib.Path, summary: dict[str, Any], curves, log) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  workdir.mkdir(parents=True, exist_ok=True)
  fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
  colors = plt.get_cmap("tab20").colors  # one distinct colour per variant (up to 20)
  for v_index, (variant, runs) in enumerate(curves.items()):
    runs = [r for r in runs if r]
    if not runs:
      continue
    n = min(len(r) for r in runs)
    steps = [runs[0][i]["step"] for i in range(n)]
    for ax, key in zip(axes, ("accuracy", "entropy", "zero_spread_frac")):
      ys = np.mean([[r[i][key] for i in range(n)] for r in runs], axis=0)
      ax.plot(steps, ys, label=variant, ls="--" if "@" in variant else "-",
              color=colors[v_index % len(colors)])
  for ax, key in zip(axes, ("train accuracy", "entropy", "zero-spread fraction")):
    ax.set(xlabel="RL step", title=f"{key} (mean over seeds)")
  axes[0].legend(fontsize=7, ncol=2)
  fig.tight_layout()
  fig.savefig(workdir / "comparison.png", dpi=80)
  fig.savefig(workdir / "curves.png", dpi=80)
  plt.close(fig)
  rows = []
  for e in summary["objectives"].values():
    m = e["mechanism"]
    rows.append({"objective": e["variant"], "start_accuracy": e["start_accuracy"],
                 "final_accuracy": e["final_accuracy_mean"],
                 "final_accuracy_stderr": e["final_accuracy_stderr"],
                 "diverged_seeds": e["diverged_seeds"], **m,
                 "claim_holds": e["claim"].get("holds") if e["claim"] else None})
  header = ("| variant | final acc % (mean +- se) | entropy last | nonzero-grad | clip frac | "
            "grad-norm var | abs(H-H0) | corr(abs A, H) | CAPO reject | diverged | claim holds |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|\n")
  table = header + "".join(
      f"| {r['objective']} | {_fmt(r['final_accuracy'], 100, 1)} +- "
      f"{_fmt(r['final_accuracy_stderr'], 100, 1)} | {_fmt(r.get('entropy_last'))} | "
      f"{_fmt(r.get('nonzero_grad_frac'))} | {_fmt(r.get('clip_frac'), nd=4)} | "
      f"{_fmt(r.get('grad_norm_var'), nd=4)} | {_fmt(r.get('entropy_target_abs_dev'))} | "
      f"{_fmt(r.get('adv_abs_entropy_corr'))} | {_fmt(r.get('capo_reject_frac'), nd=4)} | "
      f"{r['diverged_seeds']} | {'-' if r['claim_holds'] is None else r['claim_holds']} |\n"
      for r in rows)
  (workdir / "comparison.md").write_text(table)
  # metrics.jsonl: one record per (variant, seed) run with its scalar metrics.
  lines = [json.dumps({"variant": e["variant"], "objective": e["objective"], **r})
           for e in summary["objectives"].values() for r in e["runs"]]
  (workdir / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))
  (workdir / "comparison.json").write_text(json.dumps(rows, indent=2))
  tmp = workdir / "summary.tmp"
  tmp.write_text(json.dumps(summary, indent=2))
  tmp.replace(workdir / "summary.json")
  log(table)
