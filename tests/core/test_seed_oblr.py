"""OBLR-PO (arXiv 2511.23310, inferred form): gradient-weighted baseline and SNR-adaptive lr."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rlpost import core
from rlpost.core import optim

baseline = jax.jit(core.oblr_baseline_advantages)


def test_equal_weights_give_group_mean_and_weighted_sum_zero():
  r = jnp.array([[1.0, 0.0, 0.0, 1.0], [0.2, 0.9, 0.4, 0.4]])
  np.testing.assert_allclose(baseline(r, jnp.ones((2, 4))),
                             r - jnp.mean(r, axis=1, keepdims=True), atol=1e-6)
  w = jnp.array([[1.0, 2.0, 3.0, 4.0], [0.5, 0.1, 2.0, 0.0]])
  adv = baseline(r, w)
  np.testing.assert_allclose(np.sum(np.asarray(w * adv), axis=1), 0.0, atol=1e-6)


@pytest.mark.parametrize("jit", [False, True])
def test_degenerate_groups(jit):
  fn = baseline if jit else core.oblr_baseline_advantages
  r = jnp.array([[0.7, 0.7, 0.7], [1.0, 0.0, 1.0]])
  adv = fn(r, jnp.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]))
  np.testing.assert_array_equal(np.asarray(adv)[0], 0.0)
  np.testing.assert_allclose(np.asarray(adv)[1], [1 / 3, -2 / 3, 1 / 3], rtol=1e-5)


def test_path_weights_match_logit_gradient_norm():
  logits = np.array([[[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]]])
  p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  a = np.array([[0, 2]])
  logp = np.log(np.take_along_axis(p, a[..., None], -1)[..., 0]).astype(np.float32)
  w = jax.jit(core.oblr_path_weights)(logp, (p ** 2).sum(-1).astype(np.float32), np.ones((1, 2)))
  expected = sum(float(np.sum((np.eye(3)[a[0, t]] - p[0, t]) ** 2)) for t in range(2))
  np.testing.assert_allclose(w, [expected], rtol=1e-5)


def test_gradient_snr_scale_invariant():
  g = {"a": jnp.array([[1.0, 2.0], [1.5, 1.0], [0.5, 3.0]]), "b": jnp.array([[0.1], [0.2], [0.0]])}
  snr = jax.jit(optim.gradient_snr)
  s = snr(g)
  s2 = snr(jax.tree.map(lambda x: 7.0 * x, g))
  np.testing.assert_allclose(s, s2, rtol=1e-5)
  assert bool(jnp.isinf(snr({"a": jnp.ones((3, 2))})))


def test_oblr_scale_invariance_clipping_and_chain():
  rng = np.random.default_rng(0)
  grads = [jnp.asarray(rng.normal(1.0, 0.5, 4).astype(np.float32)) for _ in range(6)]
  tx = optim.oblr_scale(snr_ref=1.0, min_scale=0.1, max_scale=10.0)
  update = jax.jit(tx.update)

  def run(c):
    state, scales = tx.init(jnp.zeros(4)), []
    for g in grads:
      _, state = update(c * g, state)
      scales.append(float(state.scale))
    return np.array(scales)

  s1, s2 = run(1.0), run(100.0)
  np.testing.assert_allclose(s1, s2, rtol=1e-4)
  assert s1[0] == 1.0 and np.all((s1 >= 0.1) & (s1 <= 10.0))
  out, _ = jax.jit(tx.update)(jnp.ones(4), tx.init(jnp.zeros(4)), None, snr=jnp.asarray(0.01))
  np.testing.assert_allclose(out, 0.1 * jnp.ones(4))
  chain = optax.chain(optax.adam(1e-2), optim.oblr_scale())
  params = {"w": jnp.ones(3)}
  upd, _ = jax.jit(chain.update)({"w": jnp.ones(3)}, chain.init(params), params)
  assert bool(jnp.all(jnp.isfinite(upd["w"])))
  with pytest.raises(ValueError, match="min_scale"):
    optim.oblr_scale(min_scale=2.0, max_scale=1.0)
