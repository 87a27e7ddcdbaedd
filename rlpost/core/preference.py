"""Pairwise and contrastive sequence-level objectives: DPO, IPO, CoPG and DYPO's group alignment.

All functions take **sequence** log-probabilities (sums over response tokens, the DPO convention;
`sequence_logprob` builds them from `[B, T]` token log-probs) and return unreduced per-pair or
per-group losses.
"""

import jax
import jax.numpy as jnp

from rlpost.core import aggregation

Array = jax.Array


def sequence_logprob(logp: Array, mask: Array) -> Array:
  """log pi(y|x) = sum_t mask * logp: `[B, T]` -> `[B]` (NaN-safe on padding)."""
  return aggregation.masked_sum(logp, mask, axis=-1)


def preference_margin(chosen_logp: Array, rejected_logp: Array, chosen_ref_logp: Array,
                      rejected_ref_logp: Array) -> Array:
  """h = [log pi(y_w) - log ref(y_w)] - [log pi(y_l) - log ref(y_l)], the implicit reward gap."""
  return (chosen_logp - chosen_ref_logp) - (rejected_logp - rejected_ref_logp)


def dpo_loss(
    chosen_logp: Array,
    rejected_logp: Array,
    chosen_ref_logp: Array,
    rejected_ref_logp: Array,
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> tuple[Array, dict[str, Array]]:
  """Direct Preference Optimization, per pair.

    l = -(1 - eps) log sigma(beta h) - eps log sigma(-beta h)

  with h the `preference_margin`; eps = `label_smoothing` (conservative DPO; 0 = the paper).
  Gradient: -beta (1 - sigma(beta h)) (grad log pi(y_w) - grad log pi(y_l)) for eps = 0.

  Paper: Rafailov et al., "Direct Preference Optimization", 2023, arXiv 2305.18290.

  Returns:
    (per-pair loss `[N]`, aux with `margin`, `chosen_reward`, `rejected_reward` (beta-scaled
    implicit rewards) and `accuracy` (share of pairs with h > 0)).
  """
  h = preference_margin(chosen_logp, rejected_logp, chosen_ref_logp, rejected_ref_logp)
  z = beta * h.astype(jnp.float32)
  loss = -(1.0 - label_smoothing) * jax.nn.log_sigmoid(z) - label_smoothing * jax.nn.log_sigmoid(-z)
  aux = {
      "margin": h,
      "chosen_reward": jax.lax.stop_gradient(beta * (chosen_logp - chosen_ref_logp)),
      "rejected_reward": jax.lax.stop_gradient(beta * (rejected_logp - rejected_ref_logp)),
      "accuracy": jnp.mean((h > 0).astype(jnp.float32)),
  }
  return loss, aux


def ipo_loss(
    chosen_logp: Array,
    rejected_logp: Array,
    chosen_ref_logp: Array,
    rejected_ref_logp: Array,
    *,
    tau: float = 0.1,
) -> tuple[Array, dict[str, Array]]:
  """Identity Preference Optimisation, per pair: l = (h - 1/(2 tau))^2.

  Paper: Azar et al., "A General Theoretical Paradigm to Understand Learning from Human
  Preferences", 2023, arXiv 2310.12036.
  """
  if isinstance(tau, (int, float)) and tau <= 0:
    raise ValueError(f"IPO tau must be > 0; got tau={tau}")
  h = preference_margin(chosen_logp, rejected_logp, chosen_ref_logp, rejected_ref_logp)
  return jnp.square(h - 1.0 / (2.0 * tau)), {"margin": h}


def regularised_reward(reward: Array, seq_logp: Array, ref_seq_logp: Array, *,
                       beta: float) -> Array:
  """R^pi_beta(x, y) = R(x, y) - beta (log pi(y|x) - log ref(y|x)) (CoPG)."""
  return reward - beta * (seq_logp - ref_seq_logp)


def copg_pair_loss(
    seq_logp: Array,
    seq_logp_other: Array,
    ref_seq_logp: Array,
    ref_seq_logp_other: Array,
    reward: Array,
    reward_other: Array,
    *,
    beta: float,
) -> Array:
  """Contrastive Policy Gradient on pairs of responses to the same prompt.

    l(y, y') = (R^pi_beta(y) - R^pi_beta(y'))^2
    grad l   = -2 beta (R^pi_beta(y) - R^pi_beta(y')) (grad log pi(y) - grad log pi(y'))

  Each response's baseline is the other's regularised reward, so the pairs may come from any
  behaviour policy (off-policy, no importance weights). The minimiser pi* ~ ref exp(R / beta)
  makes every R^pi*_beta equal, so the loss is 0 there. With R(y_w) - R(y_l) = 1/2 it is
  beta^2 times IPO with tau = beta.

  Paper: Flet-Berliac et al., "Contrastive Policy Gradient", EMNLP 2024, arXiv 2406.19185.
  The equation is reconstructed from the paper's description (no official code); see
  BUILD_NOTES.md.
  """
  d = (regularised_reward(reward, seq_logp, ref_seq_logp, beta=beta)
       - regularised_reward(reward_other, seq_logp_other, ref_seq_logp_other, beta=beta))
  return jnp.square(d)


def copg_group_loss(seq_logp: Array, ref_seq_logp: Array, rewards: Array, *,
                    beta: float) -> Array:
  """k-sample CoPG per group: l = 1/(k-1) sum_{i<j} (R^pi_beta(y_i) - R^pi_beta(y_j))^2.

  On-policy at pi = ref its gradient is -2 beta sum_i A^RLOO_i grad log pi(y_i): RLOO scaled by
  2 beta (tested). Inputs `[P, G]`; returns `[P]`.
  """
  if rewards.ndim != 2 or rewards.shape[1] < 2:
    raise ValueError(f"copg_group_loss needs [P, G] with G >= 2; got shape {rewards.shape}")
  k = rewards.shape[1]
  r = regularised_reward(rewards, seq_logp, ref_seq_logp, beta=beta)
  diff = r[:, :, None] - r[:, None, :]
  upper = jnp.triu(jnp.ones((k, k), bool), 1)
  return jnp.sum(jnp.where(upper, jnp.square(diff), 0.0), axis=(1, 2)) / (k - 1)


def group_alignment_loss(seq_logp: Array, ref_seq_logp: Array, rewards: Array, *,
                         beta: float = 1.0) -> tuple[Array, Array]:
  """DYPO's Group Alignment Loss: DPO over every (success, failure) pair inside a group.

    L_GAL = mean over pairs (s, f) with R_s > R_f of -log sigma(beta d),
    d = [log pi(y_s) - log ref(y_s)] - [log pi(y_f) - log ref(y_f)]

  All n_s * n_f pairs are used and averaged (the paper does not say how pairs are enumerated).
  A group with no such pair contributes 0.

  Paper: "Bridging SFT and RL: Dynamic Policy Optimization for Robust Reasoning", 2026,
  arXiv 2604.08926.

  Args:
    seq_logp, ref_seq_logp, rewards: `[P, G]`.
    beta: beta_GAL (paper default 1).

  Returns:
    (per-group loss `[P]`, number of pairs `[P]`).
  """
  implicit = seq_logp - ref_seq_logp
  d = implicit[:, :, None] - implicit[:, None, :]
  pair = rewards[:, :, None] > rewards[:, None, :]
  n_pairs = jnp.sum(pair.astype(jnp.float32), axis=(1, 2))
  total = jnp.sum(jnp.where(pair, -jax.nn.log_sigmoid(beta * d), 0.0), axis=(1, 2))
  return aggregation.safe_divide(total, n_pairs), n_pairs
