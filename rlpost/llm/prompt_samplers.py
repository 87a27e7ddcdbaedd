"""Prompt samplers for the RL loop: which prompts are rolled out, and how often, before generation.

A `PromptSampler` turns explicit, checkpointable state (a dict pytree of arrays) into a rollout
plan of `num_prompts` rows of `group_size` completions, then updates its state from the rows'
0/1 outcomes. `RLTrainer(prompt_sampler=...)` calls `sampled_rollout` instead of its own data
stream; without a sampler the loop is unchanged.

  UniformSampler     the data stream of the loop (`stream_indices`), for reference / ablations.
  VadeSampler        VADE (arXiv 2511.18902): per-prompt Beta posteriors, Thompson draw, top-P
                     prompts by p (1 - p), two-scale decay (`rlpost.core.vade_*`).
  V0Sampler          V0 (arXiv 2602.03584): a small value model predicts each candidate's success
                     probability from the policy's (prompt-feature, correct?) history; the greedy
                     allocator `core.v0_allocate_budget` splits the step's completion budget.
  CurriculumSampler  CRAFT-GUI-style difficulty curriculum (arXiv 2508.11360) over the synthetic
                     task's `difficulty` levels (`rlpost.core.curriculum_*`).

V0 budgets: by default (`variable_groups=True`) every candidate prompt is rolled out as ONE group
of its own size B_i in [b_min, b_max] (sum B_i = rl.batch_size, one generation call); the rollout
is a padded `[candidates, min(b_max, batch)]` grid with a `valid` mask, group statistics use only
the valid slots (`core.grpo_advantages(valid=...)`), and the update sees the batch_size real
completions. `variable_groups=False` keeps the earlier approximation (budgets quantised to whole
rows of G by largest remainder; a prompt with k rows is k separate groups). Deviation (documented
in BUILD_NOTES): the value model is a logistic regression over hand-made prompt features trained
online on a fixed-size history buffer, not V0's frozen embedder + TabPFN in-context classifier.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Optional, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rlpost import core
from rlpost.llm.train import stream_indices

State = dict  # a dict pytree of jax arrays (checkpointable with rlpost.llm.checkpoint)

# The plan's key is fold_in(rollout key, _PLAN_SALT); generation keeps fold_in(key, 0) exactly
# as the loop's own first round, so a uniform sampler reproduces the default rollout bit for bit.
_PLAN_SALT = 1_000_003


@dataclasses.dataclass(frozen=True)
class RolloutPlan:
  """Pool indices of the P rows to roll out (repeats allowed), the new stream position and
  scalar diagnostics."""
  prompt_ids: np.ndarray
  data_pos: int
  stats: dict[str, float]
  state: Optional[State] = None  # the state after planning (None: unchanged)
  # Variable group sizes: completions per prompt (sum = rl.batch_size) and the padded grid width.
  counts: Optional[np.ndarray] = None
  width: Optional[int] = None


class PromptSampler(Protocol):
  """What the RL loop needs from a prompt sampler."""

  name: str

  def init_state(self, pool: Sequence[Any]) -> State:
    """Initial state for a training pool (dict of arrays)."""

  def plan(self, state: State, *, key: jax.Array, data_pos: int, num_prompts: int,
           group_size: int, data_seed: int, pool: Sequence[Any]) -> RolloutPlan:
    """The rows of this step (a pure function of its arguments)."""

  def update(self, state: State, *, prompt_ids: np.ndarray, acc: np.ndarray,
             pool: Sequence[Any]) -> State:
    """The state after observing `acc [P, G]` 0/1 outcomes of the planned rows (a sampler whose
    plan sets `counts` also gets `valid=[P, width]`, the real slots of the padded grid)."""


def informative_rows(acc: np.ndarray, valid: Optional[np.ndarray] = None) -> np.ndarray:
  """Rows with mixed outcomes (over the valid slots when given)."""
  if valid is None:
    return acc.max(axis=1) > acc.min(axis=1)
  return np.where(valid, acc, -np.inf).max(axis=1) > np.where(valid, acc, np.inf).min(axis=1)


def sampled_rollout(trainer, params, data_pos: int, key) -> tuple[dict[str, Any], int,
                                                                    dict[str, float]]:
  """`RLTrainer.rollout` with a prompt sampler: plan, one generation round, state update.

  Updates `trainer.prompt_sampler_state` and stores the stats (plan diagnostics plus
  `informative_groups`, the number of rows with mixed outcomes) in `trainer.last_rollout_stats`.
  """
  cfg, sampler = trainer.cfg, trainer.prompt_sampler
  plan = sampler.plan(trainer.prompt_sampler_state, key=jax.random.fold_in(key, _PLAN_SALT),
                      data_pos=data_pos, num_prompts=cfg.num_prompts, group_size=cfg.group_size,
                      data_seed=trainer.data_seed, pool=trainer.pool)
  ids = np.asarray(plan.prompt_ids, np.int64)
  if plan.counts is None and ids.shape != (cfg.num_prompts,):
    raise ValueError(f"prompt sampler {sampler.name!r} planned {ids.shape} rows; the loop needs "
                     f"({cfg.num_prompts},) (rl.batch_size / rl.group_size)")
  groups = trainer._sample_round(params, data_pos, jax.random.fold_in(key, 0), idx=ids,  # pylint: disable=protected-access
                                 counts=plan.counts, width=plan.width)
  planned = trainer.prompt_sampler_state if plan.state is None else plan.state
  valid = groups.get("valid")
  kw = {} if plan.counts is None else {"valid": valid}
  trainer.prompt_sampler_state = sampler.update(planned, prompt_ids=ids, acc=groups["acc"],
                                                pool=trainer.pool, **kw)
  inf = informative_rows(groups["acc"], valid)
  used = np.ones(len(ids), bool) if valid is None else valid.any(axis=1)
  stats = {"zero_spread_frac": float(np.mean(~inf[used])), "ds_rounds": 0.0,
           "ds_filled_frac": 0.0, "informative_groups": float(inf.sum()), **plan.stats}
  trainer.last_rollout_stats = stats
  return groups, int(plan.data_pos), stats


# ------------------------------------------------------------------------------------- uniform


@dataclasses.dataclass(frozen=True)
class UniformSampler:
  """The loop's own data stream: rows = stream positions [data_pos, data_pos + P)."""

  name: str = "uniform"

  def init_state(self, pool: Sequence[Any]) -> State:
    del pool
    return {"steps": jnp.zeros((), jnp.int32)}

  def plan(self, state, *, key, data_pos, num_prompts, group_size, data_seed, pool):
    del state, key, group_size
    idx = stream_indices(data_seed, len(pool), data_pos, num_prompts)
    return RolloutPlan(idx, data_pos + num_prompts, {})

  def update(self, state, *, prompt_ids, acc, pool):
    del prompt_ids, acc, pool
    return {"steps": state["steps"] + 1}


