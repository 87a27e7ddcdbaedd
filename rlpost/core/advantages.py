"""Advantage estimators: group-relative, leave-one-out, batch-whitened and GAE.

Group-relative estimators take outcome rewards shaped `[P, G]` (P prompts x G completions, stored
contiguously) and return the same shape; `broadcast_to_tokens` tiles them over a response mask.
GAE follows rlax: unbatched over time, the caller vmaps.
"""

import jax
import jax.numpy as jnp

from rlpost.core import aggregation

Array = jax.Array


def _check_groups(rewards: Array) -> None:
  if rewards.ndim != 2:
    raise ValueError(f"rewards must be [P, G] (prompts x group size); got shape {rewards.shape}")


def _group_centred(r: Array) -> Array:
  """r - mean_g r, exactly 0 in groups whose rewards are all equal.

  In f32 the mean of G copies of 0.7 is not exactly 0.7; without the guard a zero-spread group
  gets residues ~1e-8 that the std division then blows up to O(0.1) advantages.
  """
  spread = jnp.max(r, axis=1, keepdims=True) > jnp.min(r, axis=1, keepdims=True)
  return jnp.where(spread, r - jnp.mean(r, axis=1, keepdims=True), 0.0)


def grpo_advantages(rewards: Array, *, eps: float = 1e-6, scale_by_std: bool = True,
                    valid: Array | None = None) -> Array:
  """Group-relative advantages of GRPO, or of Dr.GRPO when `scale_by_std=False`.

    a_i = (R_i - mean_g R) / (std_g R + eps)     (GRPO; std is the unbiased, ddof=1 estimator)
    a_i =  R_i - mean_g R                        (Dr.GRPO)

  A group of one follows verl: mean 0 and std 1, so a = R / (1 + eps) (or R for Dr.GRPO).
  Zero-variance groups give exactly 0.

  Variable group sizes (e.g. V0 budgets) come as a padded `[P, G_max]` grid with `valid`: the
  statistics of row p use only its valid slots (n_p of them, ddof=1 over n_p), padded slots get
  0, and a row with n_p valid slots equals the unpadded estimator on those n_p rewards (tested).

  Papers: DeepSeekMath (Shao et al., 2024, arXiv 2402.03300); "Understanding R1-Zero-Like
  Training" (Liu et al., 2025, arXiv 2503.20783).

  Args:
    rewards: `[P, G]` outcome rewards.
    eps: added to the std (verl places it outside the square root).
    scale_by_std: divide by the group std (GRPO) or not (Dr.GRPO).
    valid: optional `[P, G]` bool mask of real completions (None: every slot is real).

  Returns:
    `[P, G]` advantages.
  """
  _check_groups(rewards)
  r = rewards.astype(jnp.float32)
  if valid is not None:
    v = _check_valid(valid, r)
    n = jnp.sum(v, axis=1, keepdims=True).astype(jnp.float32)
    centred = _masked_group_centred(r, v, n)
    if not scale_by_std:
      return jnp.where(n == 1, jnp.where(v, r, 0.0), centred)
    std = jnp.sqrt(jnp.sum(jnp.square(centred), axis=1, keepdims=True) / jnp.maximum(n - 1, 1.0))
    return jnp.where(n == 1, jnp.where(v, r, 0.0) / (1.0 + eps), centred / (std + eps))
  g = r.shape[1]
  if g == 1:
    return r / (1.0 + eps) if scale_by_std else r
  centred = _group_centred(r)
  if not scale_by_std:
    return centred
  std = jnp.sqrt(jnp.sum(jnp.square(centred), axis=1, keepdims=True) / (g - 1))
  return centred / (std + eps)


def _check_valid(valid: Array, r: Array) -> Array:
  if valid.shape != r.shape:
    raise ValueError(f"valid must have the rewards' shape {r.shape}; got {valid.shape}")
  return valid.astype(bool)


def _masked_group_centred(r: Array, v: Array, n: Array) -> Array:
  """r - mean over the row's valid slots; exactly 0 on padding and in zero-spread rows."""
  big = jnp.float32(3e38)
  spread = (jnp.max(jnp.where(v, r, -big), axis=1, keepdims=True) >
            jnp.min(jnp.where(v, r, big), axis=1, keepdims=True))
  del n  # the row counts are implied by v
  mean = aggregation.masked_mean(r, v, axis=1)[:, None]
  return jnp.where(spread & v, r - mean, 0.0)


