"""Curvature of the policy update on the last layer: CAPO's per-token metrics and mask.

CAPO models one optimizer step on the LM head only (psi = vec(W), logits z = W h) and predicts,
per token, how much the objective and the policy would move. Everything is closed form in the
last hidden state h `[d]`, the softmax pi `[V]` and the sampled token a:

  g        = A (e_a - pi) h^T                      per-token gradient of A log pi(a) w.r.t. W
  g~       = g (SGD) or the prospective Adam step  m^ / (sqrt(v^) + eps) with
             m' = b1 mu + (1 - b1) g,  v' = b2 nu + (1 - b2) g^2,  bias correction at count + 1
  u        = g~ h              predicted logit change per unit learning rate   `[V]`
  v        = e_a - pi,          F = diag(pi) - pi pi^T   (u^T F u = u.(pi*u) - (pi.u)^2, O(V))
  hess     = A [(v.u)^2 - u^T F u]             (g~^T grad^2 J g~, score outer product included)
  m_H      = lr <g, g~> + 0.5 lr^2 hess          second-order change of the token's objective
  m_F      = 0.5 lr^2 (v.u)^2                    empirical-Fisher change of the policy

Paper: "Curvature-Aware Policy Optimization" (CAPO), 2025, arXiv 2510.00819;
official luckeciano/stable-pg-llm `GRPOEntropyTrainer` (`_compute_and_log_hessian_coefficient`,
`_compute_and_log_fisher_curvature`, `SparseAdamModel`).

Deviations / readings:
  * pi is the full softmax (the official code can restrict it to a top-k support; here k = V).
  * Adam moments: pass the LM-head rows of the real optimizer state (`mu`, `nu` `[V, d]`, count);
    the official code keeps a separate per-token-id moment store. With `adam_mu=None` the model is
    SGD. The Adam form materialises `[..., V, d]` per token: use it on small heads or chunk it.
"""

import jax
import jax.numpy as jnp

Array = jax.Array


def capo_token_metrics(
    hidden: Array,
    logits: Array,
    actions: Array,
    advantages: Array,
    *,
    lr: float | Array,
    adam_mu: Array | None = None,
    adam_nu: Array | None = None,
    adam_count: int | Array = 0,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    top_k: int | None = None,
) -> dict[str, Array]:
  """Per-token closed-form curvature metrics of CAPO (see module docstring for the equations).

  Args:
    hidden: `[..., d]` final hidden states feeding the LM head.
    logits: `[..., V]` logits `W h` (current policy).
    actions: `[...]` int sampled tokens.
    advantages: `[...]` token advantages.
    lr: the optimizer's current learning rate.
    adam_mu, adam_nu: `[V, d]` Adam first/second moments of the LM head, or None for SGD.
    adam_count: Adam's step count t (bias correction uses t + 1).
    b1, b2, eps: Adam hyperparameters.
    top_k: restrict pi to the top-k logits of each token (renormalised; the official code's
      support size, a hidden hyperparameter). None = the full vocabulary (exact). The sampled
      token keeps its one-hot e_a even when it falls outside the support (then pi_a = 0).

  Returns:
    dict with `m_hessian`, `m_fisher`, `hess`, `grad_dot` (<g, g~>), `v_dot_u`, all `[...]`.
  """
  h = jax.lax.stop_gradient(hidden.astype(jnp.float32))
  z = jax.lax.stop_gradient(logits.astype(jnp.float32))
  a = jax.lax.stop_gradient(advantages.astype(jnp.float32))
  if top_k is not None:
    if not 1 <= top_k <= z.shape[-1]:
      raise ValueError(f"capo top_k must be in [1, {z.shape[-1]}]; got {top_k}")
    kth = jax.lax.top_k(z, top_k)[0][..., -1:]
    z = jnp.where(z >= kth, z, -jnp.inf)
  pi = jax.nn.softmax(z, axis=-1)
  v = jax.nn.one_hot(actions, z.shape[-1], dtype=jnp.float32) - pi
  hh = jnp.sum(jnp.square(h), axis=-1)
  if adam_mu is None:
    u = (a * hh)[..., None] * v
    grad_dot = jnp.square(a) * jnp.sum(jnp.square(v), axis=-1) * hh
  else:
    if adam_nu is None:
      raise ValueError("capo_token_metrics: adam_mu given without adam_nu")
    g = (a[..., None] * v)[..., :, None] * h[..., None, :]  # [..., V, d]
    t = jnp.asarray(adam_count, jnp.float32) + 1.0
    m_hat = (b1 * adam_mu + (1.0 - b1) * g) / (1.0 - b1 ** t)
    v_hat = (b2 * adam_nu + (1.0 - b2) * jnp.square(g)) / (1.0 - b2 ** t)
    g_tilde = m_hat / (jnp.sqrt(v_hat) + eps)
    u = jnp.einsum("...vd,...d->...v", g_tilde, h)
    grad_dot = jnp.sum(g * g_tilde, axis=(-2, -1))
  vu = jnp.sum(v * u, axis=-1)
  ufu = jnp.sum(pi * jnp.square(u), axis=-1) - jnp.square(jnp.sum(pi * u, axis=-1))
  hess = a * (jnp.square(vu) - ufu)
  return {"m_hessian": lr * grad_dot + 0.5 * lr ** 2 * hess,
          "m_fisher": 0.5 * lr ** 2 * jnp.square(vu),
          "hess": hess, "grad_dot": grad_dot, "v_dot_u": vu}


def capo_mask(
    m_hessian: Array,
    m_fisher: Array,
    mask: Array | None = None,
    *,
    tau_fisher: float | None = 1e-4,
    tau_hessian: float | None = 0.01,
    symmetric: bool = True,
) -> Array:
  """CAPO's token keep-mask from the predicted objective and policy shifts.

    keep = (m_F < tau_F) & (|m_H| < tau_H)           symmetric (paper default)
    keep = (m_F < tau_F) & (0 <= m_H < tau_H)        one-sided

  A threshold of None disables that test (the official config uses 0.0 for "off"; map 0 -> None
  when importing it). Defaults are CAPO's (tau_F 1e-4, tau_H 0.01); Dr.CAPO uses 1e-3 / 5e-4.
  Non-finite metrics are rejected. Returns a bool mask (multiplied by `mask` when given).
  """
  keep = jnp.ones(jnp.shape(m_hessian), bool)
  if tau_fisher is not None:
    keep = keep & (m_fisher < tau_fisher)
  if tau_hessian is not None:
    if symmetric:
      keep = keep & (jnp.abs(m_hessian) < tau_hessian)
    else:
      keep = keep & (m_hessian >= 0) & (m_hessian < tau_hessian)
  if mask is not None:
    keep = keep & mask.astype(bool)
  return keep


def capo_rejection_fraction(keep: Array, mask: Array) -> Array:
  """Fraction of valid tokens CAPO rejected (the paper reports <= 8%, then < 2%)."""
  m = mask.astype(bool)
  n = jnp.sum(m.astype(jnp.float32))
  rejected = jnp.sum((m & ~keep.astype(bool)).astype(jnp.float32))
  return jnp.where(n > 0, rejected / jnp.maximum(n, 1.0), 0.0)
