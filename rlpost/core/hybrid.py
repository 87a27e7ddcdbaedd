"""SFT-RL hybrids: one-token rollout (OTR), the unified estimator (UPGE), HPT's switch, DYPO routing.

These mix demonstrations with on-policy signal. As everywhere in the core they take arrays (logits,
log-probs, masks, rewards) and return unreduced losses; nothing here runs a model.
"""

import jax
import jax.numpy as jnp

from rlpost.core import aggregation
from rlpost.core import surrogates

Array = jax.Array

# ------------------------------------------------------------------------------------------- OTR


def _otr_rewards(candidates: Array, targets: Array, wrong_reward: float) -> Array:
  return jnp.where(candidates == targets, 1.0, wrong_reward)


def otr_loss_per_token(
    logits: Array,
    targets: Array,
    mask: Array,
    key: Array,
    *,
    num_samples: int,
    temperature: float,
    wrong_reward: float,
) -> tuple[Array, dict[str, Array]]:
  """One-token rollout: a one-step policy gradient at every position of an SFT sequence.

  With the gold prefix as state, K candidate tokens are drawn from the tempered, stop-gradient
  policy pi'(.|s_t) = softmax(sg(z_t) / temperature); a candidate equal to the gold token earns 1,
  any other earns `wrong_reward` (beta), and

    l_t = -(1/K) sum_k R(a_k, x_t) log pi_theta(a_k | s_t).

  `temperature=0` samples greedily (every candidate is the argmax). With wrong_reward = 0, greedy
  sampling and a correct top token, l_t is exactly the SFT cross-entropy; with temperature 1 and
  large K the gradient approaches the exact expectation `otr_expected_loss_per_token`.

  Paper: "One-Token Rollout: Guiding Supervised Fine-Tuning of LLMs with Policy Gradient", 2025,
  arXiv 2509.26313 (no official code; equation from the paper's reviews — see BUILD_NOTES.md).
  The paper's K = 256; temperature and beta are not published, so they are required arguments.

  Args:
    logits: `[B, T, V]` next-token logits at each position (position t predicts targets[:, t]).
    targets: `[B, T]` gold tokens.
    mask: `[B, T]` positions trained on.
    key: PRNG key for the candidate draws.
    num_samples: K.
    temperature: sampling temperature tau (0 = greedy).
    wrong_reward: beta, the reward of a non-gold candidate.

  Returns:
    (per-token loss `[B, T]`, aux with `hit_rate` (share of candidates equal to the gold token)).
  """
  if num_samples < 1:
    raise ValueError(f"num_samples must be >= 1; got num_samples={num_samples}")
  if temperature < 0:
    raise ValueError(f"temperature must be >= 0; got temperature={temperature}")
  z = logits.astype(jnp.float32)
  log_probs = jax.nn.log_softmax(z, axis=-1)
  frozen = jax.lax.stop_gradient(z)
  if temperature == 0:
    cand = jnp.broadcast_to(jnp.argmax(frozen, axis=-1), (num_samples,) + targets.shape)
  else:
    cand = jax.random.categorical(key, frozen / temperature, axis=-1,
                                  shape=(num_samples,) + targets.shape)
  cand_logp = jnp.take_along_axis(log_probs[None], cand[..., None], axis=-1)[..., 0]
  reward = _otr_rewards(cand, targets[None], wrong_reward)
  m = mask.astype(bool)
  loss = jnp.where(m, -jnp.mean(reward * cand_logp, axis=0), 0.0)
  hits = jnp.mean((cand == targets[None]).astype(jnp.float32), axis=0)
  return loss, {"hit_rate": aggregation.masked_mean(hits, m)}


def otr_expected_loss_per_token(
    logits: Array, targets: Array, mask: Array, *, temperature: float, wrong_reward: float
) -> tuple[Array, dict[str, Array]]:
  """The K -> infinity limit of OTR: l_t = -sum_v pi'(v|s_t) R(v, x_t) log pi_theta(v|s_t)."""
  if temperature <= 0:
    raise ValueError(f"the exact OTR expectation needs temperature > 0; got {temperature}")
  z = logits.astype(jnp.float32)
  log_probs = jax.nn.log_softmax(z, axis=-1)
  tempered = jax.nn.softmax(jax.lax.stop_gradient(z) / temperature, axis=-1)
  vocab = jnp.arange(z.shape[-1])
  reward = jnp.where(vocab == targets[..., None], 1.0, wrong_reward)
  loss = -jnp.sum(tempered * reward * log_probs, axis=-1)
  return jnp.where(mask.astype(bool), loss, 0.0), {}


