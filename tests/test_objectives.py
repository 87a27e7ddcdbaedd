"""Tests for the objective registry (rlpost.objectives)."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlpost import core
from rlpost import objectives as O

BASE_PRESETS = ["ppo", "grpo", "dr_grpo", "dapo", "gspo", "cispo", "rloo", "reinforce_pp"]


def _batch(p=3, g=4, t=6, seed=0):
  rng = np.random.default_rng(seed)
  b = p * g
  old = jnp.asarray(rng.normal(size=(b, t)) - 2, jnp.float32)
  mask = jnp.asarray(rng.random((b, t)) < 0.8, jnp.float32)
  return {
      "rewards": jnp.asarray(rng.integers(0, 2, size=(p, g)), jnp.float32),
      "logp": old + 0.1 * jnp.asarray(rng.normal(size=(b, t)), jnp.float32),
      "old_logp": old,
      "ref_logp": old + 0.05,
      "values": jnp.asarray(rng.normal(size=(b, t)), jnp.float32),
      "mask": mask,
  }


def test_all_base_presets_exist():
  assert set(BASE_PRESETS) <= set(O.list_objectives())


@pytest.mark.parametrize("name", BASE_PRESETS)
def test_presets_pin_every_part_default(name):
  cfg = O.objective(name).config
  assert set(O.SURROGATES[cfg.surrogate].defaults) <= set(cfg.surrogate_kwargs)
  assert set(O.ADVANTAGES[cfg.advantage].defaults) <= set(cfg.advantage_kwargs)
  assert cfg.paper


def test_paper_defaults():
  assert O.objective("dapo").config.surrogate_kwargs["clip_high"] == 0.28
  assert O.objective("dapo").config.selectors == ("dynamic_sampling",)
  assert O.objective("dapo").config.kl_placement is None
  assert O.objective("dr_grpo").config.advantage_kwargs["scale_by_std"] is False
  assert O.objective("dr_grpo").config.agg_mode == "seq_mean_token_sum_norm"
  assert O.objective("gspo").config.surrogate_kwargs == {"clip_low": 3e-4, "clip_high": 4e-4}
  assert O.objective("grpo").config.kl_coef == 0.04
  assert O.objective("ppo").config.surrogate_kwargs["dual_clip"] == 3.0


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("name", BASE_PRESETS)
def test_loss_runs_finite_with_grad(name, jit):
  obj = O.objective(name, loss_scale_factor=6.0) if name == "dr_grpo" else O.objective(name)
  b = _batch()
  adv, _ = obj.compute_advantages(b["rewards"], b["mask"], old_logp=b["old_logp"],
                                  ref_logp=b["ref_logp"], values=b["values"])
  batch = {**b, "advantages": adv}

  def f(logp):
    return obj.loss({**batch, "logp": logp})

  f = jax.jit(f) if jit else f
  (val, metrics) = f(batch["logp"])
  grad = jax.grad(lambda lp: obj.loss({**batch, "logp": lp})[0])(batch["logp"])
  assert np.isfinite(val) and np.all(np.isfinite(grad))
  assert all(np.isfinite(v) for v in metrics.values())


def test_grpo_preset_equals_hand_composition():
  obj = O.objective("grpo")
  b = _batch()
  adv, _ = obj.compute_advantages(b["rewards"], b["mask"])
  expected_adv = core.broadcast_to_tokens(core.grpo_advantages(b["rewards"]), b["mask"])
  np.testing.assert_allclose(adv, expected_adv)
  val, _ = obj.loss({**b, "advantages": adv})
  pol = core.aggregate_loss(
      core.ppo_clip_loss_per_token(b["logp"], b["old_logp"], adv, b["mask"])[0], b["mask"],
      "seq_mean_token_mean")
  kl = core.aggregate_loss(
      jnp.where(b["mask"] > 0, core.kl_penalty(b["logp"], b["ref_logp"], estimator="k3"), 0),
      b["mask"], "seq_mean_token_mean")
  np.testing.assert_allclose(val, pol + 0.04 * kl, rtol=1e-4, atol=1e-7)


def test_micro_batched_loss_parts_match_full_batch():
  obj = O.objective("dapo")
  b = _batch(p=4, g=2)
  adv, _ = obj.compute_advantages(b["rewards"], b["mask"])
  batch = {k: v for k, v in {**b, "advantages": adv}.items() if k != "rewards"}
  full, _ = obj.loss(batch)
  parts = None
  for i in range(0, 8, 2):
    part, _ = obj.loss_parts({k: v[i:i + 2] for k, v in batch.items()}, global_batch_size=8)
    parts = part if parts is None else parts + part
  np.testing.assert_allclose(parts.value, full, rtol=1e-6)


def test_overrides_route_to_parts_and_validate():
  obj = O.objective("dapo", clip_high=0.3, agg_mode="seq_mean_token_mean")
  assert obj.config.surrogate_kwargs["clip_high"] == 0.3
  assert obj.config.agg_mode == "seq_mean_token_mean"
  swapped = O.objective("grpo", surrogate="cispo")
  assert swapped.config.surrogate_kwargs == {"is_clip_low": None, "is_clip_high": 4.0}


@pytest.mark.parametrize("bad,match", [
    (dict(name="grpoo"), "grpo"),
    (dict(name="grpo", clip_hihg=0.3), "clip_high"),
    (dict(name="grpo", clip_low=-0.1), "clip_low"),
    (dict(name="grpo", clip_low=1.5), "clip_low"),
    (dict(name="grpo", clip_high=-0.2), "clip_high"),
    (dict(name="ppo", dual_clip=0.9), "dual_clip"),
    (dict(name="grpo", agg_mode="mean"), "token_mean"),
    (dict(name="grpo", kl_estimator="low_var_kl"), "k3"),
    (dict(name="grpo", kl_placement="reward"), "token-level"),
    (dict(name="grpo", kl_coef=-1.0), "kl_coef"),
    (dict(name="grpo", selectors=("dynamic",)), "dynamic_sampling"),
    (dict(name="grpo", advantage="gea"), "gae"),
    (dict(name="dr_grpo", loss_scale_factor=0.0), "loss_scale_factor"),
    (dict(name="grpo", tis_cap=-1.0), "tis_cap"),
])
def test_bad_configs_name_the_field(bad, match):
  bad = dict(bad)
  name = bad.pop("name")
  with pytest.raises(ValueError, match=match):
    O.objective(name, **bad)


def test_group_size_below_minimum_is_rejected():
  obj = O.objective("grpo")
  with pytest.raises(ValueError, match="min_group_size"):
    obj.compute_advantages(jnp.ones((4, 1)), jnp.ones((4, 3)))


def test_dynamic_sampling_selector_and_overlong_shaping():
  obj = O.objective("dapo")
  r = jnp.array([[1.0, 1.0], [0.0, 1.0]])
  np.testing.assert_array_equal(obj.select_groups(r), [False, True])
  # DAPO's buffer is 4096 tokens: no penalty up to max_len - 4096, -1 at max_len.
  shaped = obj.shape_rewards(r, jnp.array([10, 8192, 0, 6144]), max_len=8192)
  np.testing.assert_allclose(shaped, [[1.0, 0.0], [0.0, 0.5]])
  with pytest.raises(ValueError, match="overlong_buffer"):
    obj.shape_rewards(r, jnp.array([1, 2, 3, 4]), max_len=16)
  assert np.all(np.asarray(O.objective("grpo").select_groups(r)))


def test_kl_in_reward_for_token_level_estimator():
  obj = O.objective("ppo")
  b = _batch()
  a1, _ = obj.compute_advantages(b["rewards"], b["mask"], old_logp=b["old_logp"],
                                 ref_logp=b["ref_logp"], values=b["values"])
  a0, _ = O.objective("ppo", kl_coef=0.0).compute_advantages(
      b["rewards"], b["mask"], old_logp=b["old_logp"], ref_logp=b["ref_logp"], values=b["values"])
  assert not np.allclose(a1, a0)


def test_tis_weights_scale_the_loss():
  obj = O.objective("dapo", tis_cap=2.0)
  b = _batch()
  adv, _ = obj.compute_advantages(b["rewards"], b["mask"])
  batch = {**b, "advantages": adv, "sampler_logp": b["old_logp"]}
  v_same, _ = obj.loss(batch)
  v_plain, _ = O.objective("dapo").loss(batch)
  np.testing.assert_allclose(v_same, v_plain, rtol=1e-6)
  with pytest.raises(ValueError, match="sampler_logp"):
    obj.loss({k: v for k, v in batch.items() if k != "sampler_logp"})


def test_adding_a_paper_is_one_function_and_one_entry():
  # A new surrogate registered from outside the module works with no trainer change.
  def halved_pg(logp, old_logp, adv, mask, *, scale):
    del old_logp
    return core.pg_loss_per_token(logp, scale * adv, mask)

  O.register_surrogate("_test_scaled_pg", O.SurrogateSpec(halved_pg, defaults={"scale": 0.5}))
  try:
    O.register_preset(dataclasses.replace(O.PRESETS["rloo"], name="_test_preset",
                                          surrogate="_test_scaled_pg", surrogate_kwargs={}))
    obj = O.objective("_test_preset", scale=0.25)
    b = _batch()
    adv, _ = obj.compute_advantages(b["rewards"], b["mask"])
    val, _ = obj.loss({**b, "advantages": adv})
    ref, _ = core.pg_loss(b["logp"], 0.25 * adv, b["mask"])
    np.testing.assert_allclose(val, ref, rtol=1e-6)
  finally:
    O.PRESETS.pop("_test_preset", None)
    O.SURROGATES.pop("_test_scaled_pg", None)
