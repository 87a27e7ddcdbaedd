"""Shared-prompt layout: each prompt runs once per group in the sampler's prefill, the log-prob
passes and the update; the group's completions read its keys and values in place (shared-prefix
attention, int groups) or from per-row copies (index groups). Also the hand-ordered Dense
backward (`model.dense_matmul`)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rlpost.llm import model as model_lib
from rlpost.llm import rl
from rlpost.llm import sampler as sampler_lib
from rlpost.llm import train
from rlpost.llm.config import ModelConfig
from rlpost.llm.tasks import generate_dataset
from rlpost.llm.tasks import load_tokenizer

_CFG = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                   attention_bias=True, model_type="qwen2")
U, G, P, R = 3, 4, 12, 8


@pytest.fixture(scope="module")
def model():
  m = model_lib.init_model(_CFG, seed=0)
  m.embed_tokens.value = m.embed_tokens.value * 8.0  # peaked, input-dependent distributions
  return m


def _batch(seed=0):
  """U left-padded prompts of different lengths and U * G right-padded responses."""
  rng = np.random.default_rng(seed)
  prompts, pmask = sampler_lib.left_pad(
      [list(rng.integers(1, 64, size=n)) for n in (5, P, 1)], length=P)
  resp = rng.integers(1, 64, size=(U * G, R)).astype(np.int32)
  lengths = np.array([R, 5, 1, R, 3, R, 2, 7, R, 4, 6, 1])
  rmask = (np.arange(R)[None, :] < lengths[:, None]).astype(np.int32)
  resp = np.where(rmask > 0, resp, 0)
  full_t = np.concatenate([np.repeat(prompts, G, 0), resp], 1)
  full_m = np.concatenate([np.repeat(pmask, G, 0), rmask], 1)
  return prompts, pmask, resp, rmask, full_t, full_m


def _predicting(rmask):
  """Positions whose hidden state predicts a real response token."""
  return rmask.astype(bool)


@pytest.mark.parametrize("use_jit", [False, True])
@pytest.mark.parametrize("index_form", [False, True])
def test_shared_hidden_equals_full_sequences(model, use_jit, index_form):
  prompts, pmask, resp, rmask, full_t, full_m = _batch()
  expand = jnp.asarray(np.repeat(np.arange(U), G)) if index_form else G
  fn = model_lib.shared_prompt_hidden
  if use_jit:
    fn = jax.jit(fn, static_argnums=() if index_form else (5,))
  got = np.asarray(fn(model, prompts, pmask, resp, rmask, expand))
  want = np.asarray(model_lib.hidden_states(model, full_t, full_m)[:, P - 1:-1])
  assert got.shape == (U * G, R, _CFG.hidden_size)
  sel = _predicting(rmask)
  np.testing.assert_allclose(got[sel], want[sel], atol=2e-5)
  assert np.all(np.isfinite(got))


def test_shared_logp_and_gradient_equal_the_full_path(model):
  prompts, pmask, resp, rmask, full_t, full_m = _batch(1)
  graphdef, params = nnx.split(model)
  weights = jnp.asarray(np.random.default_rng(2).normal(size=(U * G, R)), jnp.float32)

  def loss(p, shared):
    m = nnx.merge(graphdef, p)
    if shared:
      lp, _ = rl.shared_response_logp_entropy(m, prompts, pmask, resp, rmask, G)
    else:
      lp, _ = rl.response_logp_entropy(m, full_t, full_m, P)
    return jnp.sum(lp * weights), lp

  grad_fn = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)
  (l_s, lp_s), g_s = grad_fn(params, True)
  (l_f, lp_f), g_f = grad_fn(params, False)
  np.testing.assert_allclose(np.asarray(lp_s), np.asarray(lp_f), atol=1e-5)
  np.testing.assert_array_equal(np.asarray(lp_s)[rmask == 0], 0.0)
  np.testing.assert_allclose(float(l_s), float(l_f), rtol=1e-5)
  for a, b in zip(jax.tree.leaves(g_s), jax.tree.leaves(g_f)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-3, atol=2e-5)


def test_shared_hidden_degenerate_rows_stay_finite(model):
  """Empty responses, a one-token prompt and huge embeddings: no NaN anywhere."""
  prompts, pmask, resp, _, _, _ = _batch(3)
  rmask = np.zeros_like(resp)
  out = model_lib.shared_prompt_hidden(model, prompts, pmask, np.zeros_like(resp), rmask, G)
  assert np.all(np.isfinite(np.asarray(out)))
  graphdef, params = nnx.split(model)
  params["embed_tokens"].value = params["embed_tokens"].value * 1e4
  big = nnx.merge(graphdef, params)
  lp, ent = rl.shared_response_logp_entropy(big, prompts, pmask, resp, np.ones_like(resp), G)
  assert np.all(np.isfinite(np.asarray(lp))) and np.all(np.isfinite(np.asarray(ent)))


def test_prefix_rows_must_be_a_multiple_of_the_prefixes(model):
  prompts, pmask, resp, rmask, *_ = _batch()
  prefix_kv = model_lib.init_cache(_CFG, U, P)
  pos = np.zeros((U * G - 1, R), np.int32)
  own = np.ones((U * G - 1, R, R), bool)
  with pytest.raises(ValueError, match="prefix"):
    model(resp[1:], pos, own, prefix=(prefix_kv, pmask))


def test_prefix_attention_with_no_visible_keys_stays_finite(model):
  """A prefix whose mask is all zero and rows whose own keys are all masked: no NaN."""
  prompts, pmask, resp, *_ = _batch(4)
  prefix_kv = model_lib.init_cache(_CFG, U, P)
  pos = np.tile(np.arange(R, dtype=np.int32), (U * G, 1))
  own = np.zeros((U * G, R, R), bool)
  hidden, _ = model(resp, pos, own, prefix=(prefix_kv, np.zeros_like(pmask)))
  assert np.all(np.isfinite(np.asarray(hidden)))


@pytest.mark.parametrize("use_jit", [False, True])
@pytest.mark.parametrize("x_shape", [(7, 5), (3, 4, 5)])
def test_dense_matmul_matches_autodiff(use_jit, x_shape):
  """Same values and gradients as plain `x @ w`; forward-over-reverse (an HVP) still works."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
  w = jnp.asarray(rng.normal(size=(5, 6)), jnp.float32)
  loss = lambda mm: (lambda x, w: jnp.sum(jnp.sin(mm(x, w)) ** 2))
  ours = jax.grad(loss(model_lib.dense_matmul), argnums=(0, 1))
  plain = jax.grad(loss(lambda a, b: a @ b), argnums=(0, 1))
  if use_jit:
    ours, plain = jax.jit(ours), jax.jit(plain)
  for a, b in zip(ours(x, w), plain(x, w)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(model_lib.dense_matmul(x, w)), np.asarray(x @ w),
                             rtol=1e-6)
  hvp = lambda mm: jax.jvp(lambda w_: jax.grad(loss(mm), argnums=1)(x, w_), (w,),
                           (jnp.ones_like(w),))[1]
  np.testing.assert_allclose(np.asarray(hvp(model_lib.dense_matmul)),
                             np.asarray(hvp(lambda a, b: a @ b)), rtol=1e-4, atol=1e-5)


