"""Distribution-centric PO (arXiv 2601.12730): tempered ratio, adaptive alpha, mixed advantage."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlpost import core

mixed = jax.jit(core.dist_po_advantages)


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  rewards = jnp.asarray(rng.integers(0, 2, (2, 4)).astype(np.float32))
  old = jnp.asarray(rng.normal(-1.0, 0.5, (8, 5)).astype(np.float32))
  tempered = old + jnp.asarray(rng.normal(0, 0.2, (8, 5)).astype(np.float32))
  mask = jnp.ones((8, 5)).at[3, 2:].set(0.0)
  return rewards, old, tempered, mask


def test_temperature_rule():
  assert float(core.dist_po_temperature(jnp.array(0.2), entropy_target=0.5)) == pytest.approx(1.2)
  assert float(core.dist_po_temperature(jnp.array(0.5), entropy_target=0.5)) == pytest.approx(1.2)
  assert float(core.dist_po_temperature(jnp.array(0.9), entropy_target=0.5)) == pytest.approx(0.8)


def test_alpha_bounds_and_no_correct_guard():
  for frac in (0.2, 0.5, 1.0):
    for h in (0.0, 0.3, 2.0):
      a = float(core.dist_po_alpha(jnp.array(h), jnp.array(frac), entropy_target=0.5))
      assert 0.0 <= a <= 1.0 / 3.0 + 1e-6
  assert float(core.dist_po_alpha(jnp.array(0.1), jnp.array(0.0))) == 0.0
  assert float(core.dist_po_alpha(jnp.array(0.5), jnp.array(0.5), entropy_target=0.5)) == 0.0


def test_on_target_entropy_gives_grpo():
  rewards, old, tempered, mask = _inputs(1)
  adv, aux = mixed(rewards, old, tempered, mask, prev_entropy=jnp.array(0.5), entropy_target=0.5)
  base = jax.jit(lambda r, m: core.broadcast_to_tokens(core.grpo_advantages(r), m))(rewards, mask)
  np.testing.assert_allclose(adv, base, atol=1e-6)
  assert float(aux["alpha"]) == 0.0


@pytest.mark.parametrize("jit", [False, True])
def test_unit_temperature_mixes_in_correct_indicator(jit):
  rewards, old, _, mask = _inputs(2)
  fn = mixed if jit else core.dist_po_advantages
  adv, aux = fn(rewards, old, old, mask, prev_entropy=jnp.array(0.1))
  alpha = float(aux["alpha"])
  correct = (np.asarray(rewards).reshape(-1) > 0.05).astype(np.float32)
  base = np.asarray(jax.jit(lambda r, m: core.broadcast_to_tokens(core.grpo_advantages(r), m))(
      rewards, mask))
  expected = np.where(np.asarray(mask, bool), (1 - alpha) * base + alpha * correct[:, None], 0.0)
  np.testing.assert_allclose(adv, expected, rtol=1e-5, atol=1e-6)
  assert alpha > 0
  # Incorrect responses get only the scaled GRPO term; the added term is >= 0.
  np.testing.assert_allclose(np.asarray(adv)[correct == 0], ((1 - alpha) * base)[correct == 0],
                             atol=1e-6)


def test_no_correct_response_and_degenerate_mask_no_nan():
  _, old, tempered, mask = _inputs(3)
  adv, aux = mixed(jnp.zeros((2, 4)), old, tempered, jnp.zeros_like(mask),
                   prev_entropy=jnp.array(0.0))
  assert bool(jnp.all(jnp.isfinite(adv))) and float(aux["alpha"]) == 0.0
  rho = core.dist_po_tempered_ratio(old + 1e4, old, mask)
  assert bool(jnp.all(jnp.isfinite(rho)))