# ------------------------------------------------------------------------------------------ UPGE

UPGE_DENOMINATORS = ("self", "old", "one")


def upge_loss_per_token(
    logp: Array,
    advantages: Array,
    mask: Array,
    *,
    denominator: str,
    old_logp: Array | None = None,
    stable_mask: Array | None = None,
) -> tuple[Array, dict[str, Array]]:
  """The Unified Policy Gradient Estimator as a surrogate loss.

    grad_uni = 1_stable * (1 / pi_ref) * A * grad pi_theta = 1_stable * (pi_theta/pi_ref) * A * grad log pi_theta

  implemented as l = -1_stable * A * exp(logp - sg(log pi_ref)), whose gradient is grad_uni. The
  four swappable parts:
    * stabilisation mask `stable_mask` (None = keep all; `ppo_stable_mask` gives PPO's clip mask);
    * reference denominator: "self" (pi_ref = sg(pi_theta): SFT / REINFORCE), "old"
      (pi_ref = pi_old: PPO / GRPO), "one" (pi_ref = 1: offline parts of SRFT / LUFFY);
    * advantage `advantages` (1 for SFT, group-relative for GRPO, +-1 or LOO for REINFORCE/RLOO);
    * likelihood gradient grad pi_theta (fixed).
  Settings: SFT = ("self", A=1, no mask); REINFORCE = ("self", A); PPO/GRPO = ("old", A, PPO mask).

  Paper: "Towards a Unified View of Large Language Model Post-Training", 2025, arXiv 2509.04419.
  """
  if denominator not in UPGE_DENOMINATORS:
    raise ValueError(f"unknown UPGE denominator {denominator!r}; valid: {', '.join(UPGE_DENOMINATORS)}")
  m = mask.astype(bool)
  if stable_mask is not None:
    m = m & stable_mask.astype(bool)
  logp = jnp.where(m, logp.astype(jnp.float32), 0.0)
  if denominator == "self":
    log_ref = jax.lax.stop_gradient(logp)
  elif denominator == "old":
    if old_logp is None:
      raise ValueError("UPGE denominator 'old' needs old_logp")
    log_ref = jnp.where(m, old_logp.astype(jnp.float32), 0.0)
  else:
    log_ref = jnp.zeros_like(logp)
  ratio = jnp.exp(jnp.clip(logp - jax.lax.stop_gradient(log_ref), -surrogates.LOG_RATIO_CLAMP,
                           surrogates.LOG_RATIO_CLAMP))
  adv = jnp.where(m, jax.lax.stop_gradient(advantages.astype(jnp.float32)), 0.0)
  return jnp.where(m, -adv * ratio, 0.0), {"ratio": ratio}


def ppo_stable_mask(logp: Array, old_logp: Array, advantages: Array, *, clip_low: float = 0.2,
                    clip_high: float = 0.2) -> Array:
  """PPO's stabilisation mask: False where the clip removes the gradient (UPGE's 1_stable)."""
  r = jnp.exp(jnp.clip(logp - old_logp, -surrogates.LOG_RATIO_CLAMP, surrogates.LOG_RATIO_CLAMP))
  return ~(((advantages > 0) & (r > 1 + clip_high)) | ((advantages < 0) & (r < 1 - clip_low)))


# ------------------------------------------------------------------------------------------- HPT


def hpt_route(correct: Array, *, switch_gate: int = 0) -> Array:
  """HPT's per-question switch: True (pure SFT on the demonstration) where #correct <= gate.

  correct: `[P, G]` 0/1 outcomes of the G verification rollouts. Paper default gate 0 (SFT only
  when no rollout solved the question; Qwen2.5-Math-7B), gate 2 for Llama-3.1-8B. Questions that
  are not routed to SFT are trained by pure RL on their rollouts.
  """
  if correct.ndim != 2:
    raise ValueError(f"correct must be [P, G]; got shape {correct.shape}")
  return jnp.sum(correct.astype(jnp.int32), axis=1) <= switch_gate