# ---------------------------------------------------------------------------------------- VADE


def _vade(state: State) -> core.VadeState:
  return core.VadeState(state["alpha"], state["beta"], state["alpha0"], state["beta0"])


@functools.partial(jax.jit, static_argnames="num_select")
def _vade_top(state: State, key: Optional[jax.Array], num_select: int) -> jax.Array:
  return core.vade_select(_vade(state), key, num_select)


@dataclasses.dataclass(frozen=True)
class VadeSampler:
  """VADE prompt selection over the whole pool.

  plan: draw p_j ~ Beta(alpha_j, beta_j) for every prompt and take the P highest p (1 - p)
  (`core.vade_select`). update: `core.vade_update` on the rows (per-visit decay rho_loc), then
  the global decay `core.vade_decay` (rho_glob) once per step. Stream position advances by P
  (prompts consumed) so metrics stay comparable with the uniform stream.

  Paper: "VADE: Variance-Aware Dynamic Sampling via Online Sample-Level Difficulty Estimation",
  2025, arXiv 2511.18902 (update and objective are our reading of the abstract).
  """

  alpha0: float = 1.0
  beta0: float = 1.0
  rho_glob: float = 0.99
  rho_loc: float = 0.9
  thompson: bool = True
  name: str = "vade"

  def __post_init__(self):
    for f in ("rho_glob", "rho_loc"):
      if not 0.0 < getattr(self, f) <= 1.0:
        raise ValueError(f"vade.{f} must be in (0, 1]; got {getattr(self, f)!r}")

  def init_state(self, pool):
    s = core.init_vade_state(len(pool), alpha0=self.alpha0, beta0=self.beta0)
    return {"alpha": s.alpha, "beta": s.beta, "alpha0": s.alpha0, "beta0": s.beta0}

  def plan(self, state, *, key, data_pos, num_prompts, group_size, data_seed, pool):
    del group_size, data_seed
    if num_prompts > len(pool):
      raise ValueError(f"VADE needs a pool of >= {num_prompts} prompts; got {len(pool)}")
    ids = np.asarray(_vade_top(state, key if self.thompson else None, num_prompts))
    a, b = np.asarray(state["alpha"])[ids], np.asarray(state["beta"])[ids]
    p_mean = a / (a + b)
    return RolloutPlan(ids, data_pos + num_prompts,
                       {"vade_pred_var": float(np.mean(p_mean * (1 - p_mean)))})

  def update(self, state, *, prompt_ids, acc, pool):
    del pool
    g = acc.shape[1]
    s = core.vade_update(_vade(state), jnp.asarray(prompt_ids), jnp.asarray(acc.sum(axis=1)), g,
                         rho_loc=self.rho_loc)
    s = core.vade_decay(s, rho_glob=self.rho_glob)
    return {"alpha": s.alpha, "beta": s.beta, "alpha0": s.alpha0, "beta0": s.beta0}


