"""CAPO's top-k support for pi (arXiv 2510.00819; the official code's hidden support size)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlpost import core


def _inputs(seed=0, n=6, v=7, d=3):
  rng = np.random.default_rng(seed)
  h = jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
  z = jnp.asarray(rng.normal(size=(n, v)) * 2, jnp.float32)
  a = jnp.asarray(rng.integers(0, v, n))
  adv = jnp.asarray(rng.normal(size=n), jnp.float32)
  return h, z, a, adv


def test_capo_topk_full_vocab_is_exact_and_support_equals_masked_logits():
  h, z, a, adv = _inputs()
  full = core.capo_token_metrics(h, z, a, adv, lr=0.1)
  same = core.capo_token_metrics(h, z, a, adv, lr=0.1, top_k=z.shape[-1])
  for k in full:
    np.testing.assert_allclose(same[k], full[k], rtol=1e-6)
  kth = jnp.sort(z, axis=-1)[:, -3][:, None]
  masked = jnp.where(z >= kth, z, -1e9)  # the same support, spelled out
  top3 = jax.jit(lambda *x: core.capo_token_metrics(*x, lr=0.1, top_k=3))(h, z, a, adv)
  ref = core.capo_token_metrics(h, masked, a, adv, lr=0.1)
  for k in ("m_hessian", "m_fisher"):
    np.testing.assert_allclose(top3[k], ref[k], rtol=1e-5, atol=1e-7)
    assert not np.allclose(top3[k], full[k])


def test_capo_topk_one_at_the_argmax_predicts_no_change_and_bad_k_raises():
  h, z, _, adv = _inputs(1)
  a = jnp.argmax(z, axis=-1)
  out = core.capo_token_metrics(h, z, a, adv, lr=0.1, top_k=1)  # pi = e_a, v = 0
  assert np.all(np.asarray(out["m_fisher"]) == 0) and np.all(np.asarray(out["m_hessian"]) == 0)
  with pytest.raises(ValueError, match="top_k"):
    core.capo_token_metrics(h, z, a, adv, lr=0.1, top_k=0)