def test_init_cache_layout():
  cache = model_lib.init_cache(_CFG, 5, 20)
  assert len(cache) == _CFG.num_hidden_layers
  k, v = cache[0]
  d = _CFG.resolved_head_dim
  assert k.shape == (5, _CFG.num_key_value_heads, d, 20)  # keys [B, KV, D, S]
  assert v.shape == (5, _CFG.num_key_value_heads, 20, d)  # values [B, KV, S, D]


def test_sampler_expand_equals_repeated_prompts(model):
  prompts, pmask, *_ = _batch()
  sampler = sampler_lib.Sampler(model)
  rep = sampler.generate(np.repeat(prompts, G, 0), np.repeat(pmask, G, 0), max_new_tokens=10,
                         stop_ids=(3,), seed=7)
  for expand in (G, np.repeat(np.arange(U), G)):
    out = sampler.generate(prompts, pmask, max_new_tokens=10, stop_ids=(3,), seed=7,
                           expand=expand)
    np.testing.assert_array_equal(np.asarray(out.tokens), np.asarray(rep.tokens))
    np.testing.assert_array_equal(np.asarray(out.attention_mask), np.asarray(rep.attention_mask))
    np.testing.assert_allclose(np.asarray(out.logp), np.asarray(rep.logp), atol=1e-5)
  # Uneven groups through the index form: 1, 3 and 2 completions.
  rows = np.array([0, 1, 1, 1, 2, 2])
  out = sampler.generate(prompts, pmask, max_new_tokens=6, seed=1, expand=rows)
  pl = out.prompt_length  # the prompt is left-padded to the sampler's bucket
  np.testing.assert_array_equal(np.asarray(out.tokens)[:, pl - P:pl], prompts[rows])
  assert out.tokens.shape[0] == len(rows)


