"""TA-LPG: the temporally-aware Learned Policy Gradient (reverse GRU over a rollout).

Paper: Jackson, Lu, Kirsch, Lange, Whiteson, Foerster, "Discovering Temporally-Aware Reinforcement
Learning Algorithms", ICLR 2024, arXiv 2402.05828 (TA-LPG); LPG itself is Oh et al., "Discovering
Reinforcement Learning Algorithms", NeurIPS 2020, arXiv 2007.08794.

For one trajectory (rlax layout, unbatched over time; vmap over envs yourself) the LPG network
reads, at every step t,

    x_t = [r_t, d_t, pi(a_t|s_t), phi(y_t), phi(y_{t+1}) (0 if d_t), n/N, log N]

with phi a small MLP (K -> 16 relu -> 1) over the agent's K-way prediction vector y, runs a GRU
*backwards in time* (its state is reset to 0 at steps with d_t = 1, so nothing leaks across episode
ends), and outputs pi_hat_t (a scalar) and y_hat_t = softmax(W h_t) (K-way). The agent then
minimises, per step,

    l_t = log pi(a_t|s_t) * pi_hat_t + c * KL(y_t || y_hat_t),     c = 0.5 (groove's default),

with pi_hat and y_hat treated as fixed targets (they come from the meta-parameters).

Deviation / parity flag: the official code (EmptyJackson/groove, `models/lpg.py`) feeds the raw
agent step counter and the raw lifetime where the paper says n/N and log N. `progress_mode="paper"`
(default) uses n/N and log N; `progress_mode="raw"` reproduces groove; `"none"` drops both (LPG).
The GRU is the standard (Cho et al. 2014) cell with input and hidden biases.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from rlpost import core as rl_core

Array = jax.Array
PyTree = Any

PROGRESS_MODES = ("paper", "raw", "none")


def _dense_init(key, n_in, n_out):
  return {"w": jax.nn.initializers.lecun_normal()(key, (n_in, n_out), jnp.float32),
          "b": jnp.zeros((n_out,), jnp.float32)}


def _dense(p, x):
  return x @ p["w"] + p["b"]


def num_lpg_inputs(progress_mode: str) -> int:
  if progress_mode not in PROGRESS_MODES:
    raise ValueError(f"progress_mode must be one of {PROGRESS_MODES}; got {progress_mode!r}")
  return 5 if progress_mode == "none" else 7


def init_lpg_params(key: Array, *, target_width: int = 8, embedding_width: int = 16,
                    gru_width: int = 256, progress_mode: str = "paper") -> dict[str, Any]:
  """Parameters of the (TA-)LPG network; widths default to the paper's (K = 8, GRU 256)."""
  num_in = num_lpg_inputs(progress_mode)
  k = jax.random.split(key, 6)
  return {
      "embed_1": _dense_init(k[0], target_width, embedding_width),
      "embed_2": _dense_init(k[1], embedding_width, 1),
      "gru_x": _dense_init(k[2], num_in, 3 * gru_width),
      "gru_h": _dense_init(k[3], gru_width, 3 * gru_width),
      "pi_head": _dense_init(k[4], gru_width, 1),
      "y_head": _dense_init(k[5], gru_width, target_width),
  }


def progress_features(step: Array, lifetime: Array, *, progress_mode: str = "paper") -> Array:
  """[n/N, log N] (paper), [n, N] (groove's raw inputs), or [] ("none")."""
  num_lpg_inputs(progress_mode)
  step = jnp.asarray(step, jnp.float32)
  lifetime = jnp.asarray(lifetime, jnp.float32)
  if progress_mode == "paper":
    return jnp.stack([step / jnp.maximum(lifetime, 1.0), jnp.log(jnp.maximum(lifetime, 1.0))])
  if progress_mode == "raw":
    return jnp.stack([step, lifetime])
  return jnp.zeros((0,), jnp.float32)


def _gru_cell(params, h: Array, x: Array) -> Array:
  gx = _dense(params["gru_x"], x)
  gh = _dense(params["gru_h"], h)
  xr, xz, xn = jnp.split(gx, 3, axis=-1)
  hr, hz, hn = jnp.split(gh, 3, axis=-1)
  reset = jax.nn.sigmoid(xr + hr)
  update = jax.nn.sigmoid(xz + hz)
  cand = jnp.tanh(xn + reset * hn)
  return (1.0 - update) * cand + update * h