# ------------------------------------------------------------------------------------------ V0


def prompt_features(record) -> np.ndarray:
  """Hand-made prompt features for the V0 value model (all roughly in [0, 1]).

  [difficulty / 5, one-hot family (6), log10(|answer| + 1) / 4, table rows / 8,
  question length / 200, mean log10(table numbers + 1) / 4].
  """
  from rlpost.llm.tasks import FAMILIES  # pylint: disable=g-import-not-at-top
  fam = np.zeros(len(FAMILIES), np.float32)
  if record.family in FAMILIES:
    fam[FAMILIES.index(record.family)] = 1.0
  try:
    ans = math.log10(abs(float(record.answer)) + 1.0) / 4.0
  except ValueError:
    ans = 0.0
  nums = [abs(float(t)) for t in record.table.replace("|", " ").split()
          if t.replace(".", "", 1).lstrip("-").isdigit()]
  tab = float(np.mean([math.log10(v + 1.0) for v in nums])) / 4.0 if nums else 0.0
  head = [(record.difficulty or 0) / 5.0]
  tail = [ans, record.row_num / 8.0, len(record.question) / 200.0, tab]
  return np.asarray(head + list(fam) + tail, np.float32)


def _bce_loss(params, x, y, w, l2):
  logits = x @ params["w"] + params["b"]
  ll = y * jax.nn.log_sigmoid(logits) + (1.0 - y) * jax.nn.log_sigmoid(-logits)
  return -jnp.sum(w * ll) / jnp.maximum(jnp.sum(w), 1e-6) + l2 * jnp.sum(jnp.square(params["w"]))


@functools.partial(jax.jit, static_argnames=("steps",))
def fit_value_model(params: State, x: jax.Array, y: jax.Array, w: jax.Array, *, steps: int,
                    lr: float, l2: float) -> State:
  """`steps` full-batch gradient steps on the weighted Bernoulli log-loss (+ l2 on w).

  x [H, F] features, y [H] success fractions in [0, 1], w [H] weights (0 = empty slot).
  """
  grad = jax.grad(_bce_loss)

  def body(_, p):
    g = grad(p, x, y, w, l2)
    return jax.tree.map(lambda a, b: a - lr * b, p, g)

  return jax.lax.fori_loop(0, steps, body, params)


def predict_success(params: State, x: jax.Array) -> jax.Array:
  """The value model: p(correct | prompt features) = sigmoid(x . w + b)."""
  return jax.nn.sigmoid(x @ params["w"] + params["b"])


_allocate = jax.jit(core.v0_allocate_budget, static_argnames=("total_budget", "b_min", "b_max"))


def quantise_rows(budgets: np.ndarray, group_size: int, num_rows: int) -> np.ndarray:
  """Whole rows of `group_size` per prompt from budgets (largest remainder; sum = num_rows).

  Ties in the remainder go to the lower index. Budgets are rescaled to num_rows * group_size
  first, so a shortfall (all prompts at b_max) still fills the batch.
  """
  b = np.asarray(budgets, np.float64)
  exact = b * (num_rows / max(b.sum(), 1e-12))
  rows = np.floor(exact).astype(np.int64)
  rem = exact - rows
  order = np.lexsort((np.arange(len(b)), -rem))
  rows[order[:num_rows - int(rows.sum())]] += 1
  return rows


