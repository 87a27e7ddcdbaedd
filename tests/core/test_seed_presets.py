"""Registry presets of the seed objectives (issue 5): defaults pinned, state threading, errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlpost import core
from rlpost import objectives as O

SEED_PRESETS = ["dcpo", "bnpo", "clip_cov", "kl_cov", "dist_po", "adora", "empg", "aepo",
                "oblr_po", "capo", "dr_capo"]


def test_all_presets_registered_with_paper_and_pinned_defaults():
  for name in SEED_PRESETS:
    cfg = O.PRESETS[name]
    assert cfg.paper and "arXiv" in cfg.paper
    assert set(cfg.surrogate_kwargs) == set(O.SURROGATES[cfg.surrogate].defaults)
  assert O.PRESETS["dcpo"].surrogate_kwargs["eps_low"] == 0.16
  assert O.PRESETS["kl_cov"].surrogate_kwargs == {"k_ratio": 2e-3, "kl_coef": 1.0}
  assert O.PRESETS["dr_capo"].selector_kwargs["capo"]["tau_hessian"] == 5e-4
  assert O.objective("kl_cov", k_ratio=0.01).config.surrogate_kwargs["k_ratio"] == 0.01


def test_dcpo_state_threads_through_objective():
  obj = O.objective("dcpo")
  state = obj.init_state(num_prompts=5)
  mask = jnp.ones((4, 3))
  r = jnp.array([[1.0, 0.0], [1.0, 1.0]])
  adv, state = obj.compute_advantages(r, mask, state=state, prompt_ids=jnp.array([4, 1]))
  np.testing.assert_array_equal(state["visits"], [0, 1, 0, 0, 1])
  assert bool(jnp.all(jnp.isfinite(adv)))
  with pytest.raises(ValueError, match="stateful"):
    obj.compute_advantages(r, mask)


def test_dist_po_state_records_sampled_token_entropy():
  obj = O.objective("dist_po")
  state = obj.init_state()
  assert float(state["entropy"]) == 0.0
  old = jnp.full((4, 3), -0.25)
  mask = jnp.ones((4, 3))
  t = core.dist_po_temperature(state["entropy"])
  assert float(t) == pytest.approx(1.2)
  adv, state = obj.compute_advantages(jnp.array([[1.0, 0.0], [0.0, 0.0]]), mask, state=state,
                                      old_logp=old, extra={"old_logp_tempered": old / 1.2})
  np.testing.assert_allclose(state["entropy"], 0.25)
  assert bool(jnp.all(jnp.isfinite(adv)))


def test_missing_batch_entries_raise_clear_errors():
  mask = jnp.ones((4, 3))
  r = jnp.array([[1.0, 0.0], [1.0, 1.0]])
  with pytest.raises(ValueError, match="entropy"):
    O.objective("empg").compute_advantages(r, mask)
  with pytest.raises(ValueError, match="oblr_weights"):
    O.objective("oblr_po").compute_advantages(r, mask)
  batch = {"logp": jnp.zeros((4, 3)), "old_logp": jnp.zeros((4, 3)), "advantages": mask,
           "mask": mask}
  with pytest.raises(ValueError, match="rng"):
    O.objective("clip_cov").loss(batch)
  with pytest.raises(ValueError, match="capo_m_hessian"):
    O.objective("capo").loss(batch)
  loss, metrics = O.objective("clip_cov").loss({**batch, "rng": jax.random.PRNGKey(0)})
  assert bool(jnp.isfinite(loss)) and "clip_frac" in metrics
  loss, _ = O.objective("aepo").loss({**batch, "entropy": jnp.ones((4, 3))})
  assert bool(jnp.isfinite(loss))