def rloo_advantages(rewards: Array, *, valid: Array | None = None) -> Array:
  """REINFORCE leave-one-out advantages: a_i = R_i - mean_{j != i} R_j = G/(G-1) (R_i - mean_g R).

  A group of one gets a = R (verl). With `valid` (padded `[P, G_max]` grid of variable group
  sizes) G is each row's count of valid slots and padding gets 0 (see `grpo_advantages`).
  Kool et al., 2019; Ahmadian et al., 2024, arXiv 2402.14740.
  """
  _check_groups(rewards)
  r = rewards.astype(jnp.float32)
  if valid is not None:
    v = _check_valid(valid, r)
    n = jnp.sum(v, axis=1, keepdims=True).astype(jnp.float32)
    centred = _masked_group_centred(r, v, n)
    return jnp.where(n == 1, jnp.where(v, r, 0.0), centred * (n / jnp.maximum(n - 1.0, 1.0)))
  g = r.shape[1]
  if g == 1:
    return r
  return _group_centred(r) * (g / (g - 1.0))


def broadcast_to_tokens(seq_advantages: Array, mask: Array) -> Array:
  """Tiles per-sequence values over tokens: `[P, G]` or `[B]` -> `[B, T]`, zero where masked."""
  flat = seq_advantages.reshape(-1).astype(jnp.float32)
  if flat.shape[0] != mask.shape[0]:
    raise ValueError(
        f"{flat.shape[0]} sequence advantages for a mask of {mask.shape[0]} rows; P*G must equal B")
  return jnp.where(mask.astype(bool), flat[:, None], 0.0)


def reinforce_pp_baseline_advantages(rewards: Array, mask: Array, *, eps: float = 1e-8) -> Array:
  """REINFORCE++-baseline: subtract the group mean, tile over tokens, whiten over the batch.

    a_i = R_i - mean_g R;  A = masked_whiten(tile(a), mask)

  Whitening runs over every valid token of the batch, so the mean is length-weighted: a group with
  all-equal rewards has a_i = 0 before whitening but in general non-zero A after it. That is the
  method's definition, not a bug. Fewer than two valid tokens: centred values only (no NaN).

  Paper: Hu et al., "REINFORCE++", 2025, arXiv 2501.03262.

  Args:
    rewards: `[P, G]` outcome rewards.
    mask: `[P*G, T]` response mask.
    eps: whitening epsilon.

  Returns:
    `[P*G, T]` token advantages.
  """
  _check_groups(rewards)
  r = rewards.astype(jnp.float32)
  centred = _group_centred(r)
  return aggregation.masked_whiten(broadcast_to_tokens(centred, mask), mask, eps=eps)


def discounted_returns_to_go(token_rewards: Array, mask: Array, *, gamma: float = 1.0) -> Array:
  """G_t = r_t + gamma * G_{t+1} along each row, reset to 0 on masked positions. `[B, T]`."""
  m = mask.astype(bool)
  r = jnp.where(m, token_rewards.astype(jnp.float32), 0.0)

  def step(carry, xs):
    r_t, m_t = xs
    g_t = jnp.where(m_t, r_t + gamma * carry, 0.0)
    return g_t, g_t

  _, g = jax.lax.scan(step, jnp.zeros(r.shape[0], jnp.float32), (r.T, m.T), reverse=True)
  return g.T


def reinforce_pp_advantages(
    token_rewards: Array, mask: Array, *, gamma: float = 1.0, eps: float = 1e-8) -> Array:
  """REINFORCE++: token-level return-to-go, then whitening over the batch's valid tokens.

  With gamma=1 and an outcome reward on the last token, G_t = R on every valid token.
  Paper: Hu et al., 2025, arXiv 2501.03262.
  """
  returns = discounted_returns_to_go(token_rewards, mask, gamma=gamma)
  return aggregation.masked_whiten(returns, mask, eps=eps)


def outcome_to_token_rewards(rewards: Array, mask: Array) -> Array:
  """Places each sequence's outcome reward on its last valid token: `[P, G]`/`[B]` -> `[B, T]`."""
  m = mask.astype(jnp.int32)
  flat = rewards.reshape(-1).astype(jnp.float32)
  positions = jnp.arange(m.shape[1])
  last = jnp.max(jnp.where(m > 0, positions[None, :], -1), axis=1)
  return jnp.where(positions[None, :] == last[:, None], flat[:, None], 0.0)