def hpt_loss(
    rl_per_token: Array,
    rl_mask: Array,
    demo_logp: Array,
    demo_mask: Array,
    use_sft: Array,
    *,
    group_size: int,
    max_response_len: int,
    sft_coef: float = 1.0,
) -> tuple[Array, dict[str, Array]]:
  """HPT's actor loss with its two explicit normalisers.

    L = sft_coef * token_mean(-log pi(demo tokens) of SFT-routed questions)
        + sum(RL per-token loss of RL-routed questions) / max_response_len

  (the official code removes PPO's token mean for the RL term and divides by the maximum response
  length; the SFT term is a token mean). `rl_per_token` is typically `upge_loss_per_token(...,
  denominator="old")` with no clip (HPT's `loss_remove_clip`).

  Args:
    rl_per_token: `[P*G, T]` per-token RL loss of the rollouts.
    rl_mask: `[P*G, T]`.
    demo_logp: `[P, Td]` log-probs of one demonstration per question.
    demo_mask: `[P, Td]`.
    use_sft: `[P]` from `hpt_route`.
  """
  rows = jnp.repeat(~use_sft, group_size)
  rl_m = rl_mask.astype(bool) & rows[:, None]
  rl = aggregation.masked_sum(rl_per_token, rl_m) / max_response_len
  sft_m = demo_mask.astype(bool) & use_sft[:, None]
  sft = aggregation.masked_mean(-demo_logp, sft_m)
  return sft_coef * sft + rl, {"sft_loss": sft, "rl_loss": rl,
                               "sft_fraction": jnp.mean(use_sft.astype(jnp.float32))}


# ------------------------------------------------------------------------------------------ DYPO

DYPO_EASY, DYPO_HARD, DYPO_MIXED = 0, 1, 2


def dypo_route(correct: Array) -> Array:
  """DYPO's per-group regime: 0 all correct (dropped), 1 all wrong (SFT), 2 mixed (GRPO + GAL)."""
  if correct.ndim != 2:
    raise ValueError(f"correct must be [P, G]; got shape {correct.shape}")
  c = correct.astype(jnp.float32)
  all_right = jnp.all(c >= 1.0, axis=1)
  all_wrong = jnp.all(c <= 0.0, axis=1)
  return jnp.where(all_right, DYPO_EASY, jnp.where(all_wrong, DYPO_HARD, DYPO_MIXED))


def dypo_loss(
    grpo_per_token: Array,
    mask: Array,
    gal_per_group: Array,
    teacher_logp: Array,
    teacher_mask: Array,
    regime: Array,
    *,
    group_size: int,
    alpha: float = 0.5,
    gamma: float = 1.0,
) -> tuple[Array, dict[str, Array]]:
  """L = mean_q [ I_H gamma L_SFT + I_M (alpha L_GRPO + (1 - alpha) L_GAL) ], I_E contributes 0.

  L_SFT is the sequence NLL -log pi(tau_tgt|q) of one teacher demonstration (drawn uniformly from
  several teachers by the caller); L_GRPO is the GRPO per-token loss aggregated seq-mean-token-mean
  over the mixed groups' responses; L_GAL comes from `group_alignment_loss`. Paper defaults
  alpha = 0.5, beta_GAL = 1, gamma = 1 (arXiv 2604.08926).

  Args:
    grpo_per_token, mask: `[P*G, T]`.
    gal_per_group: `[P]`.
    teacher_logp, teacher_mask: `[P, Td]` teacher demonstration token log-probs.
    regime: `[P]` from `dypo_route`.
  """
  p = regime.shape[0]
  hard = regime == DYPO_HARD
  mixed = regime == DYPO_MIXED
  rows_mixed = jnp.repeat(mixed, group_size)
  m = mask.astype(bool) & rows_mixed[:, None]
  n_i = jnp.sum(m.astype(jnp.float32), axis=-1)
  seq = aggregation.safe_divide(aggregation.masked_sum(grpo_per_token, m, axis=-1), n_i)
  grpo_q = jnp.sum(seq.reshape(p, group_size), axis=1) / group_size
  sft_q = -aggregation.masked_sum(teacher_logp, teacher_mask, axis=-1)
  per_q = jnp.where(hard, gamma * sft_q, 0.0) + jnp.where(
      mixed, alpha * grpo_q + (1.0 - alpha) * gal_per_group, 0.0)
  return jnp.mean(per_q), {
      "frac_easy": jnp.mean((regime == DYPO_EASY).astype(jnp.float32)),
      "frac_hard": jnp.mean(hard.astype(jnp.float32)),
      "frac_mixed": jnp.mean(mixed.astype(jnp.float32)),
  }
