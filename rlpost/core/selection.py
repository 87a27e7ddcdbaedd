"""Sample, group and token selection rules.

Selectors decide which samples the gradient sees. Group selectors map `[P, G]` rewards to a
`[P]` keep mask; token selectors map a batch to a `[B, T]` mask that multiplies the loss mask.
"""

import jax
import jax.numpy as jnp

Array = jax.Array


def dynamic_sampling_mask(rewards: Array) -> Array:
  """DAPO dynamic sampling: keep the groups whose rewards are not all equal.

  A group whose G rewards are identical has zero group-relative advantage and contributes no
  gradient; DAPO discards it and samples more prompts until the batch is full. A group of one is
  kept (verl). Pass the correctness metric ("acc"), not a shaped score: an overlong penalty can give
  non-zero spread to groups whose correctness is constant.

  Paper: DAPO (Yu et al., 2025, arXiv 2503.14476).

  Args:
    rewards: `[P, G]`.

  Returns:
    `[P]` bool, True where the group is informative.
  """
  if rewards.ndim != 2:
    raise ValueError(f"rewards must be [P, G]; got shape {rewards.shape}")
  if rewards.shape[1] == 1:
    return jnp.ones(rewards.shape[:1], bool)
  return jnp.max(rewards, axis=1) > jnp.min(rewards, axis=1)


def zero_spread_fraction(rewards: Array) -> Array:
  """Fraction of groups whose rewards are all equal (a standard GRPO diagnostic)."""
  return 1.0 - jnp.mean(dynamic_sampling_mask(rewards).astype(jnp.float32))


# ==================================================================================================
# Seed objectives I (issue 5). Appended sections, one per paper.
# ==================================================================================================


# --- AEPO: entropy-balanced rollout budget --------------------------------------------------------


def aepo_branch_budget(
    total: int,
    root_entropy: Array,
    tool_entropies: Array,
    *,
    beta: float = 1.0,
) -> tuple[Array, Array]:
  """AEPO's rollout budget split between global samples and branches from pre-measured entropy.

    m = round(k sigma(beta (H_root - mean_i H_tool_i))),   branches = k - m

  A confident root relative to the tool-call steps (H_root < mean H_tool) gives fewer global samples
  and more branches at the uncertain tool steps. `tool_entropies` may carry a trailing axis of
  tool steps; an empty one is treated as mean 0. beta is not given in the sources (inferred 1);
  the consecutive-high-entropy branch penalty is not implemented (no formula available).

  Paper: "Agentic Entropy-Balanced Policy Optimization", 2025, arXiv 2510.14545.

  Returns:
    (global samples m, branch samples k - m), int32 arrays, 0 <= m <= k.
  """
  if total < 0:
    raise ValueError(f"aepo_branch_budget total must be >= 0; got {total}")
  tool = jnp.asarray(tool_entropies, jnp.float32)
  mean_tool = jnp.mean(tool, axis=-1) if tool.shape and tool.shape[-1] > 0 else jnp.zeros(
      tool.shape[:-1], jnp.float32)
  frac = jax.nn.sigmoid(beta * (jnp.asarray(root_entropy, jnp.float32) - mean_tool))
  m = jnp.clip(jnp.round(total * frac), 0, total).astype(jnp.int32)
  return m, total - m


# ==================================================================================================
# Seed objectives II (issue 6): D3S down-sampling, duration-aware weights, contrastive selection.
# ==================================================================================================


def _linear_schedule(progress: Array, start: float, end: float) -> Array:
  p = jnp.clip(jnp.asarray(progress, jnp.float32), 0.0, 1.0)
  return (1.0 - p) * start + p * end


def d3s_schedule(progress: Array, *, n_init: float, n_final: float, k_init: float,
                 k_final: float) -> tuple[Array, Array]:
  """D3S curriculum: [N_s(p), K(p)] = (1 - p) [N_init, K_init] + p [N_final, K_final].

  p in [0, 1] is training progress (the explicit schedule state is just the step counter). N_s is
  rounded to the nearest integer; K is a fraction of valid tokens in (0, 1]. The paper's endpoint
  values are not published, so all four are required.
  Paper: "Learning More with Less: A Dynamic Dual-Level Down-Sampling Framework for Efficient
  Policy Optimization", ICLR 2026, arXiv 2509.22115.
  """
  n = jnp.round(_linear_schedule(progress, n_init, n_final)).astype(jnp.int32)
  return n, _linear_schedule(progress, k_init, k_final)