def gae_advantages(
    r_t: Array,
    discount_t: Array,
    values: Array,
    *,
    lambda_: float = 0.95,
    stop_target_gradients: bool = True,
) -> tuple[Array, Array]:
  """Generalised advantage estimation by a reverse `lax.scan` (rlax layout, unbatched).

    delta_t = r_t + discount_t * V_{t+1} - V_t
    A_t     = delta_t + discount_t * lambda * A_{t+1}
    R_t     = A_t + V_t   (the lambda-return used as the value target)

  Off-by-one convention: `r_t[t]` and `discount_t[t]` are the reward and discount received on the
  transition out of the state whose value is `values[t]`; `values` has T+1 entries, the last being
  the bootstrap value. Episode ends are `discount_t = gamma * (1 - done_t)`.
  With lambda=1, A_t is the discounted return minus V_t; with lambda=0, A_t = delta_t.

  Paper: Schulman et al., "High-Dimensional Continuous Control Using GAE", 2015, arXiv 1506.02438.

  Args:
    r_t: `[T]` rewards.
    discount_t: `[T]` discounts.
    values: `[T+1]` value estimates.
    lambda_: the GAE lambda (scalar or `[T]`).
    stop_target_gradients: stop gradients through the advantages and returns.

  Returns:
    (advantages `[T]`, returns `[T]`).
  """
  if values.shape[0] != r_t.shape[0] + 1:
    raise ValueError(f"values must have T+1={r_t.shape[0] + 1} entries; got {values.shape[0]}")
  lambda_ = jnp.broadcast_to(jnp.asarray(lambda_, jnp.float32), r_t.shape)
  delta = r_t + discount_t * values[1:] - values[:-1]

  def step(carry, xs):
    delta_t, d_t, l_t = xs
    a_t = delta_t + d_t * l_t * carry
    return a_t, a_t

  _, adv = jax.lax.scan(step, jnp.zeros((), delta.dtype), (delta, discount_t, lambda_),
                        reverse=True)
  returns = adv + values[:-1]
  if stop_target_gradients:
    adv, returns = jax.lax.stop_gradient(adv), jax.lax.stop_gradient(returns)
  return adv, returns


def token_gae_advantages(
    token_rewards: Array,
    values: Array,
    mask: Array,
    *,
    gamma: float = 1.0,
    lambda_: float = 1.0,
    whiten: bool = True,
) -> tuple[Array, Array]:
  """GAE over `[B, T]` response tokens for LLM PPO (bootstrap 0 after the last valid token).

  Masked positions carry nothing: the discount into a masked position is 0, which equals verl's
  treatment for right-padded single-turn responses. Advantages are whitened over the batch's valid
  tokens when `whiten` (verl default for LLM PPO; off in classic control).
  """
  m = mask.astype(jnp.float32)
  v = jnp.where(mask.astype(bool), values.astype(jnp.float32), 0.0)
  v_next = jnp.concatenate([v, jnp.zeros_like(v[:, :1])], axis=1)
  next_valid = jnp.concatenate([m[:, 1:], jnp.zeros_like(m[:, :1])], axis=1)
  discount = gamma * next_valid
  r = jnp.where(mask.astype(bool), token_rewards.astype(jnp.float32), 0.0)
  adv, ret = jax.vmap(lambda a, b, c: gae_advantages(a, b, c, lambda_=lambda_))(r, discount, v_next)
  adv, ret = adv * m, ret * m
  if whiten:
    adv = aggregation.masked_whiten(adv, mask)
  return adv, ret


def overlong_penalty(lengths: Array, *, max_len: int, buffer: int, factor: float = 1.0) -> Array:
  """DAPO's soft overlong punishment, counted in tokens.

    penalty = min(-(len - (max_len - buffer)) / buffer * factor, 0)

  Zero up to `max_len - buffer`, then linear down to -factor at len = max_len. Never positive.
  Paper: DAPO (Yu et al., 2025, arXiv 2503.14476); verl `DAPORewardManager`.
  """
  if buffer <= 0 or buffer > max_len:
    raise ValueError(f"overlong buffer must be in (0, max_len={max_len}]; got buffer={buffer}")
  expected = max_len - buffer
  exceed = lengths.astype(jnp.float32) - expected
  return jnp.minimum(-exceed / buffer * factor, 0.0)


# ==================================================================================================
# Seed objectives I (issue 5). Appended sections, one per paper.
# ==================================================================================================


def _has_spread(r: Array) -> Array:
  """`[P, 1]` True where a group's rewards are not all equal (guards f32 mean residues)."""
  return jnp.max(r, axis=1, keepdims=True) > jnp.min(r, axis=1, keepdims=True)


