"""The PromptPG experiment behind experiments/promptpg.py: solver SFT (cached), then, per seed,
random-selection vs PromptPG-selection accuracy of the frozen solver on held-out problems.

Data (config.task.source):
  synthetic  rlpost.llm.tasks.synthetic problems of `task.families` at `task.level`. Candidate
             examples carry a random solution style from `task.styles`. Solver SFT pairs, the
             candidate pool and the policy's training problems are drawn from the train split at
             disjoint index ranges; evaluation uses distinct test-split problems.
  tabmwp     the real TabMWP file `task.tabmwp_path` (e.g. ../shared/data/tabmwp/
             problems_dev1k.json): problems whose few-shot prompt fits `prompt_len` are shuffled
             once; the first `eval.size` are the evaluation set, the rest feed solver SFT pairs
             (random examples), candidates and policy training.
Per seed, the candidate pool and the policy's training problems are redrawn (as in the paper's
learn_policy.py), so the across-seed spread covers both.
"""
from __future__ import annotations

import json
import pathlib
import time
from typing import Any, Callable

import numpy as np

from rlpost.llm.agents import common
from rlpost.llm.agents import promptpg

_SYN_OFFSETS = {"solver_examples": 0, "solver_queries": 20_000, "candidates": 100_000,
                "train": 200_000}