def lpg_targets(params, r_t: Array, done_t: Array, pi_t: Array, y_t: Array, y_tp1: Array,
                step: Array, lifetime: Array, *,
                progress_mode: str = "paper") -> tuple[Array, Array]:
  """LPG outputs for one trajectory by a reverse `lax.scan`.

  Args:
    params: from `init_lpg_params` with the same `progress_mode`.
    r_t: `[T]` rewards; done_t: `[T]` episode ends after step t; pi_t: `[T]` pi(a_t|s_t).
    y_t, y_tp1: `[T, K]` the agent's prediction vectors at s_t and s_{t+1}.
    step, lifetime: the agent's update index n and lifetime N (scalars).
    progress_mode: "paper" (n/N, log N), "raw" (groove parity: n, N) or "none" (plain LPG).

  Returns:
    (pi_hat `[T]`, y_hat `[T, K]`, rows on the simplex). pi_hat_t depends only on steps
    t..T-1 of the same episode.
  """
  done = done_t.astype(jnp.float32)
  phi = lambda y: _dense(params["embed_2"], jax.nn.relu(_dense(params["embed_1"], y)))[..., 0]
  phi_t = phi(y_t.astype(jnp.float32))
  phi_tp1 = jnp.where(done > 0, 0.0, phi(y_tp1.astype(jnp.float32)))
  feats = jnp.stack([r_t.astype(jnp.float32), done, pi_t.astype(jnp.float32), phi_t, phi_tp1],
                    axis=-1)
  prog = progress_features(step, lifetime, progress_mode=progress_mode)
  feats = jnp.concatenate([feats, jnp.broadcast_to(prog, (feats.shape[0], prog.shape[0]))], -1)
  gru_width = params["gru_h"]["w"].shape[0]

  def step_fn(h, xs):
    x, d = xs
    h = jnp.where(d > 0, jnp.zeros_like(h), h)  # the episode after t is not this episode
    h = _gru_cell(params, h, x)
    return h, h

  _, hs = jax.lax.scan(step_fn, jnp.zeros((gru_width,), jnp.float32), (feats, done),
                       reverse=True)
  hs = jax.nn.relu(hs)
  pi_hat = _dense(params["pi_head"], hs)[..., 0]
  y_hat = jax.nn.softmax(_dense(params["y_head"], hs), axis=-1)
  return pi_hat, y_hat


def lpg_agent_loss_per_step(logp_t: Array, pi_hat_t: Array, y_logits_t: Array, y_hat_t: Array,
                            mask: Array, *, target_coef: float = 0.5) -> tuple[Array, dict]:
  """Per-step LPG agent loss `log pi * pi_hat + c KL(y || y_hat)` (targets stop-gradiented).

  Args:
    logp_t: `[...]` log pi(a_t|s_t) (carries the policy gradient).
    pi_hat_t: `[...]` LPG policy target.
    y_logits_t: `[..., K]` the agent's prediction logits (y = softmax; carries its gradient).
    y_hat_t: `[..., K]` LPG prediction target (a distribution).
    mask: `[...]` valid steps; reduce the result with `rlpost.core.masked_mean`.
    target_coef: c, groove's `agent_target_coeff` (0.5).

  Returns:
    (per-step loss `[...]`, aux with the `policy_term` and `kl` parts).
  """
  pi_hat_t = jax.lax.stop_gradient(pi_hat_t.astype(jnp.float32))
  y_hat_t = jax.lax.stop_gradient(y_hat_t.astype(jnp.float32))
  log_y = jax.nn.log_softmax(y_logits_t.astype(jnp.float32), axis=-1)
  log_y_hat = jnp.log(jnp.maximum(y_hat_t, 1e-8))
  kl = jnp.sum(jnp.exp(log_y) * (log_y - log_y_hat), axis=-1)
  policy_term = logp_t.astype(jnp.float32) * pi_hat_t
  m = mask.astype(bool)
  loss = jnp.where(m, policy_term + target_coef * kl, 0.0)
  return loss, {"policy_term": rl_core.masked_mean(policy_term, m),
                "kl": rl_core.masked_mean(kl, m)}
