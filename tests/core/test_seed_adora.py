"""ADORA (ShadeCloak/ADORA; arXiv 2602.10019): length-based group attenuation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlpost import core

KW = dict(correct_score=0.5, length_threshold=100.0)
adora = jax.jit(core.adora_advantages, static_argnames=("variant",))
weights = jax.jit(core.adora_group_weights, static_argnames=("variant",))


def test_attenuation_one_and_all_advantageous_give_grpo():
  r = jnp.array([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0]])
  lens = jnp.array([[50.0, 10.0, 20.0, 40.0], [60.0, 50.0, 20.0, 10.0]])
  grpo = jax.jit(core.grpo_advantages)(r)
  np.testing.assert_allclose(adora(r, lens, attenuation=1.0, **KW), grpo, atol=1e-6)
  np.testing.assert_array_equal(weights(r, lens, **KW), [1.0, 1.0])
  np.testing.assert_allclose(adora(r, lens, **KW), grpo, atol=1e-6)


@pytest.mark.parametrize("jit", [False, True])
def test_edge_case_tables(jit):
  fn = weights if jit else core.adora_group_weights
  r = jnp.array([
      [1.0, 0.0, 0.0],   # positives shorter than the mean negative -> disadvantaged
      [0.0, 0.0, 0.0],   # no positives
      [1.0, 1.0, 0.0],   # positives; the only negative is truncated (len >= threshold)
      [1.0, 0.0, 0.0],   # long positive -> advantageous
  ])
  lens = jnp.array([[10.0, 50.0, 60.0], [10.0, 20.0, 30.0], [20.0, 30.0, 120.0],
                    [90.0, 50.0, 60.0]])
  llm = np.asarray(fn(r, lens, variant="llm", **KW))
  vlm = np.asarray(fn(r, lens, variant="vlm", **KW))
  np.testing.assert_allclose(llm, [0.1, 0.1, 1.0, 1.0])
  np.testing.assert_allclose(vlm, [0.1, 1.0, 0.1, 1.0])


def test_group_mean_zero_preserved_and_degenerate_groups():
  r = jnp.array([[1.0, 0.0, 0.0, 1.0], [0.7, 0.7, 0.7, 0.7], [0.0, 0.0, 0.0, 0.0]])
  lens = jnp.full((3, 4), 30.0)
  adv = adora(r, lens, **KW)
  np.testing.assert_allclose(np.sum(np.asarray(adv), axis=1), 0.0, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(adv)[1:], 0.0)
  with pytest.raises(ValueError, match="variant"):
    core.adora_group_weights(r, lens, variant="bad", **KW)