def _records(c) -> dict[str, Any]:
  """Problem pools: solver_examples, solver_queries, eval, and a per-seed draw function."""
  from rlpost.llm import tasks  # pylint: disable=g-import-not-at-top
  t = c.task
  if t.source == "synthetic":
    fams, styles = tuple(t.families), tuple(t.styles)
    if not fams:
      raise ValueError("config.task.families must name at least one family")
    for s in styles:
      if s not in tasks.STYLES:
        raise ValueError(f"config.task.styles has unknown style {s!r}; known: {tasks.STYLES}")
    if not styles:
      raise ValueError("config.task.styles must name at least one style")
    gen = lambda n, start, split="train": tasks.generate_dataset(
        n, seed=t.seed, split=split, level=t.level, families=fams, start=start)
    examples = gen(c.solver.pool_size, _SYN_OFFSETS["solver_examples"])
    queries = gen(c.solver.pool_size, _SYN_OFFSETS["solver_queries"])
    eval_set = tasks.generate_dataset(c.eval.size, seed=t.seed, split="test", level=t.level,
                                      families=fams, unique=True)

    def draw(seed: int):
      rng = np.random.default_rng([seed, 3])
      cands = gen(c.policy.num_candidates, _SYN_OFFSETS["candidates"] + 1000 * seed)
      cands = [promptpg.with_style(r, styles[int(rng.integers(len(styles)))]) for r in cands]
      train = gen(c.policy.train_size, _SYN_OFFSETS["train"] + 1000 * seed)
      return cands, train

    return {"examples": examples, "queries": queries, "eval": eval_set, "draw": draw,
            "styles": styles}
  if t.source == "tabmwp":
    path = pathlib.Path(t.tabmwp_path)
    if not path.is_file():
      raise FileNotFoundError(f"config.task.tabmwp_path={str(path)!r} does not exist")
    records = tasks.load_tabmwp(path)
    tok = tasks.load_tokenizer(None)
    # Keep problems whose query prompt takes at most 3/4 and whose example text at most 1/4 of
    # the prompt budget (so any example + query fits) and whose target fits max_new_tokens.
    n_tok = lambda text: len(tok.encode(text, add_special_tokens=False))
    fits = [r for r in records
            if n_tok(promptpg.fewshot_prompt([], r)) <= 3 * c.prompt_len // 4 - 2 and
            n_tok(promptpg.example_text(r, with_table=t.example_table,
                                        answer_only=c.solver.answer_only)) <= c.prompt_len // 4
            and n_tok(promptpg.fewshot_target([], r, answer_only=c.solver.answer_only)) <
            c.max_new_tokens]
    rng = np.random.default_rng([t.seed, 5])
    fits = [fits[i] for i in rng.permutation(len(fits))]
    need = c.eval.size + 2
    if len(fits) < need:
      raise ValueError(f"only {len(fits)} TabMWP problems fit prompt_len={c.prompt_len}; "
                       f"config.eval.size={c.eval.size} is too large")
    eval_set, rest = fits[:c.eval.size], fits[c.eval.size:]

    def draw_real(seed: int):
      r = np.random.default_rng([seed, 9])
      idx = r.permutation(len(rest))
      k = min(c.policy.num_candidates, len(rest) // 2)
      return ([rest[i] for i in idx[:k]],
              [rest[i] for i in idx[k:k + c.policy.train_size]])

    return {"examples": rest, "queries": rest, "eval": eval_set, "draw": draw_real,
            "styles": ()}
  raise ValueError(f"config.task.source must be 'synthetic' or 'tabmwp', got {t.source!r}")


def validate(c) -> None:
  """Raises ValueError naming the bad config field."""
  common.positive_int(c.prompt_len, "prompt_len")
  common.positive_int(c.max_new_tokens, "max_new_tokens")
  common.positive_int(c.solve_batch_size, "solve_batch_size")
  common.positive_int(c.eval.size, "eval.size")
  common.positive_int(c.solver.steps, "solver.steps", allow_zero=True)
  common.positive_int(c.solver.batch_size, "solver.batch_size")
  common.positive_int(c.solver.pool_size, "solver.pool_size")
  common.positive_float(c.solver.learning_rate, "solver.learning_rate")
  if not 0.0 <= c.solver.mismatch_prob <= 1.0:
    raise ValueError(f"config.solver.mismatch_prob must be in [0, 1], got {c.solver.mismatch_prob}")
  p = c.policy
  common.positive_int(p.num_candidates, "policy.num_candidates")
  common.positive_int(p.train_size, "policy.train_size")
  common.positive_int(p.epochs, "policy.epochs")
  common.positive_int(p.batch_size, "policy.batch_size")
  common.positive_int(p.out_dim, "policy.out_dim")
  common.positive_float(p.learning_rate, "policy.learning_rate")
  shots = common.positive_int(p.shot_number, "policy.shot_number")
  if shots > p.num_candidates:
    raise ValueError(f"config.policy.shot_number={shots} > policy.num_candidates="
                     f"{p.num_candidates}")
  if not list(c.seeds):
    raise ValueError("config.seeds must list at least one seed")
  for s in c.seeds:
    common.positive_int(s, "seeds[...]", allow_zero=True)


def _solver_batch_fn(c, pools, tokenizer):
  """(prompts, targets) of solver SFT step `step`: query + same-family example (random style)."""
  examples, queries, styles = pools["examples"], pools["queries"], pools["styles"]
  by_family: dict[Any, list[int]] = {}
  for i, e in enumerate(examples):
    by_family.setdefault(e.family, []).append(i)
  shots = c.policy.shot_number

  def batch_fn(step: int):
    rng = np.random.default_rng([c.task.seed, 17, step])
    ps, ts = [], []
    for qi in rng.integers(len(queries), size=c.solver.batch_size):
      q = queries[int(qi)]
      same = by_family.get(q.family, []) if rng.random() >= c.solver.mismatch_prob else []
      source = same if len(same) >= shots else list(range(len(examples)))
      picks = rng.choice(len(source), size=shots, replace=False)
      exs = [examples[source[int(j)]] for j in picks]
      if styles:
        exs = [promptpg.with_style(e, styles[int(rng.integers(len(styles)))]) for e in exs]
      ps.append(promptpg.fewshot_prompt(exs, q, with_table=c.task.example_table,
                                        answer_only=c.solver.answer_only))
      ts.append(promptpg.fewshot_target(exs, q, answer_only=c.solver.answer_only))
    return ps, ts

  del tokenizer
  return batch_fn


def _family_matched(cands, queries, *, shot_number: int, seed: int) -> np.ndarray:
  """Diagnostic selection: random candidates of the query's own family (when it has one)."""
  rng = np.random.default_rng([seed, 13])
  out = []
  for q in queries:
    same = [j for j, cnd in enumerate(cands) if cnd.family == q.family]
    pool = same if len(same) >= shot_number else list(range(len(cands)))
    out.append(rng.choice(pool, size=shot_number, replace=False))
  return np.stack(out)


def plot(records, path, title: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for seed in sorted({r["seed"] for r in records if r.get("phase") == "policy"}):
    rows = [r for r in records if r.get("phase") == "policy" and r["seed"] == seed]
    axes[0].plot([r["step"] for r in rows], [r["accuracy"] for r in rows], alpha=0.7,
                 label=f"seed {seed}")
  axes[0].set(xlabel="policy step", ylabel="solver accuracy on sampled prompts",
              title="PromptPG training")
  evals = [r for r in records if r.get("phase") == "eval"]
  names = sorted({r["selection"] for r in evals})
  for k, name in enumerate(names):
    accs = [r["accuracy"] for r in evals if r["selection"] == name]
    axes[1].scatter([k] * len(accs), accs, label=name)
    axes[1].errorbar([k + 0.15], [np.mean(accs)], yerr=[np.std(accs)], fmt="s", capsize=4)
  axes[1].set_xticks(range(len(names)), names)
  axes[1].set(ylabel="held-out accuracy", title="selection (dots = seeds)")
  for ax in axes:
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=8)
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)


