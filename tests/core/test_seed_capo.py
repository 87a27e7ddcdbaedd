"""CAPO (arXiv 2510.00819): closed-form last-layer curvature metrics vs brute-force autodiff."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rlpost import core
from rlpost import objectives

V, D = 5, 3
metrics = jax.jit(core.capo_token_metrics)


def _model(seed=0, n=4):
  rng = np.random.default_rng(seed)
  w = jnp.asarray(rng.normal(0, 0.7, (V, D)).astype(np.float32))
  h = jnp.asarray(rng.normal(0, 1.0, (n, D)).astype(np.float32))
  a = jnp.asarray(rng.integers(0, V, n))
  adv = jnp.asarray(rng.normal(0, 1.0, n).astype(np.float32))
  return w, h, a, adv


def _brute_force(w, h, a, adv, lr, precondition):
  """Per token: g = grad_W A log pi(a|h), g~ = precondition(g), and the exact second-order terms."""

  def one(h_i, a_i, adv_i):
    logpi = lambda wf: jax.nn.log_softmax(wf.reshape(V, D) @ h_i)[a_i]
    wf = w.reshape(-1)
    score = jax.grad(logpi)(wf)
    hess_logpi = jax.hessian(logpi)(wf)  # dense (V*D)^2 autodiff Hessian
    g = adv_i * score
    gt = precondition(g)
    hess = adv_i * (jnp.dot(score, gt) ** 2 + gt @ hess_logpi @ gt)
    return {"m_hessian": lr * jnp.dot(g, gt) + 0.5 * lr ** 2 * hess,
            "m_fisher": 0.5 * lr ** 2 * jnp.dot(score, gt) ** 2}

  return jax.jit(jax.vmap(one))(h, a, adv)


@pytest.mark.parametrize("jit", [False, True])
def test_sgd_closed_form_matches_autodiff(jit):
  w, h, a, adv = _model(0)
  fn = metrics if jit else core.capo_token_metrics
  got = fn(h, h @ w.T, a, adv, lr=0.3)
  ref = _brute_force(w, h, a, adv, 0.3, lambda g: g)
  np.testing.assert_allclose(got["m_hessian"], ref["m_hessian"], rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(got["m_fisher"], ref["m_fisher"], rtol=1e-4, atol=1e-7)
  # SGD identities: <g, g> = A^2 |v|^2 |h|^2.
  pi = jax.nn.softmax(h @ w.T)
  v = jax.nn.one_hot(a, V) - pi
  np.testing.assert_allclose(got["grad_dot"], adv ** 2 * jnp.sum(v ** 2, -1) * jnp.sum(h ** 2, -1),
                             rtol=1e-5)


def test_adam_preconditioned_closed_form_matches_optax_and_autodiff():
  w, h, a, adv = _model(1)
  rng = np.random.default_rng(2)
  mu = jnp.asarray(rng.normal(0, 0.1, (V, D)).astype(np.float32))
  nu = jnp.asarray(rng.uniform(0.01, 0.1, (V, D)).astype(np.float32))
  count = 4
  adam = optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8)
  state = adam.init(jnp.zeros(V * D))._replace(count=jnp.asarray(count, jnp.int32),
                                               mu=mu.reshape(-1), nu=nu.reshape(-1))
  precondition = lambda g: adam.update(g, state)[0]
  got = metrics(h, h @ w.T, a, adv, lr=0.05, adam_mu=mu, adam_nu=nu, adam_count=count)
  ref = _brute_force(w, h, a, adv, 0.05, precondition)
  np.testing.assert_allclose(got["m_hessian"], ref["m_hessian"], rtol=2e-4, atol=1e-6)
  np.testing.assert_allclose(got["m_fisher"], ref["m_fisher"], rtol=2e-4, atol=1e-8)


def test_one_hot_policy_at_argmax_has_zero_curvature_and_fisher_nonnegative():
  h = jnp.ones((2, D))
  logits = jnp.array([[60.0, 0, 0, 0, 0], [0, 0, 0, 60.0, 0]])
  out = metrics(h, logits, jnp.array([0, 3]), jnp.array([1.0, -2.0]), lr=1.0)
  np.testing.assert_allclose(out["hess"], 0.0, atol=1e-12)
  np.testing.assert_allclose(out["m_fisher"], 0.0, atol=1e-12)
  w, h, a, adv = _model(3, n=16)
  assert bool(jnp.all(metrics(h, h @ w.T, a, adv, lr=2.0)["m_fisher"] >= 0))


def test_mask_thresholds():
  m_h = jnp.array([0.001, -0.02, 0.02, -0.001, 0.0])
  m_f = jnp.array([1e-5, 1e-5, 1e-5, 1e-5, 1e-3])
  np.testing.assert_array_equal(core.capo_mask(m_h, m_f), [True, False, False, True, False])
  np.testing.assert_array_equal(core.capo_mask(m_h, m_f, symmetric=False),
                                [True, False, False, False, False])
  np.testing.assert_array_equal(core.capo_mask(m_h, m_f, tau_fisher=None, tau_hessian=None), True)
  keep = core.capo_mask(m_h, m_f, jnp.array([1, 1, 1, 0, 1]))
  assert float(core.capo_rejection_fraction(keep, jnp.array([1, 1, 1, 0, 1]))) == 0.75


def _loss_batch(seed=0):
  rng = np.random.default_rng(seed)
  old = jnp.asarray(rng.normal(-1, 0.3, (4, 5)).astype(np.float32))
  return {"logp": old + 0.1, "old_logp": old, "advantages": jnp.asarray(
      np.repeat(rng.normal(0, 1, (4, 1)), 5, 1).astype(np.float32)), "mask": jnp.ones((4, 5))}


def test_presets_without_masking_equal_grpo_and_dr_grpo():
  batch = _loss_batch()
  big = {**batch, "capo_m_hessian": jnp.zeros((4, 5)), "capo_m_fisher": jnp.zeros((4, 5))}
  for capo, base in (("capo", "grpo"), ("dr_capo", "dr_grpo")):
    got = jax.jit(objectives.objective(capo).loss)(big)[0]
    ref = jax.jit(objectives.objective(base, kl_coef=0.0, kl_placement=None).loss)(batch)[0]
    np.testing.assert_allclose(got, ref, rtol=1e-6)
  rejected = {**big, "capo_m_fisher": jnp.full((4, 5), 1.0).at[0].set(0.0)}
  only_row0 = jax.jit(objectives.objective("capo").loss)(rejected)[0]
  ref0 = jax.jit(objectives.objective("grpo", kl_coef=0.0, kl_placement=None).loss)(
      {k: v[:1] for k, v in batch.items()})[0]
  np.testing.assert_allclose(only_row0, ref0, rtol=1e-6)  # empty rows leave the mean
