"""Prompt-level samplers and rollout budgets: VADE, V0 budget allocation, a difficulty curriculum.

These decide which prompts are rolled out, and how many completions each gets, before any
generation. All state is explicit (built by `init_*`) so samplers work under jit and in
checkpoints. (Split from `selection.py`, which holds the per-sample/per-token rules, to keep each
module to one family and under ~600 lines.)
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array

# ------------------------------------------------------------------------------------------ VADE


class VadeState(NamedTuple):
  """Per-prompt Beta(alpha, beta) posteriors over the success probability, plus the prior."""

  alpha: Array
  beta: Array
  alpha0: Array
  beta0: Array


def init_vade_state(num_prompts: int, *, alpha0: float = 1.0, beta0: float = 1.0) -> VadeState:
  """Every prompt starts at the prior Beta(alpha0, beta0) (uniform by default)."""
  if num_prompts < 1:
    raise ValueError(f"num_prompts must be >= 1; got {num_prompts}")
  if alpha0 <= 0 or beta0 <= 0:
    raise ValueError(f"alpha0 and beta0 must be > 0; got alpha0={alpha0}, beta0={beta0}")
  ones = jnp.ones(num_prompts, jnp.float32)
  return VadeState(alpha0 * ones, beta0 * ones, jnp.float32(alpha0), jnp.float32(beta0))


def vade_decay(state: VadeState, *, rho_glob: float = 0.99) -> VadeState:
  """Global per-step forgetting: alpha <- alpha0 + rho (alpha - alpha0), same for beta.

  Moves every posterior toward the prior (never past it), so estimates of prompts not seen for a
  while widen again as the policy drifts. rho = 1 disables it.
  """
  return state._replace(alpha=state.alpha0 + rho_glob * (state.alpha - state.alpha0),
                        beta=state.beta0 + rho_glob * (state.beta - state.beta0))


def vade_update(state: VadeState, prompt_ids: Array, successes: Array, group_size: int, *,
                rho_loc: float = 0.9) -> VadeState:
  """Posterior update after a rollout group; the visited prompt's old evidence decays by rho_loc.

    alpha_j <- alpha0 + rho_loc (alpha_j - alpha0) + s_j
    beta_j  <- beta0  + rho_loc (beta_j  - beta0)  + (G - s_j)

  With rho_loc = 1 (and no global decay) the posterior is Beta(alpha0 + #succ, beta0 + #fail).
  The two-scale rule is our reading of the abstract (see BUILD_NOTES.md).

  Args:
    state: current VadeState.
    prompt_ids: `[P]` int ids of the prompts just rolled out (distinct).
    successes: `[P]` number of successful completions among `group_size`.
    group_size: G.
    rho_loc: per-visit decay of the visited prompts' previous evidence.
  """
  s = successes.astype(jnp.float32)
  a_old, b_old = state.alpha[prompt_ids], state.beta[prompt_ids]
  a_new = state.alpha0 + rho_loc * (a_old - state.alpha0) + s
  b_new = state.beta0 + rho_loc * (b_old - state.beta0) + (group_size - s)
  return state._replace(alpha=state.alpha.at[prompt_ids].set(a_new),
                        beta=state.beta.at[prompt_ids].set(b_new))


def vade_scores(state: VadeState, key: Array | None) -> Array:
  """p(1 - p) of a Thompson draw p ~ Beta(alpha, beta) (or of the posterior mean when key=None).

  p(1 - p) is the Bernoulli reward variance, maximal at p = 1/2: the prompts whose groups are
  most likely to have mixed outcomes and hence non-zero group-relative advantages.
  """
  if key is None:
    p = state.alpha / (state.alpha + state.beta)
  else:
    p = jax.random.beta(key, state.alpha, state.beta)
  return p * (1.0 - p)


def vade_select(state: VadeState, key: Array | None, num_select: int,
                candidates: Array | None = None) -> Array:
  """VADE prompt sampler: the `num_select` prompts with the highest `vade_scores`.

  Paper: "VADE: Variance-Aware Dynamic Sampling via Online Sample-Level Difficulty Estimation",
  2025, arXiv 2511.18902. The selection objective (Thompson draw, top-B by p(1-p)) is our reading
  of the abstract; it sits behind this one function so the exact rule can be swapped.

  Args:
    state: VadeState.
    key: PRNG key for the Thompson draws (None = posterior means, deterministic).
    num_select: B, static.
    candidates: optional `[N]` bool mask of eligible prompts.

  Returns:
    `[num_select]` int32 prompt ids.
  """
  scores = vade_scores(state, key)
  if candidates is not None:
    scores = jnp.where(candidates, scores, -jnp.inf)
  return jax.lax.top_k(scores, num_select)[1].astype(jnp.int32)


# ------------------------------------------------------------------------------------ V0 budgets


def v0_utility(budget: Array, p: Array) -> Array:
  """U(B, p) = B (1 - p) [1 - (1 - p)^(B - 1)]: V0's expected-informative-groups utility.

  (Expected number of failures that share their group with at least one success.) U(B, 0) =
  U(B, 1) = U(1, p) = 0 and U >= 0. Paper: "V_0: A Generalist Value Model for Any Policy at State
  Zero", 2026, arXiv 2602.03584.
  """
  b = jnp.asarray(budget, jnp.float32)
  q = 1.0 - jnp.clip(jnp.asarray(p, jnp.float32), 0.0, 1.0)
  return b * q * (1.0 - jnp.power(q, jnp.maximum(b - 1.0, 0.0)))


def v0_allocate_budget(p: Array, total_budget: int, *, b_min: int = 2, b_max: int = 128) -> Array:
  """Greedy rollout-budget allocation maximising sum_i U(B_i, p_i) s.t. sum B_i <= total.

  Every prompt starts at `b_min`; each remaining unit goes to the prompt with the largest marginal
  gain U(B+1, p) - U(B, p) among those below `b_max` (ties: lowest index). The marginal gain is not
  monotone in B for small p, so greedy is not always optimal (noted in the spec); it is the rule as
  read.

  Args:
    p: `[P]` predicted success probabilities (e.g. from a V0-style value model).
    total_budget: total completions, static; must be >= P * b_min.

  Returns:
    `[P]` int32 group sizes in [b_min, b_max], summing to min(total, P * b_max).
  """
  n = p.shape[0]
  if total_budget < n * b_min:
    raise ValueError(f"total_budget={total_budget} < P * b_min = {n * b_min}")
  if not 1 <= b_min <= b_max:
    raise ValueError(f"need 1 <= b_min <= b_max; got b_min={b_min}, b_max={b_max}")
  extra = min(total_budget, n * b_max) - n * b_min

  def step(_, b):
    gain = v0_utility(b + 1, p) - v0_utility(b, p)
    gain = jnp.where(b < b_max, gain, -jnp.inf)
    return b.at[jnp.argmax(gain)].add(1)

  return jax.lax.fori_loop(0, extra, step, jnp.full((n,), b_min, jnp.int32))


# ------------------------------------------------------------------------- difficulty curriculum


class CurriculumState(NamedTuple):
  """Running success rate per difficulty level and the highest unlocked level."""

  success_rate: Array
  visits: Array
  unlocked: Array


def init_curriculum(num_levels: int) -> CurriculumState:
  if num_levels < 1:
    raise ValueError(f"num_levels must be >= 1; got {num_levels}")
  return CurriculumState(jnp.zeros(num_levels, jnp.float32), jnp.zeros(num_levels, jnp.float32),
                         jnp.int32(0))


def curriculum_update(state: CurriculumState, levels: Array, successes: Array, *,
                      momentum: float = 0.9, promote_at: float = 0.7, min_visits: int = 32
                      ) -> CurriculumState:
  """Updates per-level success rates (EMA) and unlocks the next level when the hardest unlocked
  one is solved at >= `promote_at` after >= `min_visits` samples.

  A generic bucketed curriculum in the spirit of CRAFT-GUI ("Curriculum-Reinforced Agent for GUI
  Tasks", 2025, arXiv 2508.11360), whose stage rule is not published; the threshold rule here is
  our choice (BUILD_NOTES.md).

  Args:
    levels: `[N]` int difficulty level of each sample in the batch.
    successes: `[N]` 0/1 outcomes.
  """
  num = state.success_rate.shape[0]
  onehot = jax.nn.one_hot(levels, num, dtype=jnp.float32)
  count = jnp.sum(onehot, axis=0)
  batch_rate = jnp.sum(onehot * successes.astype(jnp.float32)[:, None], axis=0) / jnp.maximum(
      count, 1.0)
  seen = count > 0
  first = state.visits == 0
  rate = jnp.where(seen, jnp.where(first, batch_rate,
                                   momentum * state.success_rate + (1 - momentum) * batch_rate),
                   state.success_rate)
  visits = state.visits + count
  top = state.unlocked
  promote = (rate[top] >= promote_at) & (visits[top] >= min_visits) & (top < num - 1)
  return CurriculumState(rate, visits, jnp.where(promote, top + 1, top).astype(jnp.int32))


def curriculum_level_probs(state: CurriculumState, *, focus: float = 0.5) -> Array:
  """Sampling distribution over levels: `focus` on the hardest unlocked level, the rest spread
  uniformly over the easier unlocked ones (replay); locked levels get 0."""
  num = state.success_rate.shape[0]
  lv = jnp.arange(num)
  easier = (lv < state.unlocked).astype(jnp.float32)
  n_easier = jnp.sum(easier)
  probs = jnp.where(lv == state.unlocked, jnp.where(n_easier > 0, focus, 1.0), 0.0)
  return probs + jnp.where(n_easier > 0, (1.0 - focus) * easier / jnp.maximum(n_easier, 1.0), 0.0)