@dataclasses.dataclass(frozen=True)
class V0Sampler:
  """V0 value-model-guided rollout budgets.

  plan: the next `candidate_factor * P` prompts of the stream are scored by the value model,
  `core.v0_allocate_budget` maximises sum_i U(B_i, p_i) with U(B, p) = B (1 - p)[1 - (1 - p)^(B-1)]
  under sum B_i = P * G, B_i in [b_min, b_max]. `variable_groups=True` (default) rolls each
  candidate out as one group of its budget B_i (padded grid, module docstring); False quantises
  budgets to whole rows of G. update: each row's (features, success fraction, weight = its number
  of completions) enters a circular history of `history` rows and the logistic model is refit for
  `fit_steps` steps.

  Paper: "V_0: A Generalist Value Model for Any Policy at State Zero", 2026, arXiv 2602.03584.
  """

  candidate_factor: int = 2
  b_min: int = 2
  b_max: int = 128
  history: int = 512
  fit_steps: int = 50
  lr: float = 0.5
  l2: float = 1e-3
  variable_groups: bool = True
  name: str = "v0"

  def __post_init__(self):
    if self.candidate_factor < 1:
      raise ValueError(f"v0.candidate_factor must be >= 1; got {self.candidate_factor!r}")
    if not 1 <= self.b_min <= self.b_max:
      raise ValueError(f"v0 needs 1 <= b_min <= b_max; got b_min={self.b_min}, "
                       f"b_max={self.b_max}")

  def features(self, pool) -> np.ndarray:
    cached = getattr(self, "_cache", None)
    if cached is not None and cached[0] is pool:
      return cached[1]
    feats = np.stack([prompt_features(r) for r in pool])
    object.__setattr__(self, "_cache", (pool, feats))
    return feats

  def init_state(self, pool):
    f = self.features(pool).shape[1]
    return {"w": jnp.zeros((f,), jnp.float32), "b": jnp.zeros((), jnp.float32),
            "hist_x": jnp.zeros((self.history, f), jnp.float32),
            "hist_y": jnp.zeros((self.history,), jnp.float32),
            "hist_w": jnp.zeros((self.history,), jnp.float32),
            "hist_ptr": jnp.zeros((), jnp.int32)}

  def plan(self, state, *, key, data_pos, num_prompts, group_size, data_seed, pool):
    del key
    n_cand = self.candidate_factor * num_prompts
    total = num_prompts * group_size
    if total < n_cand * self.b_min:
      raise ValueError(f"v0: batch of {total} completions < candidates ({n_cand}) x b_min "
                       f"({self.b_min}); lower v0.candidate_factor or raise rl.group_size")
    cand = stream_indices(data_seed, len(pool), data_pos, n_cand)
    x = jnp.asarray(self.features(pool)[cand])
    p = predict_success({"w": state["w"], "b": state["b"]}, x)
    width = min(self.b_max, total)
    budgets = np.asarray(_allocate(p, total_budget=total, b_min=self.b_min, b_max=width))
    p_np = np.asarray(p, np.float64)
    util = float(np.sum(np.asarray(core.v0_utility(jnp.asarray(budgets), p))))
    stats = {"v0_pred_mean": float(p_np.mean()), "v0_pred_std": float(p_np.std()),
             "v0_expected_utility": util}
    if self.variable_groups:
      if int(budgets.sum()) != total:  # every candidate at b_max and still short of the batch
        raise ValueError(f"v0: {n_cand} candidates x b_max={width} cannot fill the batch of "
                         f"{total} completions; raise v0.candidate_factor or v0.b_max")
      stats.update(v0_prompts_used=float(n_cand), v0_group_size_max=float(budgets.max()),
                   v0_group_size_min=float(budgets.min()))
      return RolloutPlan(np.asarray(cand, np.int64), data_pos + n_cand, stats,
                         counts=budgets.astype(np.int64), width=width)
    rows = quantise_rows(budgets, group_size, num_prompts)
    stats["v0_prompts_used"] = float(np.count_nonzero(rows))
    return RolloutPlan(np.repeat(cand, rows), data_pos + n_cand, stats)

  def update(self, state, *, prompt_ids, acc, pool, valid=None):
    x = self.features(pool)[prompt_ids]
    if valid is None:
      valid = np.ones(acc.shape, bool)
    count = valid.sum(axis=1).astype(np.float32)
    y = (np.where(valid, acc, 0.0).sum(axis=1) / np.maximum(count, 1.0)).astype(np.float32)
    n, h = len(prompt_ids), self.history
    slots = (int(state["hist_ptr"]) + np.arange(n)) % h
    hx = state["hist_x"].at[slots].set(jnp.asarray(x))
    hy = state["hist_y"].at[slots].set(jnp.asarray(y))
    hw = state["hist_w"].at[slots].set(jnp.asarray(count))
    params = fit_value_model({"w": state["w"], "b": state["b"]}, hx, hy, hw,
                             steps=self.fit_steps, lr=self.lr, l2=self.l2)
    return {"w": params["w"], "b": params["b"], "hist_x": hx, "hist_y": hy, "hist_w": hw,
            "hist_ptr": jnp.asarray((int(state["hist_ptr"]) + n) % h, jnp.int32)}


