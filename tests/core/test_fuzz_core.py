"""Hypothesis fuzz: no NaN/Inf in value or gradient for any core loss/estimator on degenerate input.

Degenerate batches: all-equal rewards, fully-masked rows, an all-masked batch, +-1e4 log-ratios,
and groups of two. Shapes come from a small fixed set so each case compiles a handful of times.
Other test modules extend coverage by adding their own `FUZZ_CASES`-style lists.
"""
import functools

import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlpost import core
from rlpost import objectives as O

T = 5
SHAPES = [(2, 2), (2, 4)]  # (P, G); G = 2 is the smallest group
EXAMPLES = 250


def make_batch(p, g, reward_kind, mask_kind, ratio_kind, seed):
  rng = np.random.default_rng(seed)
  b = p * g
  if reward_kind == "equal":
    rewards = np.full((p, g), rng.normal(), np.float32)
  elif reward_kind == "binary":
    rewards = rng.integers(0, 2, size=(p, g)).astype(np.float32)
  else:
    rewards = (rng.normal(size=(p, g)) * 10.0 ** rng.integers(-3, 4)).astype(np.float32)
  if mask_kind == "full":
    mask = np.ones((b, T), np.float32)
  elif mask_kind == "random":
    mask = (rng.random((b, T)) < 0.6).astype(np.float32)
  elif mask_kind == "rows_empty":
    mask = np.ones((b, T), np.float32)
    mask[rng.random(b) < 0.5] = 0.0
  else:
    mask = np.zeros((b, T), np.float32)
  old = (rng.normal(size=(b, T)) - 3.0).astype(np.float32)
  if ratio_kind == "small":
    delta = 0.1 * rng.normal(size=(b, T))
  elif ratio_kind == "huge_pos":
    delta = np.full((b, T), 1e4)
  elif ratio_kind == "huge_neg":
    delta = np.full((b, T), -1e4)
  else:
    delta = rng.choice([-1e4, 1e4, 0.0], size=(b, T))
  logp = (old + delta).astype(np.float32)
  ref = (old + 1e4 * rng.choice([-1.0, 0.0, 1.0], size=(b, T))).astype(np.float32)
  values = rng.normal(size=(b, T)).astype(np.float32)
  return {k: jnp.asarray(v) for k, v in dict(rewards=rewards, mask=mask, old_logp=old, logp=logp,
                                              ref_logp=ref, values=values).items()}


def _preset_case(name):
  obj = O.objective(name, loss_scale_factor=float(T)) if name == "dr_grpo" else O.objective(name)

  def f(logp, b):
    adv, _ = obj.compute_advantages(b["rewards"], b["mask"], old_logp=b["old_logp"],
                                    ref_logp=b["ref_logp"], values=b["values"])
    return obj.loss({**b, "logp": logp, "advantages": adv})[0]
  return f


def _agg_case(mode):
  return lambda logp, b: core.aggregate_loss(logp * b["logp"], b["mask"], mode)


def _kl_case(est):
  return lambda logp, b: core.aggregate_loss(
      core.kl_penalty(logp, b["ref_logp"], estimator=est), b["mask"], "token_mean")


def _surrogate_case(fn):
  def f(logp, b):
    adv = core.broadcast_to_tokens(core.grpo_advantages(b["rewards"]), b["mask"])
    return fn(logp, b["old_logp"], adv, b["mask"])[0]
  return f


def _tis_case(logp, b):
  w = core.truncated_is_weights(b["old_logp"], logp, b["mask"], cap=2.0)
  return core.aggregate_loss(w * logp, b["mask"], "token_mean")


def _whiten_case(logp, b):
  adv = core.reinforce_pp_baseline_advantages(b["rewards"], b["mask"])
  return core.aggregate_loss(adv * logp, b["mask"], "token_mean")


def _gae_case(logp, b):
  adv, ret = jax.vmap(lambda r, v: core.gae_advantages(r, 0.99 * jnp.ones_like(r), v,
                                                       lambda_=0.95))(
      b["values"], jnp.concatenate([b["values"], jnp.zeros_like(b["values"][:, :1])], 1))
  return core.aggregate_loss(adv * logp + ret, b["mask"], "token_mean")


FUZZ_CASES = (
    [(f"preset/{n}", _preset_case(n)) for n in
     ["ppo", "grpo", "dr_grpo", "dapo", "gspo", "cispo", "rloo", "reinforce_pp"]]
    + [(f"agg/{m}", _agg_case(m)) for m in core.AGG_MODES]
    + [(f"kl/{e}", _kl_case(e)) for e in core.KL_ESTIMATORS]
    + [("ppo_dual_clip", _surrogate_case(functools.partial(
        core.ppo_clip_loss, clip_low=0.2, clip_high=0.28, dual_clip=3.0))),
       ("gspo", _surrogate_case(core.gspo_loss)),
       ("cispo", _surrogate_case(core.cispo_loss)),
       ("pg", _surrogate_case(lambda lp, old, a, m: core.pg_loss(lp, a, m))),
       ("tis", _tis_case), ("reinforce_pp_whiten", _whiten_case), ("gae", _gae_case)]
)


@pytest.mark.parametrize("name,fn", FUZZ_CASES, ids=[c[0] for c in FUZZ_CASES])
def test_no_nan_on_degenerate_batches(name, fn):
  value_and_grad = jax.jit(jax.value_and_grad(fn))

  @hypothesis.settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                       suppress_health_check=list(hypothesis.HealthCheck))
  @hypothesis.given(
      shape=st.sampled_from(SHAPES),
      reward_kind=st.sampled_from(["equal", "binary", "normal"]),
      mask_kind=st.sampled_from(["full", "random", "rows_empty", "all_empty"]),
      ratio_kind=st.sampled_from(["small", "huge_pos", "huge_neg", "mixed"]),
      seed=st.integers(0, 2**31 - 1),
  )
  def check(shape, reward_kind, mask_kind, ratio_kind, seed):
    b = make_batch(*shape, reward_kind, mask_kind, ratio_kind, seed)
    val, grad = value_and_grad(b["logp"], b)
    assert np.isfinite(float(val)), f"{name}: non-finite value"
    assert np.all(np.isfinite(np.asarray(grad))), f"{name}: non-finite gradient"
    if mask_kind == "all_empty" and not name.startswith("kl/") and name != "gae":
      assert float(val) == 0.0, f"{name}: all-masked batch must aggregate to 0"

  check()