def d3s_max_variance_subset(advantages: Array, n_keep: Array) -> Array:
  """Mask of the size-`n_keep` subset of a 1-D array with the largest (population) variance.

  A max-variance subset of fixed size is made of the two tails of the sorted values, so the exact
  solver scans j = 0..n: the j smallest plus the n - j largest, and keeps the best split
  (O(G log G), jit-friendly; `n_keep` may be traced). Ties break toward the smaller j.
  """
  g = advantages.shape[0]
  order = jnp.argsort(advantages)
  a = advantages[order].astype(jnp.float32)
  ranks = jnp.arange(g)
  n = jnp.clip(jnp.asarray(n_keep, jnp.int32), 0, g)

  def subset_var(j):
    chosen = (ranks < j) | (ranks >= g - (n - j))
    cnt = jnp.maximum(jnp.sum(chosen), 1)
    mean = jnp.sum(jnp.where(chosen, a, 0.0)) / cnt
    var = jnp.sum(jnp.where(chosen, jnp.square(a - mean), 0.0)) / cnt
    return jnp.where(j <= n, var, -jnp.inf), chosen

  variances, chosen = jax.vmap(subset_var)(jnp.arange(g + 1))
  best = jnp.argmax(variances)
  keep_sorted = chosen[best] & (n > 0)
  return jnp.zeros(g, bool).at[order].set(keep_sorted)


def d3s_sample_mask(advantages: Array, *, n_keep: Array, cross_group: bool = False) -> Array:
  """D3S sample level: keep the rollouts that maximise Var(A).

  Within groups (`advantages [P, G]`, keep `n_keep` per group) or, with `cross_group`, over the
  whole batch (keep `n_keep` of P*G). Advantages are computed on the full group first and are not
  re-normalised after selection (paper). Returns a bool mask shaped like `advantages`.
  """
  if cross_group:
    return d3s_max_variance_subset(advantages.reshape(-1), n_keep).reshape(advantages.shape)
  return jax.vmap(lambda a: d3s_max_variance_subset(a, n_keep))(advantages)


def d3s_token_mask(advantages: Array, entropy: Array, mask: Array, *, keep_frac: Array) -> Array:
  """D3S token level: keep the top ceil(K * #valid) tokens by |A| * H among valid tokens.

  Ties at the threshold are broken by position, so exactly ceil(K * #valid) tokens are kept (at
  least one when any token is valid). `keep_frac` may be traced.
  """
  m = mask.astype(bool)
  score = jnp.where(m, jnp.abs(advantages.astype(jnp.float32)) * entropy.astype(jnp.float32),
                    -jnp.inf).reshape(-1)
  n_valid = jnp.sum(m)
  k = jnp.where(n_valid > 0, jnp.ceil(jnp.clip(keep_frac, 0.0, 1.0) * n_valid), 0).astype(jnp.int32)
  k = jnp.where((n_valid > 0) & (k < 1), 1, k)
  order = jnp.argsort(-score, stable=True)
  rank = jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0]))
  return ((rank < k).reshape(m.shape)) & m


def duration_weights(durations: Array, mask: Array | None = None, *, min_time: float = 0.0,
                     max_time: float | None = None) -> Array:
  """Duration-aware policy-gradient weights: w_i = dt_i / mean(dt).

  In asynchronous RL a sample with execution time dt finishes at a rate proportional to 1/dt, so
  completed samples follow q(a) ~ pi(a)/dt_a and updates drift toward fast actions. Weighting each
  sample by dt (mean-normalised) restores E_pi[A grad log pi]:
  E_q[dt A grad log pi] / E_q[dt] = E_pi[A grad log pi]. Equal durations give weights of 1.
  Durations are clipped to [min_time, max_time] as the public code does.

  Paper: "Reinforcement Learning for Machine Learning Engineering Agents", ICLR 2026,
  arXiv 2509.01684 (the mean normalisation is our reading; see BUILD_NOTES.md).
  """
  dt = jnp.clip(durations.astype(jnp.float32), min_time, max_time)
  dt = jnp.maximum(dt, 1e-12)
  valid = jnp.ones(dt.shape, bool) if mask is None else mask.astype(bool)
  mean = jnp.sum(jnp.where(valid, dt, 0.0)) / jnp.maximum(jnp.sum(valid), 1)
  return jnp.where(valid, dt / jnp.maximum(mean, 1e-12), 0.0)


def contrastive_select(rewards: Array, lengths: Array, *, keep: int) -> Array:
  """ChatShopBuddy's dynamic contrastive selection: keep `keep` of K trajectories per query.

  Trajectories are ranked by reward (high first) and, at equal reward, by reasoning length (short
  first); the kept set is the top `keep // 2` plus the bottom `keep - keep // 2`, so a high-reward
  short answer is contrasted with low-reward ones. The paper's exact score is not published
  (our reading; BUILD_NOTES.md). Inputs `[P, K]`; returns a bool mask `[P, K]`.
  Paper: "ChatShopBuddy", 2026, arXiv 2603.06065.
  """
  p, k = rewards.shape
  if not 0 < keep <= k:
    raise ValueError(f"keep must be in [1, K={k}]; got keep={keep}")
  # Lexicographic: reward descending, then length ascending (last key is the primary one).
  order = jax.vmap(lambda r, l: jnp.lexsort((l, -r)))(rewards.astype(jnp.float32), lengths)
  rank = jnp.zeros_like(order).at[jnp.arange(p)[:, None], order].set(jnp.arange(k)[None, :])
  top = keep // 2 if keep > 1 else 1
  bottom = keep - top
  return (rank < top) | (rank >= k - bottom)