@pytest.mark.parametrize("expand", [0, np.array([0, 3]), np.array([], np.int64),
                                    np.array([[0, 1]])])
def test_sampler_bad_expand_names_the_argument(model, expand):
  prompts, pmask, *_ = _batch()
  with pytest.raises(ValueError, match="expand"):
    sampler_lib.Sampler(model).generate(prompts, pmask, max_new_tokens=4, expand=expand)


def _half_right(texts, recs):  # reward spread in every group of 4, so step 1 moves the params
  del recs
  return np.asarray([float(i % 4 < 2) for i in range(len(texts))], np.float32)


def test_rl_step_shared_and_full_layouts_agree():
  """Two GRPO steps (KL on) in each layout, and with the reference pass fused into the update or
  run before it: same rollout, same metrics, same new params."""
  tiny = ModelConfig(vocab_size=384, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                     num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128)
  tok = load_tokenizer()
  graphdef, params = nnx.split(model_lib.init_model(tiny, seed=0))
  pool = generate_dataset(24, split="train", level=1, families=("sum", "difference"))
  opt = train.make_optimizer(learning_rate=1e-2)
  results = []
  for shared, fuse in ((True, True), (False, True), (True, False)):
    cfg = rl.RLConfig(batch_size=8, group_size=4, micro_batch_size=4, max_new_tokens=12,
                      shared_prompt=shared, fuse_ref_logprob=fuse)
    obj = rl.make_objective("grpo", max_new_tokens=12)
    tr = rl.RLTrainer(graphdef=graphdef, params=params, tokenizer=tok, objective=obj,
                      rl_config=cfg, optimizer=opt, pool=pool, data_seed=0, prompt_len=64,
                      reward_fn=_half_right, ref_params=params)
    state = train.init_train_state(params, opt, seed=0)
    for _ in range(2):  # the second step has params != ref, so the KL term is live
      state, met = tr.step(state)
    results.append((jax.tree.map(np.asarray, state["params"]), met))
    assert tr.update._cache_size() == 1  # pylint: disable=protected-access
  (p_s, m_s), *others = results
  assert m_s["kl"] > 0 and m_s["time_logprob"] < others[-1][1]["time_logprob"]
  for p_f, m_f in others:
    for key in ("reward_mean", "accuracy", "response_len_mean", "zero_spread_frac"):
      assert m_s[key] == m_f[key], key
    np.testing.assert_allclose(m_s["kl"], m_f["kl"], rtol=1e-3, atol=1e-7)
    np.testing.assert_allclose(m_s["loss"], m_f["loss"], rtol=1e-3, atol=1e-6)
    for a, b in zip(jax.tree.leaves(p_s), jax.tree.leaves(p_f)):
      np.testing.assert_allclose(a, b, atol=1e-4)