def _group_std(r: Array) -> Array:
  """Unbiased per-group std `[P, 1]`; exactly 0 for zero-spread groups and groups of one."""
  g = r.shape[1]
  centred = jnp.where(_has_spread(r), r - jnp.mean(r, axis=1, keepdims=True), 0.0)
  return jnp.sqrt(jnp.sum(jnp.square(centred), axis=1, keepdims=True) / max(g - 1, 1))


# --- DCPO: smooth advantage standardization -----------------------------------------------------


def init_dcpo_stats(num_prompts: int) -> dict[str, Array]:
  """Empty per-prompt history for `dcpo_smooth_advantages`: mean, std and visit count per prompt."""
  return {"mean": jnp.zeros((num_prompts,), jnp.float32),
          "std": jnp.zeros((num_prompts,), jnp.float32),
          "visits": jnp.zeros((num_prompts,), jnp.int32)}


def dcpo_smooth_advantages(
    rewards: Array,
    prompt_ids: Array,
    state: dict[str, Array],
    *,
    scale_by_std: bool = True,
    old_mean_ratio: float = 1.0,
) -> tuple[Array, dict[str, Array]]:
  """DCPO's smooth advantage standardization (SAS) across the visits of each prompt.

  For prompt j at its i-th visit (1-based; k = i - 1 earlier visits), with this group's unbiased
  statistics (mu_new, sigma_new) and the stored cumulative ones (mu_old, sigma_old):

    mu_tot    = (k mu_old + mu_new) / i
    sigma_tot^2 = [k sigma_old^2 + sigma_new^2 + (k / i)(mu_new - mu_old)^2] / i
    A_new = (R - mu_new) / sigma_new,   A_tot = (R - mu_tot) / sigma_tot     (0 where sigma = 0)
    SA_new = ((i-1)/i) A_new + (1/i) A_tot,   SA_tot = (1/i) A_new + ((i-1)/i) A_tot
    A = SA_new if |SA_new| < |SA_tot| else SA_tot

  At the first visit the cumulative statistics equal the group's, so A = GRPO without epsilon. A
  zero-variance group at a later visit still gets A = A_tot / i. `scale_by_std=False` drops the
  divisions. Visits are weighted equally (not by sample count), as in the official code.
  `old_mean_ratio` multiplies the stored mean before use (official `user_old_mean_ratio`, 1 = off).

  Paper: "DCPO: Dynamic Clipping Policy Optimization", 2025, arXiv 2509.02333, Sec. 3.2.
  Deviation: a prompt id repeated within one batch is undefined here (one of its groups' statistics
  is stored); the official trainer also sees each prompt once per step.

  Args:
    rewards: `[P, G]` outcome rewards.
    prompt_ids: `[P]` int dataset indices in `[0, num_prompts)`.
    state: from `init_dcpo_stats`.
    scale_by_std: standardise (paper default) or only centre.
    old_mean_ratio: multiplier on the stored mean.

  Returns:
    (`[P, G]` advantages, new state).
  """
  _check_groups(rewards)
  r = rewards.astype(jnp.float32)
  ids = prompt_ids.astype(jnp.int32)
  mu_new = jnp.mean(r, axis=1)
  sd_new = _group_std(r)[:, 0]
  k = state["visits"][ids].astype(jnp.float32)
  i = k + 1.0
  mu_old = state["mean"][ids] * old_mean_ratio
  sd_old = state["std"][ids]
  mu_tot = (k * mu_old + mu_new) / i
  var_tot = (k * jnp.square(sd_old) + jnp.square(sd_new)
             + (k / i) * jnp.square(mu_new - mu_old)) / i
  sd_tot = jnp.sqrt(jnp.maximum(var_tot, 0.0))

  spread = _has_spread(r)

  def standardise(mu, sd):
    centred = r - mu[:, None]
    if not scale_by_std:
      return centred
    return aggregation.safe_divide(centred, jnp.broadcast_to(sd[:, None], r.shape))

  a_new = jnp.where(spread, standardise(mu_new, sd_new), 0.0)
  a_tot = standardise(mu_tot, sd_tot)
  w = ((i - 1.0) / i)[:, None]
  sa_new = w * a_new + (1.0 - w) * a_tot
  sa_tot = (1.0 - w) * a_new + w * a_tot
  adv = jnp.where(jnp.abs(sa_new) < jnp.abs(sa_tot), sa_new, sa_tot)
  new_state = {"mean": state["mean"].at[ids].set(mu_tot),
               "std": state["std"].at[ids].set(sd_tot),
               "visits": state["visits"].at[ids].set(state["visits"][ids] + 1)}
  return adv, new_state


