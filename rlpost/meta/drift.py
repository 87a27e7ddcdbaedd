"""Learned and discovered drift functions: LPO, TA-LPO and the closed-form DPO drift.

Mirror learning writes a PPO-like policy objective as

    L_pi = mean[ -(r * A) + D(r, A) ],   r = pi / pi_old,  D >= 0,  D(1, A) = 0,

and LPO meta-learns the drift D with evolution strategies.

Papers:
  * LPO / DPO: Lu, Kuba, Letcher, Metz, Schroeder de Witt, Foerster, "Discovered Policy
    Optimisation", NeurIPS 2022, arXiv 2210.05639 (drift net and the closed-form DPO drift).
  * TA-LPO: Jackson, Lu, Kirsch, Lange, Whiteson, Foerster, "Discovering Temporally-Aware
    Reinforcement Learning Algorithms", ICLR 2024, arXiv 2402.05828 (adds n/N to the drift input).

Every drift here has the `rlpost.control.ppo.DriftFn` signature
`drift(drift_params, ratio, advantages, progress) -> D` and is elementwise over `ratio`.

The ReLU-positivity construction (LPO official code): the drift net is bias-free, so every input
feature of r = 1 is 0 and so is the net's output; `D = ReLU(out - 1e-4)` is then >= 0 everywhere and
exactly 0 (with zero gradient) in a neighbourhood of r = 1. With `ppo_init=True`
`D = ReLU(D_PPO + out - 1e-4)` so that a zero output layer starts the search at PPO.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp

from rlpost.control.ppo import DriftFn, Progress, ppo_drift

Array = jax.Array
PyTree = Any

LPO_NUM_FEATURES = 8
# The drift net's output is shifted down by this much before the ReLU (LPO official code).
DRIFT_SHIFT = 1e-4
# Ratios are clamped like rlpost.core's PPO loss: |log r| <= 20.
_LOG_RATIO_CLAMP = 20.0

__all__ = [
    "LPO_NUM_FEATURES", "DRIFT_SHIFT", "lpo_features", "ta_lpo_features", "init_lpo_params",
    "lpo_drift", "ta_lpo_drift", "dpo_drift", "ppo_drift", "switch_drift",
]


def _log_ratio(ratio: Array) -> Array:
  return jnp.clip(jnp.log(jnp.maximum(ratio, 1e-30)), -_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)


def lpo_features(ratio: Array, advantages: Array) -> Array:
  """LPO drift inputs x = [log r, (log r)^2, 1 - r, (1 - r)^2] and the same times A: `[..., 8]`.

  All eight features vanish at r = 1, whatever A is.
  """
  ratio = ratio.astype(jnp.float32)
  log_r = _log_ratio(ratio)
  one_minus_r = 1.0 - jnp.exp(log_r)
  base = jnp.stack([log_r, jnp.square(log_r), one_minus_r, jnp.square(one_minus_r)], axis=-1)
  return jnp.concatenate([base, base * advantages.astype(jnp.float32)[..., None]], axis=-1)


def ta_lpo_features(ratio: Array, advantages: Array, progress: Progress) -> Array:
  """TA-LPO inputs `[x, (n/N) x]` (16 features); log N is left out as in the paper (TA-LPO is
  meta-trained on one horizon), so with n/N = 0 the second half is zero."""
  x = lpo_features(ratio, advantages)
  return jnp.concatenate([x, jnp.asarray(progress.frac, jnp.float32) * x], axis=-1)


def init_lpo_params(key: Array, *, hidden_size: int = 128, time_aware: bool = False,
                    output_scale: float = 1.0) -> dict[str, Array]:
  """Bias-free MLP `F -> hidden (tanh) -> 1`, F = 8 (LPO) or 16 (TA-LPO), LeCun-normal init.

  `output_scale` multiplies the output layer (0 gives D = D_PPO with `ppo_init`, or D = 0).
  """
  num_in = 2 * LPO_NUM_FEATURES if time_aware else LPO_NUM_FEATURES
  k_in, k_out = jax.random.split(key)
  init = jax.nn.initializers.lecun_normal()
  return {
      "w_in": init(k_in, (num_in, hidden_size), jnp.float32),
      "w_out": output_scale * init(k_out, (hidden_size, 1), jnp.float32),
  }


def _drift_from_features(params, x: Array, ratio: Array, advantages: Array, *, ppo_init: bool,
                         clip_eps: float) -> Array:
  if params["w_in"].shape[0] != x.shape[-1]:
    raise ValueError(f"drift params expect {params['w_in'].shape[0]} input features, got "
                     f"{x.shape[-1]} (TA-LPO params need ta_lpo_drift, and vice versa)")
  out = (jnp.tanh(x @ params["w_in"]) @ params["w_out"])[..., 0]
  if ppo_init:
    out = out + ppo_drift(None, ratio, advantages, None, clip_eps=clip_eps)
  return jax.nn.relu(out - DRIFT_SHIFT)


def lpo_drift(drift_params: PyTree, ratio: Array, advantages: Array,
              progress: Progress | None = None, *, ppo_init: bool = True,
              clip_eps: float = 0.2) -> Array:
  """LPO learned drift (arXiv 2210.05639): D = ReLU([D_PPO +] W2 tanh(W1 x(r, A)) - 1e-4).

  Args:
    drift_params: from `init_lpo_params(time_aware=False)` (8 inputs).
    ratio, advantages: same shape `[...]`.
    progress: unused (LPO is not temporally aware).
    ppo_init: add PPO's drift `ReLU((r - clip(r, 1 +- eps)) A)` inside the ReLU (the official
      code's `ppo_init`, the default there and here).
    clip_eps: PPO's clip for `ppo_init`.

  Returns:
    D `[...]`, >= 0, and 0 wherever r is close enough to 1.
  """
  del progress
  x = lpo_features(ratio, advantages)
  return _drift_from_features(drift_params, x, ratio, advantages, ppo_init=ppo_init,
                              clip_eps=clip_eps)


def ta_lpo_drift(drift_params: PyTree, ratio: Array, advantages: Array, progress: Progress, *,
                 ppo_init: bool = True, clip_eps: float = 0.2) -> Array:
  """Temporally-aware LPO (arXiv 2402.05828): the LPO net on `[x, (n/N) x]`.

  Same construction and arguments as `lpo_drift`; `drift_params` come from
  `init_lpo_params(time_aware=True)` (16 inputs). At n/N = 0 it equals `lpo_drift` with the first
  8 rows of `w_in`.
  """
  x = ta_lpo_features(ratio, advantages, progress)
  return _drift_from_features(drift_params, x, ratio, advantages, ppo_init=ppo_init,
                              clip_eps=clip_eps)


def dpo_drift(drift_params: PyTree, ratio: Array, advantages: Array,
              progress: Progress | None = None, *, alpha: float = 2.0,
              beta: float = 0.6) -> Array:
  """Discovered Policy Optimisation drift, the closed form distilled from LPO (arXiv 2210.05639):

      A >= 0:  D = ReLU((r - 1) A - alpha tanh((r - 1) A / alpha))
      A <  0:  D = ReLU(log(r) A - beta tanh(log(r) A / beta))

  with alpha = 2, beta = 0.6. `drift_params` and `progress` are ignored (pass None).
  """
  del drift_params, progress
  if alpha <= 0 or beta <= 0:
    raise ValueError(f"alpha and beta must be > 0; got alpha={alpha}, beta={beta}")
  ratio = ratio.astype(jnp.float32)
  adv = advantages.astype(jnp.float32)
  pos = (ratio - 1.0) * adv
  neg = _log_ratio(ratio) * adv
  d_pos = jax.nn.relu(pos - alpha * jnp.tanh(pos / alpha))
  d_neg = jax.nn.relu(neg - beta * jnp.tanh(neg / beta))
  return jnp.where(adv >= 0, d_pos, d_neg)


def switch_drift(drift_fns: Sequence[DriftFn]) -> DriftFn:
  """One `DriftFn` that picks among `drift_fns` by index: params = (index, (params_0, ...)).

  Lets one compiled PPO program evaluate several objectives: vmap over the (traced) index with
  the parameter tuple broadcast. Under vmap `lax.switch` computes every branch and selects, which
  is cheap for elementwise drifts.
  """
  drift_fns = tuple(drift_fns)

  def drift(params, ratio, advantages, progress):
    index, branch_params = params

    def branch(i):
      return lambda bp: drift_fns[i](bp[i], ratio, advantages, progress)

    return jax.lax.switch(index, [branch(i) for i in range(len(drift_fns))], branch_params)

  return drift
