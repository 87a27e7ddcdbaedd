"""KV-cache sampler: trainer consistency, buckets without recompiles, stop ids, filters."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlpost.llm import model as model_lib
from rlpost.llm import sampler as sampler_lib
from rlpost.llm.config import ModelConfig

_CFG = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                   attention_bias=True, model_type="qwen2")
_teacher = jax.jit(model_lib.token_logprobs_and_entropy, static_argnames=("temperature",))


@pytest.fixture(scope="module")
def model():
  m = model_lib.init_model(_CFG, seed=0)
  m.embed_tokens.value = m.embed_tokens.value * 8.0  # peaked, input-dependent distributions
  return m


def _prompts(seed=0, lengths=(5, 9, 3)):
  rng = np.random.default_rng(seed)
  return sampler_lib.left_pad([list(rng.integers(1, 64, size=n)) for n in lengths])


def test_sampler_logp_matches_teacher_forced_pass(model):
  tokens, mask = _prompts()
  sampler = sampler_lib.Sampler(model)
  for temperature in (1.0, 0.7):
    out = sampler.generate(tokens, mask, max_new_tokens=12, temperature=temperature,
                           stop_ids=(3, 7), seed=1)
    logp, entropy = _teacher(model, out.tokens, out.attention_mask, temperature=temperature)
    resp = np.asarray(out.response_mask, bool)
    p = out.prompt_length
    assert resp.sum() > 3
    np.testing.assert_allclose(np.asarray(out.logp)[resp], np.asarray(logp[:, p:])[resp],
                               atol=1e-5)
    np.testing.assert_allclose(np.asarray(out.entropy)[resp], np.asarray(entropy[:, p:])[resp],
                               atol=1e-5)
    logp1, _ = _teacher(model, out.tokens, out.attention_mask, temperature=1.0)
    np.testing.assert_allclose(np.asarray(out.logp_t1)[resp], np.asarray(logp1[:, p:])[resp],
                               atol=1e-5)
    assert np.all(np.asarray(out.logp)[~resp] == 0.0)


def test_stop_ids_end_rows_and_mask_the_rest(model):
  tokens, mask = _prompts(seed=2, lengths=(4, 6, 2))
  out = sampler_lib.Sampler(model).generate(tokens, mask, max_new_tokens=16, temperature=1.3,
                                            stop_ids=tuple(range(0, 64, 8)), pad_id=0, seed=3)
  toks, resp = np.asarray(out.response_tokens), np.asarray(out.response_mask)
  lengths = np.asarray(out.lengths)
  np.testing.assert_array_equal(lengths, resp.sum(1))
  for row in range(toks.shape[0]):
    n = lengths[row]
    assert np.all(resp[row, :n] == 1) and np.all(resp[row, n:] == 0)
    assert np.all(toks[row, n:] == 0)
    stops = [i for i in range(n) if toks[row, i] % 8 == 0]
    assert stops in ([], [n - 1])  # generation stops right after the first stop id
    assert n == 16 or stops == [n - 1]


def test_no_recompilation_within_a_bucket(model):
  sampler = sampler_lib.Sampler(model)
  sampler.generate(*_prompts(lengths=(3, 5, 7)), max_new_tokens=10, seed=0)
  before = sampler_lib.compile_counts()
  for i, (lengths, new) in enumerate([((2, 9, 4), 16), ((11, 1, 6), 9), ((16, 2, 3), 13)]):
    out = sampler.generate(*_prompts(seed=i, lengths=lengths), max_new_tokens=new, seed=i)
    assert out.prompt_length == 16 and out.response_tokens.shape == (3, 16)
    assert int(np.asarray(out.lengths).max()) <= new
  assert sampler_lib.compile_counts() == before
  sampler.generate(*_prompts(lengths=(3, 5, 17)), max_new_tokens=10, seed=0)  # new bucket
  assert sampler_lib.compile_counts()["prefill"] == before["prefill"] + 1


def test_greedy_is_padding_invariant_and_matches_top_k_1(model):
  tokens, mask = _prompts(seed=5, lengths=(6, 2, 4))
  sampler = sampler_lib.Sampler(model)
  greedy = sampler.generate(tokens, mask, max_new_tokens=8, temperature=0.0)
  np.testing.assert_array_equal(greedy.logp, greedy.logp_t1)
  # The same prompts padded differently (3 rows, one of them moved) give the same tokens.
  other_tokens, other_mask = sampler_lib.left_pad(
      [list(tokens[1, -2:]), list(tokens[0, -6:]), list(tokens[2, -4:])], length=9)
  other = sampler.generate(other_tokens, other_mask, max_new_tokens=8, temperature=0.0)
  np.testing.assert_array_equal(greedy.response_tokens[1], other.response_tokens[0])
  np.testing.assert_array_equal(greedy.response_tokens[0], other.response_tokens[1])
  top1 = sampler.generate(tokens, mask, max_new_tokens=8, temperature=1.0, top_k=1, seed=9)
  np.testing.assert_array_equal(top1.response_tokens, greedy.response_tokens)
  np.testing.assert_allclose(top1.logp, 0.0, atol=1e-6)  # a one-token support has logp 0


def test_filter_logits_top_k_and_top_p():
  z = jnp.log(jnp.array([[0.5, 0.2, 0.15, 0.1, 0.05]]))
  filt = jax.jit(sampler_lib.filter_logits, static_argnames=("top_k",))
  kept = lambda x: np.isfinite(np.asarray(x))[0].tolist()
  assert kept(filt(z, top_k=2, top_p=None)) == [1, 1, 0, 0, 0]
  assert kept(sampler_lib.filter_logits(z, top_k=2, top_p=None)) == [1, 1, 0, 0, 0]  # no jit
  assert kept(filt(z, top_k=None, top_p=0.5)) == [1, 0, 0, 0, 0]
  assert kept(filt(z, top_k=None, top_p=0.51)) == [1, 1, 0, 0, 0]
  assert kept(filt(z, top_k=None, top_p=0.86)) == [1, 1, 1, 1, 0]
  assert kept(filt(z, top_k=None, top_p=1.0)) == [1] * 5
  # Sampled tokens always come from the nucleus; logp is the renormalised nucleus log-prob.
  logits = jnp.tile(z, (256, 1))
  step = jax.jit(sampler_lib.sample_step, static_argnames=("top_k", "greedy"))
  tok, logp, logp1, _ = step(logits, jax.random.key(0), top_p=0.6)
  assert set(np.asarray(tok).tolist()) == {0, 1}
  np.testing.assert_allclose(np.exp(logp), np.where(np.asarray(tok) == 0, 0.5 / 0.7, 0.2 / 0.7),
                             rtol=1e-5)
  np.testing.assert_allclose(np.exp(logp1), np.where(np.asarray(tok) == 0, 0.5, 0.2), rtol=1e-5)


def test_errors_name_the_values(model):
  tokens, mask = _prompts(lengths=(10, 3))
  sampler = sampler_lib.Sampler(model)
  with pytest.raises(ValueError, match="prompt length 10 \\+ max_new_tokens 60 exceeds "
                                       "max_position_embeddings 64"):
    sampler.generate(tokens, mask, max_new_tokens=60)
  with pytest.raises(ValueError, match="at least one"):
    sampler.generate(tokens, np.zeros_like(mask), max_new_tokens=4)
  with pytest.raises(ValueError, match="top_p"):
    sampler_lib.SamplingParams(top_p=0.0)
  assert sampler_lib.bucket_size(17) == 32 and sampler_lib.bucket_size(3) == 16


@pytest.mark.parametrize("expand", [None, 3])
def test_shards_equal_separate_calls_on_the_chunks(model, expand):
  """shards=2 runs chunk s of the prompts with fold_in(key, s), concurrently; the result is the
  concatenation of the two single calls (same program per chunk, so bit-identical)."""
  tokens, mask = _prompts(seed=4, lengths=(5, 9, 3, 7, 2))
  key = jax.random.key(11)
  kw = dict(max_new_tokens=10, temperature=1.0, stop_ids=(3,), expand=expand)
  out = sampler_lib.Sampler(model).generate(tokens, mask, seed=key, shards=2, **kw)
  ref = sampler_lib.Sampler(model)
  parts = [ref.generate(tokens[rows], mask[rows], seed=jax.random.fold_in(key, s), **kw)
           for s, rows in enumerate((slice(0, 3), slice(3, 5)))]
  rows = 5 * (expand or 1)
  for field in ("tokens", "attention_mask", "response_tokens", "response_mask", "lengths", "logp",
                "logp_t1", "entropy"):
    got = np.asarray(getattr(out, field))
    assert got.shape[0] == rows, field
    np.testing.assert_array_equal(got, np.concatenate([np.asarray(getattr(p, field))
                                                       for p in parts]), err_msg=field)
  assert out.prompt_length == parts[0].prompt_length
  # The chunks draw different streams: the second chunk is not a copy of a one-call sample.
  one = sampler_lib.Sampler(model).generate(tokens, mask, seed=key, shards=1, **kw)
  assert not np.array_equal(np.asarray(one.response_tokens), np.asarray(out.response_tokens))


def test_greedy_shards_match_one_call(model):
  tokens, mask = _prompts(seed=5, lengths=(4, 8, 6, 3))
  sampler = sampler_lib.Sampler(model)
  kw = dict(max_new_tokens=8, temperature=0.0, expand=2)
  one = sampler.generate(tokens, mask, shards=1, **kw)
  for shards in (2, 3, 9):  # 9 > 4 prompts: one chunk per prompt
    out = sampler.generate(tokens, mask, shards=shards, **kw)
    np.testing.assert_array_equal(np.asarray(out.response_tokens), np.asarray(one.response_tokens))
    np.testing.assert_allclose(np.asarray(out.logp), np.asarray(one.logp), atol=1e-5)
    assert np.all(np.isfinite(np.asarray(out.entropy)))


@pytest.mark.parametrize("shards", [0, -1, True, 1.5, "2"])
def test_bad_shards_name_the_argument(model, shards):
  tokens, mask = _prompts()
  with pytest.raises(ValueError, match="shards"):
    sampler_lib.Sampler(model).generate(tokens, mask, max_new_tokens=4, shards=shards)


def test_inverse_cdf_draw_matches_the_distribution_and_skips_filtered_tokens():
  logits = jnp.asarray([[2.0, 1.0, -jnp.inf, 0.5, 0.0, -jnp.inf],
                        [0.0, 0.0, 0.0, 0.0, 0.0, 30.0]], jnp.float32)
  logq = jax.nn.log_softmax(logits, axis=-1)
  n = 100_000
  draw = jax.jit(jax.vmap(lambda k: sampler_lib.inverse_cdf_draw(k, logq)))
  tokens = np.asarray(draw(jax.random.split(jax.random.key(3), n)))
  assert tokens.dtype == np.int32 and tokens.min() >= 0 and tokens.max() <= 5
  freq = np.stack([np.bincount(tokens[:, r], minlength=6) / n for r in range(2)])
  probs = np.exp(np.asarray(logq))
  # 5 standard errors of a binomial proportion (p(1 - p) / n <= 0.25 / n)
  np.testing.assert_allclose(freq, probs, atol=5 * 0.5 / np.sqrt(n))
  assert freq[0, 2] == 0 and freq[0, 5] == 0  # -inf entries never drawn
  # Degenerate rows: one finite entry, and all mass in the last entry, draw that entry.
  one = jax.nn.log_softmax(jnp.asarray([[-jnp.inf, -jnp.inf, 1.0], [-jnp.inf, 4.0, -jnp.inf]]))
  got = np.asarray(jax.vmap(lambda k: sampler_lib.inverse_cdf_draw(k, one))(
      jax.random.split(jax.random.key(4), 64)))
  assert np.all(got[:, 0] == 2) and np.all(got[:, 1] == 1)
  # jit and no-jit agree
  k = jax.random.key(5)
  np.testing.assert_array_equal(np.asarray(sampler_lib.inverse_cdf_draw(k, logq)),
                                np.asarray(jax.jit(sampler_lib.inverse_cdf_draw)(k, logq)))
