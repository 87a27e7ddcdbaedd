"""Hypothesis fuzz for the seed objectives of issue 5 (same style as test_fuzz_core.py).

Every preset and loss added for DCPO, BNPO, Clip-Cov/KL-Cov, Distribution-centric PO, ADORA, EMPG,
AEPO, OBLR-PO and CAPO must give a finite value and gradient on degenerate batches: all-equal
rewards, fully-masked rows, an all-masked batch, +-1e4 log-ratios, and groups of two. One fixed
shape per case, so each case compiles once outside the hypothesis loop.
"""
import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlpost import core
from rlpost import objectives as O

P, G, T = 3, 2, 4  # G = 2 is the smallest group
B = P * G
EXAMPLES = 200


def make_batch(reward_kind, mask_kind, ratio_kind, seed):
  rng = np.random.default_rng(seed)
  if reward_kind == "equal":
    rewards = np.full((P, G), rng.normal(), np.float32)
  elif reward_kind == "binary":
    rewards = rng.integers(0, 2, size=(P, G)).astype(np.float32)
  else:
    rewards = (rng.normal(size=(P, G)) * 10.0 ** rng.integers(-3, 4)).astype(np.float32)
  mask = np.ones((B, T), np.float32)
  if mask_kind == "random":
    mask = (rng.random((B, T)) < 0.6).astype(np.float32)
  elif mask_kind == "rows_empty":
    mask[rng.random(B) < 0.5] = 0.0
  elif mask_kind == "all_empty":
    mask[:] = 0.0
  old = (rng.normal(size=(B, T)) - 3.0).astype(np.float32)
  delta = {"small": 0.1 * rng.normal(size=(B, T)), "huge_pos": np.full((B, T), 1e4),
           "huge_neg": np.full((B, T), -1e4),
           "mixed": rng.choice([-1e4, 1e4, 0.0], size=(B, T))}[ratio_kind]
  logp = (old + delta).astype(np.float32)
  entropy = np.abs(rng.normal(size=(B, T)) * 10.0 ** rng.integers(-3, 3)).astype(np.float32)
  if rng.random() < 0.3:
    entropy[:] = entropy.flat[0]  # constant entropy
  arrays = dict(
      rewards=rewards, mask=mask, old_logp=old, logp=logp, entropy=entropy,
      old_logp_tempered=(old + rng.choice([-1e4, 0.0, 0.3], size=(B, T))).astype(np.float32),
      segment_ids=np.minimum(np.arange(T)[None, :] // 2, 1).repeat(B, 0).astype(np.int32),
      oblr_weights=(rng.random(B) * rng.integers(0, 2, B)).astype(np.float32),
      capo_m_hessian=(rng.normal(size=(B, T)) * 1e-2).astype(np.float32),
      capo_m_fisher=(rng.random((B, T)) * 2e-4).astype(np.float32))
  arrays["ref_logp"] = (old + 1e4 * rng.choice([-1.0, 0.0, 1.0], size=(B, T))).astype(np.float32)
  arrays["rng"] = np.array([0, seed % 1000], np.uint32)  # a raw PRNG key; numpy avoids dispatch
  return arrays


_ADV_EXTRA = ("entropy", "segment_ids", "old_logp_tempered", "oblr_weights")


def _preset_case(name):
  obj = O.objective(name, loss_scale_factor=float(T)) if name == "dr_capo" else O.objective(name)

  def f(logp, b):
    state = obj.init_state(num_prompts=P) if name.startswith("dcpo") else obj.init_state()
    adv, _ = obj.compute_advantages(b["rewards"], b["mask"], state=state, prompt_ids=jnp.arange(P),
                                    old_logp=b["old_logp"],
                                    extra={k: b[k] for k in _ADV_EXTRA})
    return obj.loss({**b, "logp": logp, "advantages": adv})[0]
  return f


def _grpo_adv(b):
  return core.broadcast_to_tokens(core.grpo_advantages(b["rewards"]), b["mask"])


def _capo_metrics_case(logp, b):
  """CAPO metrics from hidden states built out of the batch, then the masked GRPO-style loss."""
  hidden = jnp.stack([b["entropy"], b["old_logp"]], -1)
  logits = jnp.concatenate([hidden, -hidden, jnp.clip(logp, -50, 50)[..., None]], -1)
  adv = _grpo_adv(b)
  met = core.capo_token_metrics(hidden, logits, jnp.zeros((B, T), jnp.int32), adv, lr=1e-2)
  keep = core.capo_mask(met["m_hessian"], met["m_fisher"], b["mask"])
  return core.ppo_clip_loss(logp, b["old_logp"], adv, keep)[0] + 0.0 * jnp.sum(
      jnp.where(b["mask"] > 0, met["m_hessian"] + met["m_fisher"], 0.0))


def _direct_functions_case(logp, b):
  """BNPO decomposition, ADORA's VLM table and AEPO's entropy advantage in one compiled case."""
  bnpo = core.bnpo_decomposed_advantages(jnp.stack([b["rewards"], -b["rewards"]]),
                                         min_value=-1e4, max_value=1e4)
  adora = core.adora_advantages(b["rewards"], jnp.sum(b["mask"], -1), correct_score=0.5,
                                length_threshold=3.0, variant="vlm")
  adv = core.broadcast_to_tokens(bnpo + adora, b["mask"])
  adv = adv + core.aepo_entropy_advantages(_grpo_adv(b), b["entropy"], b["mask"])
  return core.aggregate_loss(adv * logp, b["mask"], "token_mean")


# dcpo_script and kl_cov_verl share their code paths with dcpo and kl_cov (only defaults differ).
PRESETS = ["dcpo", "bnpo", "clip_cov", "kl_cov", "dist_po", "adora", "empg", "aepo", "oblr_po",
           "capo", "dr_capo"]

FUZZ_CASES = ([(f"preset/{n}", _preset_case(n)) for n in PRESETS]
              + [("capo_metrics", _capo_metrics_case),
                 ("direct_functions", _direct_functions_case)])


@pytest.mark.parametrize("name,fn", FUZZ_CASES, ids=[c[0] for c in FUZZ_CASES])
def test_seed_no_nan_on_degenerate_batches(name, fn):
  value_and_grad = jax.jit(jax.value_and_grad(fn))

  @hypothesis.settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                       suppress_health_check=list(hypothesis.HealthCheck))
  @hypothesis.given(
      reward_kind=st.sampled_from(["equal", "binary", "normal"]),
      mask_kind=st.sampled_from(["full", "random", "rows_empty", "all_empty"]),
      ratio_kind=st.sampled_from(["small", "huge_pos", "huge_neg", "mixed"]),
      seed=st.integers(0, 2**31 - 1),
  )
  def check(reward_kind, mask_kind, ratio_kind, seed):
    b = make_batch(reward_kind, mask_kind, ratio_kind, seed)
    val, grad = value_and_grad(b["logp"], b)
    assert np.isfinite(float(val)), f"{name}: non-finite value"
    assert np.all(np.isfinite(np.asarray(grad))), f"{name}: non-finite gradient"
    if mask_kind == "all_empty":
      assert float(val) == 0.0, f"{name}: all-masked batch must aggregate to 0"

  check()