# --- BNPO: Beta normalization ---------------------------------------------------------------------

BNPO_MAX_WEIGHT = 1e6


def bnpo_beta_params(group_means: Array, *, shrink: float = 3.0) -> tuple[Array, Array]:
  """BNPO's method-of-moments Beta fit over the batch's group success rates.

    m = mean(p_g), v = var_unbiased(p_g)
    a = (m(1-m)/v - 1) m,  b = (m(1-m)/v - 1)(1-m);  alpha = max(1 + a/shrink, 1), beta likewise

  One group: m = 0, v = 1 (official), hence alpha = beta = 1. v = 0 (all group means equal), where
  the official code is non-finite, also falls back to alpha = beta = 1. The "/3" shrinkage is the
  official code's. Paper: "BNPO", 2025, arXiv 2506.02864.
  """
  p = group_means.astype(jnp.float32)
  n = p.shape[0]
  if n < 2:
    return jnp.ones((), jnp.float32), jnp.ones((), jnp.float32)
  m = jnp.mean(p)
  v = jnp.sum(jnp.square(p - m)) / (n - 1)
  ok = v > 0
  c = m * (1.0 - m) / jnp.where(ok, v, 1.0) - 1.0
  alpha = jnp.where(ok, jnp.maximum(1.0 + c * m / shrink, 1.0), 1.0)
  beta = jnp.where(ok, jnp.maximum(1.0 + c * (1.0 - m) / shrink, 1.0), 1.0)
  return alpha, beta


def bnpo_advantages(
    rewards: Array,
    *,
    min_value: float = 0.0,
    max_value: float = 1.0,
    alpha: Array | float | None = None,
    beta: Array | float | None = None,
    shrink: float = 3.0,
) -> Array:
  """Beta-normalised advantages of BNPO: A_i = (s_i - p_g) / BetaPDF(p_g; alpha, beta).

    s_i = (R_i - min_value) / (max_value - min_value),  p_g = mean_{i in g} s_i
    w_g = min(1 / BetaPDF(p_g; alpha, beta), 1e6),       A_i = w_g (s_i - p_g)

  alpha, beta are fitted from the batch's group means by `bnpo_beta_params` unless given. The pdf
  is taken in log space, so all-correct / all-wrong groups get the capped weight times 0 = 0.
  alpha = beta = 1 gives A = s - p (REINFORCE with the group-mean baseline). A group of one gets
  p = 0 (official code), so A = w s.

  Paper: "BNPO: Beta Normalization Policy Optimization", 2025, arXiv 2506.02864;
  official `compute_bnpo_outcome_advantage`.

  Args:
    rewards: `[P, G]` rewards in `[min_value, max_value]`.
    min_value, max_value: the reward range mapped to [0, 1].
    alpha, beta: Beta parameters, or None to fit them from the batch.
    shrink: the fit's shrinkage divisor.

  Returns:
    `[P, G]` advantages.
  """
  _check_groups(rewards)
  if max_value <= min_value:
    raise ValueError(f"bnpo needs max_value > min_value; got min={min_value}, max={max_value}")
  s = (rewards.astype(jnp.float32) - min_value) / (max_value - min_value)
  p = jnp.mean(s, axis=1) if s.shape[1] > 1 else jnp.zeros(s.shape[:1], jnp.float32)
  if alpha is None or beta is None:
    fa, fb = bnpo_beta_params(p, shrink=shrink)
    alpha = fa if alpha is None else alpha
    beta = fb if beta is None else beta
  logpdf = jax.scipy.stats.beta.logpdf(p, alpha, beta)
  w = jnp.minimum(jnp.exp(-jnp.minimum(logpdf, 80.0)), BNPO_MAX_WEIGHT)
  w = jnp.where(jnp.isnan(w), BNPO_MAX_WEIGHT, w)
  centred = jnp.where(_has_spread(s) | (s.shape[1] == 1), s - p[:, None], 0.0)
  return w[:, None] * centred


