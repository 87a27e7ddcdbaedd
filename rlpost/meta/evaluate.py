"""Generalisation evaluation of (discovered) objectives: many objectives x lifetimes x seeds.

The table of Jackson et al. (arXiv 2402.05828) compares learned objectives and PPO across training
horizons and on environments not seen in meta-training. All objectives for one environment run in
one compiled PPO program: they are joined with `switch_drift` and the grid (objective, lifetime,
seed) is flattened and vmapped. PPO enters as `ppo_drift`, the PPO-clip objective written as a
drift, which equals `rlpost.core.ppo_clip_loss_per_token` (tested in tests/meta).
"""

from __future__ import annotations

import itertools
import warnings
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rlpost.control import ppo
from rlpost.meta import drift as drift_lib

PyTree = Any


def evaluate_objectives(
    key: jax.Array,
    ppo_config: ppo.PPOConfig,
    objectives: Mapping[str, tuple[ppo.DriftFn, PyTree]],
    lifetimes: Sequence[int],
    *,
    num_seeds: int = 4,
    fast_compile: bool = False,
) -> dict[str, Any]:
  """Trains `num_seeds` PPO agents per (objective, lifetime) and reports final returns.

  Args:
    key: PRNG key; the same agent seeds are used for every objective (paired comparison).
    ppo_config: inner-loop config; its lifetime is replaced by `max(lifetimes)` (scan length).
    objectives: name -> (drift_fn, drift_params), e.g. `{"ppo": (ppo_drift, None)}`.
    lifetimes: lifetimes N (updates) to evaluate.
    num_seeds: agents per cell.
    fast_compile: compile with `ppo.FAST_COMPILE_OPTIONS` (smoke runs).

  Returns:
    {"table": {name: {str(N): {"mean", "stderr", "returns"}}}, "curves": {name: {str(N):
    mean episode-return curve over seeds, length max(lifetimes)}}}.
  """
  if num_seeds < 1:
    raise ValueError(f"num_seeds must be >= 1; got {num_seeds}")
  if not lifetimes or min(lifetimes) < 1:
    raise ValueError(f"lifetimes must be a non-empty list of ints >= 1; got {lifetimes}")
  names = list(objectives)
  config = ppo_config.with_lifetime(max(lifetimes))
  fn = drift_lib.switch_drift([objectives[n][0] for n in names])
  branch_params = tuple(objectives[n][1] for n in names)
  train = ppo.make_train(config, drift_fn=fn)
  seed_keys = jax.random.split(key, num_seeds)
  grid = list(itertools.product(range(len(names)), range(len(lifetimes)), range(num_seeds)))
  idx = jnp.asarray([g[0] for g in grid], jnp.int32)
  lifetime = jnp.asarray([lifetimes[g[1]] for g in grid], jnp.int32)
  keys = seed_keys[jnp.asarray([g[2] for g in grid])]

  def run(k, i, n):
    out = train(k, (i, branch_params), n)
    return out["final_return"], out["metrics"]["episode_return"]

  options = ppo.FAST_COMPILE_OPTIONS if fast_compile else None
  final, curves = jax.jit(jax.vmap(run), compiler_options=options)(keys, idx, lifetime)
  final = np.asarray(final).reshape(len(names), len(lifetimes), num_seeds)
  curves = np.asarray(curves).reshape(len(names), len(lifetimes), num_seeds, -1)
  table, curve_out = {}, {}
  for i, name in enumerate(names):
    table[name], curve_out[name] = {}, {}
    for j, n in enumerate(lifetimes):
      r = final[i, j]
      table[name][str(n)] = {
          "mean": float(np.mean(r)),
          "stderr": float(np.std(r, ddof=1) / np.sqrt(len(r))) if len(r) > 1 else 0.0,
          "returns": [float(x) for x in r],
      }
      with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN steps: no episode ended
        c = np.nanmean(curves[i, j], axis=0)[:n]
      curve_out[name][str(n)] = [float(x) for x in c]
  return {"table": table, "curves": curve_out}