# ---------------------------------------------------------------------------------- curriculum


def pool_levels(pool) -> tuple[np.ndarray, np.ndarray]:
  """(sorted distinct difficulty values, per-record level index) of a pool."""
  diff = np.asarray([r.difficulty or 0 for r in pool], np.int64)
  values = np.unique(diff)
  return values, np.searchsorted(values, diff)


@dataclasses.dataclass(frozen=True)
class CurriculumSampler:
  """Difficulty curriculum over the pool's `difficulty` levels (easiest first).

  plan: each row's level is drawn from `core.curriculum_level_probs` (`focus` on the hardest
  unlocked level, the rest replayed uniformly over the easier ones); within a level, prompts come
  from that level's own deterministic stream. update: `core.curriculum_update` with every
  completion's 0/1 outcome (EMA success rate per level; the next level unlocks when the hardest
  unlocked one reaches `promote_at` after `min_visits` completions).

  Paper: CRAFT-GUI, "Curriculum-Reinforced Agent for GUI Tasks", 2025, arXiv 2508.11360 (stage
  rule not published; the threshold rule is ours).
  """

  focus: float = 0.5
  momentum: float = 0.9
  promote_at: float = 0.7
  min_visits: int = 32
  name: str = "curriculum"

  def __post_init__(self):
    if not 0.0 <= self.focus <= 1.0:
      raise ValueError(f"curriculum.focus must be in [0, 1]; got {self.focus!r}")
    if not 0.0 < self.promote_at <= 1.0:
      raise ValueError(f"curriculum.promote_at must be in (0, 1]; got {self.promote_at!r}")

  def init_state(self, pool):
    values, _ = pool_levels(pool)
    s = core.init_curriculum(len(values))
    return {"success_rate": s.success_rate, "visits": s.visits, "unlocked": s.unlocked,
            "level_pos": jnp.zeros((len(values),), jnp.int32)}

  def plan(self, state, *, key, data_pos, num_prompts, group_size, data_seed, pool):
    del group_size
    values, level_of = pool_levels(pool)
    cs = core.CurriculumState(state["success_rate"], state["visits"], state["unlocked"])
    probs = core.curriculum_level_probs(cs, focus=self.focus)
    row_levels = np.asarray(jax.random.choice(key, len(values), (num_prompts,), p=probs))
    pos = np.asarray(state["level_pos"]).copy()
    ids = np.empty((num_prompts,), np.int64)
    for lv in range(len(values)):
      rows = np.flatnonzero(row_levels == lv)
      if not len(rows):
        continue
      members = np.flatnonzero(level_of == lv)
      ids[rows] = members[stream_indices(data_seed + 7919 * (lv + 1), len(members), int(pos[lv]),
                                         len(rows))]
      pos[lv] += len(rows)
    new_state = {**state, "level_pos": jnp.asarray(pos, jnp.int32)}
    return RolloutPlan(ids, data_pos + num_prompts,
                       {"curriculum_unlocked_level": float(values[int(state["unlocked"])]),
                        "curriculum_top_level_frac": float(np.mean(row_levels == len(values) - 1))},
                       state=new_state)

  def update(self, state, *, prompt_ids, acc, pool):
    _, level_of = pool_levels(pool)
    g = acc.shape[1]
    levels = np.repeat(level_of[prompt_ids], g)
    cs = core.curriculum_update(
        core.CurriculumState(state["success_rate"], state["visits"], state["unlocked"]),
        jnp.asarray(levels), jnp.asarray(acc.reshape(-1)), momentum=self.momentum,
        promote_at=self.promote_at, min_visits=self.min_visits)
    return {"success_rate": cs.success_rate, "visits": cs.visits, "unlocked": cs.unlocked,
            "level_pos": state["level_pos"]}


SAMPLERS = {"uniform": UniformSampler, "vade": VadeSampler, "v0": V0Sampler,
            "curriculum": CurriculumSampler}


def make_prompt_sampler(name: str, **kwargs) -> PromptSampler:
  """A sampler by name with its keyword hyperparameters; errors name the bad key."""
  if name not in SAMPLERS:
    raise ValueError(f"unknown prompt sampler {name!r}; valid: {', '.join(sorted(SAMPLERS))}")
  cls = SAMPLERS[name]
  fields = {f.name for f in dataclasses.fields(cls)} - {"name"}
  for k in kwargs:
    if k not in fields:
      raise ValueError(f"prompt sampler {name!r} has no option {k!r}; valid: "
                       f"{', '.join(sorted(fields))}")
  return cls(**kwargs)