def bnpo_decomposed_advantages(reward_components: Array, **kwargs) -> Array:
  """BNPO's advantage decomposition: `bnpo_advantages` per reward component, then the mean.

  `reward_components` is `[K, P, G]` (e.g. accuracy and format); each component gets its own Beta
  fit. Official flag `use_advantage_decomposition`. Keyword arguments go to `bnpo_advantages`.
  """
  if reward_components.ndim != 3:
    raise ValueError(f"reward_components must be [K, P, G]; got {reward_components.shape}")
  return jnp.mean(jax.vmap(lambda r: bnpo_advantages(r, **kwargs))(reward_components), axis=0)


# --- ADORA: length-based group attenuation --------------------------------------------------------


def adora_group_weights(
    rewards: Array,
    lengths: Array,
    *,
    correct_score: float,
    length_threshold: float,
    attenuation: float = 0.1,
    variant: str = "llm",
) -> Array:
  """ADORA's per-group weight: 1 for "advantageous" groups, `attenuation` (lambda) otherwise.

  positives = responses with score > correct_score; negatives = the others whose length is below
  `length_threshold` (not truncated). A group is advantageous iff max(len_pos) > mean(len_neg).
    variant "llm" (official verl code): empty max or mean = -inf, so no positives => attenuate,
      positives without negatives => keep.
    variant "vlm" (official OpenRLHF code): empty mean = +inf, and no positives => keep, so
      positives without negatives => attenuate.

  Paper/code: ADORA (ShadeCloak/ADORA, 2025; arXiv 2602.10019),
  `compute_grpo_outcome_advantage_ADORA` and `weight_func`. The paper's amplification for strong
  models is not implemented (no formula available); the code's attenuation is.

  Returns:
    `[P]` weights.
  """
  if variant not in ("llm", "vlm"):
    raise ValueError(f"adora variant must be 'llm' or 'vlm'; got {variant!r}")
  _check_groups(rewards)
  lens = lengths.astype(jnp.float32).reshape(rewards.shape)
  pos = rewards > correct_score
  neg = (~pos) & (lens < length_threshold)
  has_pos, has_neg = jnp.any(pos, axis=1), jnp.any(neg, axis=1)
  max_pos = jnp.max(jnp.where(pos, lens, -jnp.inf), axis=1)
  mean_neg = aggregation.safe_divide(jnp.sum(jnp.where(neg, lens, 0.0), axis=1),
                                     jnp.sum(neg.astype(jnp.float32), axis=1))
  if variant == "llm":
    keep = has_pos & (~has_neg | (max_pos > mean_neg))
  else:
    keep = ~has_pos | (has_neg & (max_pos > mean_neg))
  return jnp.where(keep, 1.0, attenuation).astype(jnp.float32)


def adora_advantages(
    rewards: Array,
    lengths: Array,
    *,
    correct_score: float,
    length_threshold: float,
    attenuation: float = 0.1,
    variant: str = "llm",
    eps: float = 1e-6,
) -> Array:
  """ADORA advantages: GRPO advantages times `adora_group_weights` (a per-group constant).

  The weight is constant within a group, so group-mean-zero is preserved; attenuation = 1 is GRPO.
  See `adora_group_weights` for the categorisation. `lengths` is `[P, G]` (or `[P*G]`) token counts.
  """
  w = adora_group_weights(rewards, lengths, correct_score=correct_score,
                          length_threshold=length_threshold, attenuation=attenuation,
                          variant=variant)
  return grpo_advantages(rewards, eps=eps) * w[:, None]


# --- EMPG: entropy-modulated step advantages ------------------------------------------------------