def format_table(summary) -> str:
  n = summary["eval_size"]
  lines = [f"{'selection':<22} held-out accuracy (n={n}) mean +- std over "
           f"{len(summary['seeds'])} seeds   per seed"]
  for name in summary["selections"]:
    s = summary["results"][name]
    per = " ".join(f"{100 * a:.1f}" for a in s["per_seed"])
    lines.append(f"{name:<22} {100 * s['mean']:6.2f} +- {100 * s['std']:5.2f}   [{per}]")
  lines.append(f"PromptPG - random: {100 * summary['lift']:+.2f} points; std ratio "
               f"(promptpg/random) {summary['std_ratio']:.2f}; wall {summary['wall_s']:.0f} s")
  return "\n".join(lines)


def run(config, workdir, *, progress: bool = True, log: Callable[[str], None] = print):
  """Runs the experiment; writes metrics.jsonl, curves.png, summary.json; returns the summary."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from rlpost.llm import tasks  # pylint: disable=g-import-not-at-top
  from rlpost.llm.sampler import Sampler  # pylint: disable=g-import-not-at-top
  from rlpost.llm.train import MetricsWriter  # pylint: disable=g-import-not-at-top
  t_begin = time.perf_counter()
  c = config
  validate(c)
  pools = _records(c)
  tokenizer = tasks.load_tokenizer(None)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "metrics.jsonl").unlink(missing_ok=True)
  writer = MetricsWriter(workdir, tensorboard=False)
  m = c.solver.model
  spec = {"task": c.task.to_dict(), "model": m.to_dict(), "steps": c.solver.steps,
          "batch_size": c.solver.batch_size, "lr": c.solver.learning_rate,
          "pool_size": c.solver.pool_size, "mismatch_prob": c.solver.mismatch_prob,
          "answer_only": c.solver.answer_only, "shots": c.policy.shot_number,
          "prompt_len": c.prompt_len, "max_new_tokens": c.max_new_tokens,
          "init_dir": c.solver.init_dir}
  batch_fn = _solver_batch_fn(c, pools, tokenizer)
  train_fn = lambda: common.train_text_solver(
      tokenizer=tokenizer, model_spec=m.to_dict(), batch_fn=batch_fn, steps=c.solver.steps,
      learning_rate=c.solver.learning_rate, seed=c.task.seed, prompt_len=c.prompt_len,
      response_len=c.max_new_tokens, init_dir=c.solver.init_dir, progress=progress,
      desc="solver SFT")
  cache_dir = c.solver.cache_dir or str(workdir / "solver_cache")
  solver, _, solver_info = common.cached_solver(cache_dir, spec, train_fn, log=log)
  writer.write({"phase": "solver", **{k: v for k, v in solver_info.items() if k != "spec"}})
  sampler = Sampler(solver, min_prompt_bucket=c.prompt_len)
  solver_params = nnx.state(solver)
  seeds = [int(s) for s in c.seeds]
  p = c.policy
  eval_set = pools["eval"]
  steps_per_seed = p.epochs * -(-p.train_size // p.batch_size)
  pbar = common.progress_bar(steps_per_seed * len(seeds), "promptpg", progress)
  results: dict[str, list[float]] = {"random": [], "promptpg": []}
  has_family = all(r.family for r in eval_set)
  if has_family:
    results["family_matched"] = []
  best_epochs = []
  for seed in seeds:
    cands, train = pools["draw"](seed)
    setup = promptpg.SelectionSetup(
        sampler=sampler, solver_params=solver_params, tokenizer=tokenizer, candidates=cands,
        train=train, prompt_len=c.prompt_len, max_new_tokens=c.max_new_tokens,
        solve_batch_size=c.solve_batch_size, example_table=c.task.example_table,
        answer_only=c.solver.answer_only)
    selections = {"random": promptpg.random_selection(len(eval_set), len(cands),
                                                      shot_number=p.shot_number, seed=seed)}
    if has_family:
      selections["family_matched"] = _family_matched(cands, eval_set, shot_number=p.shot_number,
                                                     seed=seed)
    policy, _ = promptpg.train_selection_policy(
        setup, seed=seed, epochs=p.epochs, batch_size=p.batch_size,
        learning_rate=p.learning_rate, shot_number=p.shot_number, out_dim=p.out_dim,
        exact=p.exact, log_fn=writer.write, pbar=pbar)
    best_epochs.append(policy["best_epoch"])
    selections["promptpg"] = promptpg.policy_selection(setup, policy, eval_set,
                                                       shot_number=p.shot_number)
    for name, ids in selections.items():
      acc = float(promptpg.solve(setup, eval_set, ids).mean())
      results[name].append(acc)
      rec = {"phase": "eval", "selection": name, "seed": seed, "accuracy": acc,
             "n": len(eval_set)}
      if has_family:
        rec["same_family_frac"] = float(np.mean(
            [cands[row[0]].family == q.family for q, row in zip(eval_set, ids)]))
      if pools["styles"]:
        for style in pools["styles"]:
          rec[f"style_{style}_frac"] = float(np.mean(
              [promptpg.style_of(cands[row[0]]) == style for row in ids]))
      writer.write(rec)
  if pbar is not None:
    pbar.close()
  stats = {}
  for name, accs in results.items():
    mean, std = common.mean_std(accs)
    stats[name] = {"mean": mean, "std": std, "per_seed": accs}
  summary = {
      "headline": "promptpg_accuracy_mean", "promptpg_accuracy_mean": stats["promptpg"]["mean"],
      "promptpg_accuracy_std": stats["promptpg"]["std"],
      "baseline": "random_accuracy_mean", "random_accuracy_mean": stats["random"]["mean"],
      "random_accuracy_std": stats["random"]["std"],
      "lift": stats["promptpg"]["mean"] - stats["random"]["mean"],
      "std_ratio": (stats["promptpg"]["std"] / stats["random"]["std"]
                    if stats["random"]["std"] > 0 else float("nan")),
      "results": stats, "selections": list(results), "seeds": seeds,
      "eval_size": len(eval_set), "source": c.task.source, "best_epochs": best_epochs,
      "solver": {k: v for k, v in solver_info.items() if k != "spec"},
      "wall_s": time.perf_counter() - t_begin,
  }
  writer.close()
  records = writer.records()
  plot(records, workdir / "curves.png",
       title=f"PromptPG ({c.task.source}): random {100 * summary['random_accuracy_mean']:.1f}% "
             f"-> PromptPG {100 * summary['promptpg_accuracy_mean']:.1f}%")
  common.write_summary(workdir, summary)
  (workdir / "config.json").write_text(json.dumps(c.to_dict(), indent=2, default=str))
  log(format_table(summary))
  return summary
