"""Toy problems for issue 6: the asynchronous duration bandit and a multi-objective template task.

Duration bandit (duration-aware PG, "Reinforcement Learning for Machine Learning Engineering
Agents", ICLR 2026, arXiv 2509.01684). Each update launches `num_workers` rollouts from the
current softmax policy with exponential execution times of mean `duration[arm]` and trains on the
first `batch_size` to finish (stragglers cancelled). Completed samples then follow
q(a) ~ pi(a) / dt_a (approximately, for batch_size << num_workers), so plain REINFORCE (A = r, no baseline) follows
g_k ~ pi_k (r_k / dt_k - sum_a pi_a r_a / dt_a): it converges to the arm with the best reward
RATE (the fast one here). Weighting each sample by `core.duration_weights` (dt / mean dt) gives
E_q[dt A grad log pi] / E_q[dt] = E_pi[A grad log pi], the synchronous gradient, which converges
to the best arm (the slow one). With an exact mean baseline the unweighted fixed point is also the
best arm (g_k = q_k (r_k - E_q r)) and the bias only slows learning (derived); the toy therefore
uses A = r, as the paper's derivation does. (A closed loop of workers that re-launch on finish
would have no steady-state bias by Little's law, only policy lag: the toy models the
first-to-finish batching the bias argument assumes; documented in BUILD_NOTES.)

Multi-objective templates (dynamic reward weighting, arXiv 2509.11452; ChatShopBuddy, arXiv
2603.06065). A categorical policy over response "templates", each with a success probability,
a length in tokens and a format flag. Per sample: r_acc ~ Bernoulli(acc_t), r_con = 1[length <
batch-mean length], r_fmt = fmt_t (the paper's three math objectives). Methods:
  linear        fixed weights w, r = w . (r_acc, r_con, r_fmt);
  hv_guided     fixed w, rewards of the next step multiplied by meta_t = 0.5 + 1.5 tanh(HVC_t) of
                the exact validation point (`core.hv_guided_step`, reference = initial policy);
  gradient      w updated by mirror descent on per-objective gradient inner products
                (`core.gradient_reward_weights`);
  hierarchical  ChatShopBuddy gate `core.hierarchical_reward(outcome=r_acc, subjective=r_fmt,
                process=r_con)` (weights unused);
  contrastive   linear rewards, then `core.contrastive_select` keeps K/2 of K samples per query by
                reward and length; baseline and update on the kept ones only.
Deviations: advantages are group-mean-centred without std scaling (with std scaling GRPO would
cancel the HV meta multiplier, a constant per step); the gradient method's temperature lam is
scaled to the toy's learning rate (paper: lr 1e-6, lam 1e-5, i.e. lr / lam = 0.1, kept).
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rlpost import core

# ------------------------------------------------------------------------------ duration bandit


@functools.partial(jax.jit, static_argnames=("weighted",))
def _bandit_update(logits, arms, rewards, durations, lr, *, weighted: bool):
  def loss(lg):
    logp = jax.nn.log_softmax(lg)[arms][:, None]
    adv = rewards[:, None]
    if weighted:
      adv = adv * core.duration_weights(durations)[:, None]
    mask = jnp.ones_like(logp)
    return core.aggregate_loss(core.pg_loss_per_token(logp, adv, mask)[0], mask, "token_mean")
  return logits - lr * jax.grad(loss)(logits)


def run_duration_bandit(*, seed: int, weighted: bool, durations: Sequence[float],
                        rewards: Sequence[float], reward_noise: float = 0.1,
                        num_workers: int = 128, batch_size: int = 16, num_updates: int = 300,
                        learning_rate: float = 0.1) -> dict[str, Any]:
  """Simulates asynchronous PG on the bandit; returns the final policy and per-update traces.

  Each update launches `num_workers` rollouts from the current policy, with exponential execution
  times of mean `durations[arm]`, and trains on the first `batch_size` to finish (stragglers are
  cancelled). For batch_size << num_workers the batch follows q(a) ~ pi(a) / dt_a. Weights use
  the arm's nominal duration dt_a (the paper weights by the measured time of each sample).

  Returns a dict with `probs` (final softmax policy), `arm` (its argmax), `prob_trace`
  [num_updates, K] and `arm_frac_trace` [num_updates, K] (arm shares of each update's batch).
  """
  dt = np.asarray(durations, np.float64)
  mu = np.asarray(rewards, np.float64)
  if dt.shape != mu.shape or dt.ndim != 1 or len(dt) < 2:
    raise ValueError(f"durations and rewards must be equal-length 1-D lists of >= 2 arms; got "
                     f"{dt.shape} and {mu.shape}")
  if np.any(dt <= 0):
    raise ValueError(f"durations must be > 0; got {list(dt)}")
  if not 1 <= batch_size <= num_workers:
    raise ValueError(f"need 1 <= batch_size <= num_workers; got {batch_size}, {num_workers}")
  rng = np.random.default_rng(seed)
  logits = jnp.zeros(len(dt), jnp.float32)
  probs = np.full(len(dt), 1.0 / len(dt))
  prob_trace, frac_trace = [], []
  for _ in range(num_updates):
    launched = rng.choice(len(dt), size=num_workers, p=probs)
    finish = rng.exponential(dt[launched])
    arms = launched[np.argsort(finish, kind="stable")[:batch_size]]
    rew = mu[arms] + reward_noise * rng.standard_normal(batch_size)
    logits = _bandit_update(logits, jnp.asarray(arms), jnp.asarray(rew, jnp.float32),
                            jnp.asarray(dt[arms], jnp.float32), jnp.float32(learning_rate),
                            weighted=weighted)
    probs = np.asarray(jax.nn.softmax(logits), np.float64)
    probs = probs / probs.sum()
    prob_trace.append(probs.copy())
    frac_trace.append(np.bincount(arms, minlength=len(dt)) / len(arms))
  return {"probs": probs, "arm": int(np.argmax(probs)), "prob_trace": np.asarray(prob_trace),
          "arm_frac_trace": np.asarray(frac_trace)}


# ------------------------------------------------------------------------ multi-objective task

MO_METHODS = ("linear", "hv_guided", "gradient", "hierarchical", "contrastive")
MAXIMIZE = (True, False, True)  # accuracy, length (minimised), format


def expected_point(probs, templates) -> jax.Array:
  """Exact (accuracy, length, format) of the policy: the validation point."""
  return probs @ templates


def make_mo_run(method: str, templates: np.ndarray, *, num_queries: int, group_size: int,
                steps: int, learning_rate: float, lam: float, length_noise: float = 3.0):
  """A jitted `run(key, w0) -> (final_point [3], points [steps, 3], weights [steps, 3])`.

  `templates` is [T, 3]: (success probability, length in tokens, format flag) per template.
  """
  if method not in MO_METHODS:
    raise ValueError(f"unknown multi-objective method {method!r}; valid: {', '.join(MO_METHODS)}")
  tmpl = jnp.asarray(templates, jnp.float32)
  n = num_queries * group_size

  def sample(logits, key):
    k1, k2, k3 = jax.random.split(key, 3)
    t = jax.random.categorical(k1, logits, shape=(n,))
    acc = jax.random.bernoulli(k2, tmpl[t, 0]).astype(jnp.float32)
    length = tmpl[t, 1] + length_noise * jax.random.normal(k3, (n,))
    con = (length < jnp.mean(length)).astype(jnp.float32)
    return t, jnp.stack([acc, con, tmpl[t, 2]], -1), length

  def pg_grad(logits, t, adv):
    def loss(lg):
      logp = jax.nn.log_softmax(lg)[t][:, None]
      mask = jnp.ones_like(logp)
      return core.aggregate_loss(core.pg_loss_per_token(logp, adv[:, None], mask)[0], mask,
                                 "token_mean")
    return jax.grad(loss)(logits)

  def centred(r, keep=None):
    r = r.reshape(num_queries, group_size)
    if keep is None:
      return core.grpo_advantages(r, scale_by_std=False).reshape(n)
    keep = keep.reshape(num_queries, group_size)
    base = core.masked_mean(r, keep, axis=1)[:, None]
    return jnp.where(keep, r - base, 0.0).reshape(n)

  @jax.jit
  def run(key, w0):
    logits0 = jnp.zeros(tmpl.shape[0], jnp.float32)
    start = expected_point(jax.nn.softmax(logits0), tmpl)
    buf0 = core.init_pareto_buffer(start, capacity=64)

    def step(carry, k):
      logits, w, buf, meta = carry
      t, rew, length = sample(logits, k)
      if method == "hierarchical":
        r = core.hierarchical_reward(rew[:, 0], rew[:, 2], rew[:, 1])
      else:
        r = core.scalarise(rew, w)
      if method == "hv_guided":
        r = r * meta
      keep = None
      if method == "contrastive":
        keep = core.contrastive_select(r.reshape(num_queries, group_size),
                                       length.reshape(num_queries, group_size),
                                       keep=group_size // 2).reshape(n)
      g = pg_grad(logits, t, centred(r, keep))
      if method == "gradient":
        grads = jnp.stack([pg_grad(logits, t, centred(rew[:, i])) for i in range(3)])
        w, _ = core.gradient_reward_weights(w, grads, lr=learning_rate, lam=lam)
      logits = logits - learning_rate * g
      point = expected_point(jax.nn.softmax(logits), tmpl)
      if method == "hv_guided":
        buf, _, meta = core.hv_guided_step(buf, point, maximize=MAXIMIZE)
      return (logits, w, buf, meta), (point, w)

    (logits, _, _, _), (points, weights) = jax.lax.scan(
        step, (logits0, w0.astype(jnp.float32), buf0, jnp.float32(1.0)),
        jax.random.split(key, steps))
    return expected_point(jax.nn.softmax(logits), tmpl), points, weights

  return run


def front_hypervolume(points: np.ndarray, ref: np.ndarray) -> float:
  """Exact 3-D hypervolume of a set of (accuracy, length, format) points (length minimised)."""
  return float(core.hypervolume(jnp.asarray(points, jnp.float32), jnp.asarray(ref, jnp.float32),
                                maximize=MAXIMIZE))


def pareto_mask(points: np.ndarray) -> np.ndarray:
  """Non-dominated points (accuracy and format maximised, length minimised)."""
  p = np.asarray(points, np.float64) * np.asarray([1.0, -1.0, 1.0])
  dom = [(np.all(p >= p[i], axis=1) & np.any(p > p[i], axis=1)).any() for i in range(len(p))]
  return ~np.asarray(dom, bool)


# ------------------------------------------------------------------------------- experiments


def _write_json(path, obj) -> None:
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  tmp = path.with_suffix(".tmp")
  tmp.write_text(json.dumps(obj, indent=2))
  os.replace(tmp, path)


def _plt():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _progress(total: int, desc: str, enabled: bool):
  if not enabled:
    return None
  from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm(total=total, desc=desc, dynamic_ncols=True)


def run_duration_bandit_experiment(config, workdir, *, progress: bool = True,
                                   log=print) -> dict[str, Any]:
  """Unweighted vs duration-weighted asynchronous PG per seed; metrics.jsonl, curves.png,
  summary.json (arm choice per method per seed)."""
  import pathlib  # pylint: disable=g-import-not-at-top
  from rlpost.llm.train import MetricsWriter  # pylint: disable=g-import-not-at-top
  c = config
  if not c.seeds:
    raise ValueError("config.seeds must list at least one seed")
  for f in ("num_workers", "batch_size", "num_updates"):
    if isinstance(c[f], bool) or not isinstance(c[f], int) or c[f] < 1:
      raise ValueError(f"config.{f} must be a positive int; got {c[f]!r}")
  if not c.learning_rate > 0:
    raise ValueError(f"config.learning_rate must be > 0; got {c.learning_rate!r}")
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  writer = MetricsWriter(workdir, tensorboard=False)
  writer.truncate(lambda r: False)
  dt, mu = np.asarray(c.durations, float), np.asarray(c.rewards, float)
  dt_list, mu_list = [float(x) for x in dt], [float(x) for x in mu]
  fast, best = int(np.argmin(dt)), int(np.argmax(mu))
  pbar = _progress(2 * len(c.seeds), "duration_bandit", progress)
  runs, traces = [], {}
  for method in ("unweighted", "duration_weighted"):
    for seed in c.seeds:
      out = run_duration_bandit(seed=int(seed), weighted=method == "duration_weighted",
                                durations=c.durations, rewards=c.rewards,
                                reward_noise=c.reward_noise, num_workers=c.num_workers,
                                batch_size=c.batch_size, num_updates=c.num_updates,
                                learning_rate=c.learning_rate)
      for i in range(0, c.num_updates, max(1, c.log_every)):
        writer.write({"method": method, "seed": int(seed), "step": i + 1,
                      **{f"prob_arm{k}": float(p) for k, p in enumerate(out["prob_trace"][i])},
                      **{f"batch_frac_arm{k}": float(p)
                         for k, p in enumerate(out["arm_frac_trace"][i])}})
      traces[(method, int(seed))] = out["prob_trace"][:, best]
      runs.append({"method": method, "seed": int(seed), "arm": out["arm"],
                   "chose": "slow/best" if out["arm"] == best else (
                       "fast" if out["arm"] == fast else "other"),
                   "final_probs": [float(p) for p in out["probs"]]})
      if pbar is not None:
        pbar.update(1)
  if pbar is not None:
    pbar.close()
  plt = _plt()
  fig, ax = plt.subplots(figsize=(6, 4))
  for (method, seed), tr in traces.items():
    ax.plot(np.arange(1, len(tr) + 1), tr, "-" if method == "unweighted" else "--",
            color="C0" if method == "unweighted" else "C1",
            label=method if seed == int(c.seeds[0]) else None)
  ax.set(xlabel="update", ylabel=f"pi(best arm {best}, dt={dt[best]:g})",
         title="asynchronous PG: duration weighting", ylim=(0, 1))
  ax.legend()
  fig.tight_layout()
  fig.savefig(workdir / "curves.png", dpi=80)
  plt.close(fig)
  choice = {m: {str(r["seed"]): r["arm"] for r in runs if r["method"] == m}
            for m in ("unweighted", "duration_weighted")}
  summary = {"durations": dt_list, "rewards": mu_list, "fast_arm": fast, "best_arm": best,
             "reward_rate_arm": int(np.argmax(mu / dt)), "arm_choice": choice, "runs": runs,
             "config": {k: (list(v) if isinstance(v, tuple) else v)
                        for k, v in c.to_dict().items()}}
  writer.close()
  _write_json(workdir / "summary.json", summary)
  lines = [f"{'method':<18} " + " ".join(f"seed{s:<3}" for s in c.seeds)]
  for m, ch in choice.items():
    lines.append(f"{m:<18} " + " ".join(
        f"{('slow' if a == best else 'fast' if a == fast else a):<7}" for a in ch.values()))
  lines.append(f"arms: durations {dt_list}, mean rewards {mu_list}; best arm {best}, fast "
               f"arm {fast}")
  log("\n".join(lines))
  return summary


def run_multiobjective_experiment(config, workdir, *, progress: bool = True,
                                  log=print) -> dict[str, Any]:
  """Fronts of linear, hv-guided, gradient, hierarchical and contrastive weighting (module
  docstring); summary.json holds the hypervolume per method and seed."""
  import pathlib  # pylint: disable=g-import-not-at-top
  from rlpost.llm.train import MetricsWriter  # pylint: disable=g-import-not-at-top
  c = config
  templates = np.asarray(c.templates, np.float32)
  if templates.ndim != 2 or templates.shape[1] != 3:
    raise ValueError(f"config.templates must be a list of (accuracy, length, format) triples; got "
                     f"shape {templates.shape}")
  weights = np.asarray(c.weights, np.float32)
  if weights.ndim != 2 or weights.shape[1] != 3 or np.any(weights < 0):
    raise ValueError("config.weights must be a list of non-negative 3-vectors")
  weights = weights / weights.sum(1, keepdims=True)
  for m in c.methods:
    if m not in MO_METHODS:
      raise ValueError(f"config.methods has unknown method {m!r}; valid: {', '.join(MO_METHODS)}")
  if c.group_size < 2 or c.group_size % 2:
    raise ValueError(f"config.group_size must be an even int >= 2; got {c.group_size!r}")
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  writer = MetricsWriter(workdir, tensorboard=False)
  writer.truncate(lambda r: False)
  # Nadir reference (worst template in every objective) for the reported HV; the HV-guided
  # method itself uses the initial policy as its reference, as in the paper.
  nadir = np.asarray([0.0, templates[:, 1].max() + 1.0, 0.0], np.float32)
  start = np.asarray(expected_point(jnp.full(len(templates), 1 / len(templates)),
                                    jnp.asarray(templates)))
  pbar = _progress(len(c.methods), "multiobjective", progress)
  results, finals, hv_curves = {}, {}, {}
  for method in c.methods:
    run = jax.vmap(jax.vmap(make_mo_run(method, templates, num_queries=c.num_queries,
                                        group_size=c.group_size, steps=c.steps,
                                        learning_rate=c.learning_rate, lam=c.lam),
                            in_axes=(None, 0)), in_axes=(0, None))
    keys = jnp.stack([jax.random.key_data(jax.random.key(int(s))) for s in c.seeds])
    final, points, wts = run(jax.vmap(jax.random.wrap_key_data)(keys), jnp.asarray(weights))
    final, points, wts = np.asarray(final), np.asarray(points), np.asarray(wts)
    per_seed = []
    for si, seed in enumerate(c.seeds):
      hv = front_hypervolume(final[si], nadir)
      hv_start_ref = front_hypervolume(final[si], start)
      curve = [front_hypervolume(points[si, :, t], nadir)
               for t in range(0, c.steps, max(1, c.log_every))]
      for j, t in enumerate(range(0, c.steps, max(1, c.log_every))):
        writer.write({"method": method, "seed": int(seed), "step": t + 1,
                      "hypervolume": curve[j],
                      "accuracy_mean": float(points[si, :, t, 0].mean()),
                      "length_mean": float(points[si, :, t, 1].mean()),
                      "format_mean": float(points[si, :, t, 2].mean()),
                      **{f"weight{i}_mean": float(wts[si, :, t, i].mean()) for i in range(3)}})
      per_seed.append({"seed": int(seed), "hypervolume": hv,
                       "hypervolume_initial_ref": hv_start_ref,
                       "final_points": final[si].round(4).tolist(),
                       "final_weights": wts[si, :, -1].round(4).tolist()})
      hv_curves.setdefault(method, []).append(curve)
    finals[method] = final.reshape(-1, 3)
    hvs = [r["hypervolume"] for r in per_seed]
    results[method] = {"hypervolume_mean": float(np.mean(hvs)),
                       "hypervolume_std": float(np.std(hvs)), "per_seed": per_seed}
    if pbar is not None:
      pbar.update(1)
  if pbar is not None:
    pbar.close()
  plt = _plt()
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  axes[0].scatter(templates[:, 1], templates[:, 0], marker="x", color="k", label="templates")
  axes[1].scatter(templates[:, 1], templates[:, 2], marker="x", color="k", label="templates")
  for i, (m, pts) in enumerate(finals.items()):
    front = pts[pareto_mask(pts)]
    order = np.argsort(front[:, 1])
    axes[0].scatter(pts[:, 1], pts[:, 0], s=12, color=f"C{i}", alpha=0.5)
    axes[0].plot(front[order, 1], front[order, 0], "-", color=f"C{i}", label=m)
    axes[1].scatter(pts[:, 1], pts[:, 2], s=12, color=f"C{i}", label=m)
    curve = np.mean(hv_curves[m], axis=0)
    axes[2].plot(np.arange(len(curve)) * max(1, c.log_every) + 1, curve, color=f"C{i}", label=m)
  axes[0].set(xlabel="length (tokens, minimised)", ylabel="accuracy",
              title="final points and Pareto fronts")
  axes[1].set(xlabel="length (tokens, minimised)", ylabel="format rate", title="format vs length")
  axes[2].set(xlabel="step", ylabel="hypervolume (nadir ref)", title="front hypervolume")
  for ax in axes:
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(workdir / "curves.png", dpi=80)
  plt.close(fig)
  summary = {"templates": templates.tolist(), "weights": weights.round(4).tolist(),
             "reference_nadir": nadir.tolist(), "initial_point": start.round(4).tolist(),
             "methods": results, "steps": c.steps, "seeds": list(c.seeds)}
  writer.close()
  _write_json(workdir / "summary.json", summary)
  lines = [f"{'method':<13} {'HV (nadir ref)':>16}   over {len(c.seeds)} seeds x "
           f"{len(weights)} weight vectors, {c.steps} steps"]
  for m, r in results.items():
    lines.append(f"{m:<13} {r['hypervolume_mean']:9.3f} +- {r['hypervolume_std']:.3f}")
  log("\n".join(lines))
  return summary