def empg_advantages(
    seq_advantages: Array,
    entropy: Array,
    segment_ids: Array,
    mask: Array,
    *,
    max_steps: int,
    k: float = 1.0,
    k_future: float = 1.0,
    zeta: float = 0.05,
    eps: float = 1e-8,
) -> Array:
  """EMPG: rescale each step's advantage by its confidence and add a future-clarity bonus.

    H_t  = mean token entropy of step t
    Hn   = (H - min_batch H) / (max_batch H - min_batch H + eps)
    g(H_t) = exp(-k Hn_t) / mean_{valid steps} exp(-k Hn)       (batch mean of g is exactly 1)
    f(H_{t+1}) = exp(-k_future Hn_{t+1})   (0 for the last step of a trace)
    A_mod = A_i g(H_t) + zeta f(H_{t+1});   A_final = A_mod - mean_{valid steps} A_mod

  A_final is broadcast over the tokens of step t. Steps are token spans: `segment_ids[b, t]` is the
  0-based step index of token t (consecutive per row); tokens with an id < 0 or >= `max_steps`, and
  masked tokens, belong to no step and get advantage 0.

  Paper: "Harnessing Uncertainty: Entropy-Modulated Policy Gradients for Long-Horizon
  LLM Agents", 2025, arXiv 2509.09265 (Eq. for g, f and the recentring per a secondary summary; no
  official code). Inferred choices: f = 0 at the last step, recentring by the mean over valid steps
  without std division, defaults k = k_future = 1, zeta = 0.05 (not given in the paper).

  Args:
    seq_advantages: `[B]` (or `[P, G]`) trajectory-level advantages (e.g. GRPO).
    entropy: `[B, T]` token entropies of the rollout policy.
    segment_ids: `[B, T]` int step index per token.
    mask: `[B, T]` valid-token mask.
    max_steps: static upper bound on steps per trace.
    k, k_future, zeta: modulation sharpness, future-bonus sharpness, future-bonus weight.
    eps: min-max epsilon.

  Returns:
    `[B, T]` token advantages.
  """
  a = seq_advantages.reshape(-1).astype(jnp.float32)
  m = mask.astype(bool)
  seg = segment_ids.astype(jnp.int32)
  onehot = jax.nn.one_hot(jnp.where(m, seg, -1), max_steps, dtype=jnp.float32)  # [B, T, S]
  count = jnp.sum(onehot, axis=1)
  ent = jnp.where(m, entropy.astype(jnp.float32), 0.0)
  step_h = aggregation.safe_divide(jnp.einsum("bts,bt->bs", onehot, ent), count)
  valid = count > 0
  big = jnp.finfo(jnp.float32).max
  h_min = jnp.min(jnp.where(valid, step_h, big))
  h_max = jnp.max(jnp.where(valid, step_h, -big))
  any_valid = jnp.any(valid)
  hn = jnp.where(valid & any_valid, (step_h - h_min) / (jnp.where(any_valid, h_max - h_min, 0.0)
                                                         + eps), 0.0)
  raw = jnp.exp(-k * hn)
  g = aggregation.safe_divide(raw, aggregation.masked_mean(raw, valid))
  f = jnp.exp(-k_future * hn)
  f_next = jnp.concatenate([f[:, 1:] * valid[:, 1:], jnp.zeros_like(f[:, :1])], axis=1)
  a_mod = a[:, None] * g + zeta * f_next
  a_final = jnp.where(valid, a_mod - aggregation.masked_mean(a_mod, valid), 0.0)
  return jnp.einsum("bts,bs->bt", onehot, a_final)


# --- OBLR-PO: gradient-weighted optimal baseline --------------------------------------------------


def oblr_path_weights(logp: Array, prob_sq_sum: Array, mask: Array) -> Array:
  """Cheap proxy for ||grad_theta log pi(y_i|x)||^2: the summed logit-gradient norms of a response.

    w_i = sum_t ||e_{a_t} - pi_t||^2 = sum_t (1 - 2 pi_t(a_t) + sum_v pi_t(v)^2)

  It ignores cross-token terms and the hidden-state norms (the "path variance" used by verl's
  optimal token baseline). Inferred link to OBLR-PO (arXiv 2511.23310), not from the paper.

  Args:
    logp: `[B, T]` sampled-token log-probs.
    prob_sq_sum: `[B, T]` sum_v pi_t(v)^2 of the same policy.
    mask: `[B, T]`.

  Returns:
    `[B]` non-negative weights.
  """
  p = jnp.exp(jnp.minimum(logp.astype(jnp.float32), 0.0))
  per_token = jnp.maximum(1.0 - 2.0 * p + prob_sq_sum.astype(jnp.float32), 0.0)
  return aggregation.masked_sum(per_token, mask, axis=-1)


def oblr_baseline_advantages(rewards: Array, grad_sq_norms: Array) -> Array:
  """OBLR-PO's variance-optimal baseline: a_i = R_i - sum_i w_i R_i / sum_i w_i, per group.

  w_i = ||grad log pi(y_i | x)||^2 (or a proxy such as `oblr_path_weights`). Equal weights give the
  group mean (Dr.GRPO); sum_i w_i (R_i - b*) = 0 in every group; a group whose weights are all 0
  falls back to the group mean. Our reading of the paper (abstract only; the textbook optimal
  baseline b* = E[||g||^2 R] / E[||g||^2]): "OBLR-PO", 2025, arXiv 2511.23310.

  Args:
    rewards: `[P, G]`.
    grad_sq_norms: `[P, G]` or `[P*G]` non-negative weights.

  Returns:
    `[P, G]` advantages.
  """
  _check_groups(rewards)
  r = rewards.astype(jnp.float32)
  w = jnp.maximum(grad_sq_norms.astype(jnp.float32).reshape(r.shape), 0.0)
  wsum = jnp.sum(w, axis=1, keepdims=True)
  b = jnp.where(wsum > 0, aggregation.safe_divide(jnp.sum(w * r, axis=1, keepdims=True), wsum),
                jnp.mean(r, axis=1, keepdims=True))
  return jnp.where(_has_spread(r), r - b, 0.0)


# --- Distribution-centric PO: tempered double importance sampling --------------------------------


def dist_po_temperature(prev_entropy: Array, *, entropy_target: float = 0.5,
                        t_high: float = 1.2, t_low: float = 0.8) -> Array:
  """T = t_high if H <= H0 else t_low: pull the policy toward a hotter (cooler) version of it."""
  return jnp.where(prev_entropy <= entropy_target, t_high, t_low).astype(jnp.float32)


def dist_po_alpha(prev_entropy: Array, correct_fraction: Array, *, entropy_target: float = 0.5,
                  alpha_cap: float = 0.1) -> Array:
  """alpha = alpha0 / (alpha0 + true_ratio), alpha0 = min(|H0 - H|, cap); 0 when nothing is correct.

  The official code divides by true_ratio (NaN with no correct response); we return alpha = 0
  (plain GRPO) there. With binary rewards the GRPO advantages are 0 in that case anyway.
  """
  a0 = jnp.minimum(jnp.abs(entropy_target - prev_entropy), alpha_cap).astype(jnp.float32)
  den = a0 + correct_fraction
  return jnp.where(correct_fraction > 0, aggregation.safe_divide(a0, den), 0.0)


def dist_po_tempered_ratio(old_logp_tempered: Array, old_logp: Array, mask: Array) -> Array:
  """rho = pi_old^T(o_t) / pi_old(o_t) = exp(old_logp_T - old_logp) on valid tokens, else 0."""
  m = mask.astype(bool)
  d = jnp.where(m, old_logp_tempered.astype(jnp.float32) - old_logp.astype(jnp.float32), 0.0)
  return jnp.where(m, jnp.exp(jnp.clip(d, -20.0, 20.0)), 0.0)


def dist_po_advantages(
    rewards: Array,
    old_logp: Array,
    old_logp_tempered: Array,
    mask: Array,
    *,
    prev_entropy: Array,
    entropy_target: float = 0.5,
    correct_threshold: float = 0.05,
    alpha_cap: float = 0.1,
    eps: float = 1e-6,
) -> tuple[Array, dict[str, Array]]:
  """Distribution-centric PO's mixed advantage (official algorithm "DCPO" of 597358816/DCPO).

    correct_i = 1[R_i > correct_threshold],  true_ratio = mean_i correct_i
    alpha = dist_po_alpha(H_prev, true_ratio),  rho_it = exp(old_logp^T_it - old_logp_it)
    A'_it = (1 - alpha) A^GRPO_i + alpha correct_i rho_it

  `old_logp_tempered` holds the rollout policy's log-probs of the sampled tokens with logits / T,
  T = `dist_po_temperature(prev_entropy)`. The added term is >= 0 and only on correct responses.
  H_prev = prev_entropy is the previous step's sampled-token entropy estimate (-mean logp).

  Paper: "Distribution-Centric Policy Optimization", 2026, arXiv 2601.12730 (double importance
  sampling). Deviation: alpha = 0 when no response is correct (official: NaN).

  Returns:
    (`[B, T]` advantages, aux with `alpha`, `correct_fraction`, `rho_mean`).
  """
  _check_groups(rewards)
  correct = (rewards.astype(jnp.float32) > correct_threshold).astype(jnp.float32).reshape(-1)
  frac = jnp.mean(correct)
  alpha = dist_po_alpha(prev_entropy, frac, entropy_target=entropy_target, alpha_cap=alpha_cap)
  rho = dist_po_tempered_ratio(old_logp_tempered, old_logp, mask)
  base = broadcast_to_tokens(grpo_advantages(rewards, eps=eps), mask)
  adv = jnp.where(mask.astype(bool), (1.0 - alpha) * base + alpha * correct[:, None] * rho, 0.0)
  return adv, {"alpha": alpha, "correct_fraction": frac,
               "rho_mean": aggregation.masked_mean(rho, mask)}
