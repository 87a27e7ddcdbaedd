"""RoPE scaling ("linear", "llama3"): config, decoder and HF bridge, checked vs transformers."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlpost.llm import hf
from rlpost.llm import model as model_lib
from rlpost.llm.config import ModelConfig, from_hf_config

try:
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
except ImportError:  # the config / table tests below run without the [torch] extra
  torch = transformers = None

_LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
           "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
_LINEAR = {"rope_type": "linear", "factor": 4.0}
_SEQ = 48  # > 3 x original_max_position_embeddings, so llama3's interpolation matters
_logits = jax.jit(model_lib.logits)


def _hf_dict(**overrides):
  base = dict(model_type="llama", vocab_size=64, hidden_size=32, intermediate_size=48,
              num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
              max_position_embeddings=256, rope_theta=5e5)
  base.update(overrides)
  return base


# ------------------------------------------------------------------ config (no torch needed)


def test_config_normalizes_hashes_and_round_trips():
  cfg = ModelConfig.tiny(rope_scaling=dict(_LLAMA3, factor=8))
  assert cfg.rope_scaling == (("rope_type", "llama3"), ("factor", 8.0), ("low_freq_factor", 1.0),
                              ("high_freq_factor", 4.0), ("original_max_position_embeddings", 16))
  assert cfg.rope_scaling_dict == _LLAMA3
  assert hash(cfg) == hash(ModelConfig.tiny(rope_scaling=tuple(_LLAMA3.items())))
  assert cfg.replace(num_hidden_layers=2).rope_scaling == cfg.rope_scaling
  assert ModelConfig.tiny(rope_scaling={"rope_type": "default"}).rope_scaling is None
  assert ModelConfig.tiny().rope_scaling_dict == {"rope_type": "default"}
  for rope in (_LLAMA3, _LINEAR, None):
    c = ModelConfig.tiny(rope_scaling=rope, rope_theta=5e5)
    d = c.to_hf_dict()
    assert d["rope_parameters"] == {**c.rope_scaling_dict, "rope_theta": 5e5}
    assert ("rope_scaling" in d) == (rope is not None)
    assert from_hf_config(d) == c
    assert from_hf_config(json.loads(json.dumps(d))) == c


def test_hf_fields_resolve_like_transformers_5():
  v4_linear = _hf_dict(rope_scaling={"type": "linear", "factor": 4})
  assert from_hf_config(v4_linear).rope_scaling_dict == _LINEAR
  assert from_hf_config(v4_linear).rope_theta == 5e5
  # llama3 without original_max_position_embeddings falls back to max_position_embeddings ...
  no_orig = {k: v for k, v in _LLAMA3.items() if k != "original_max_position_embeddings"}
  cfg = from_hf_config(_hf_dict(rope_parameters=dict(no_orig, rope_theta=1e4)))
  assert cfg.rope_scaling_dict["original_max_position_embeddings"] == 256
  assert cfg.rope_theta == 1e4
  # ... and a top-level original_max_position_embeddings takes precedence.
  cfg = from_hf_config(_hf_dict(rope_parameters=dict(_LLAMA3),
                                original_max_position_embeddings=32))
  assert cfg.rope_scaling_dict["original_max_position_embeddings"] == 32
  assert from_hf_config(_hf_dict(rope_parameters=dict(
      _LINEAR, partial_rotary_factor=1.0))).rope_scaling_dict == _LINEAR


@pytest.mark.parametrize("rope_type", ["yarn", "dynamic", "longrope", "proportional", "bogus"])
def test_unsupported_rope_type_raises_naming_the_field(rope_type):
  spec = {"rope_type": rope_type, "factor": 4.0, "original_max_position_embeddings": 16}
  with pytest.raises(ValueError, match=f"rope_parameters.rope_type='{rope_type}'"):
    from_hf_config(_hf_dict(rope_parameters=dict(spec, rope_theta=1e4)))
  with pytest.raises(ValueError, match=f"rope_scaling.rope_type='{rope_type}'"):
    from_hf_config(_hf_dict(rope_scaling={"type": rope_type, "factor": 4.0}))
  with pytest.raises(ValueError, match=rf"ModelConfig.rope_scaling\['rope_type'\]='{rope_type}'"):
    ModelConfig.tiny(rope_scaling=spec)
  with pytest.raises(ValueError, match="rope_type"):
    model_lib.rope_inv_freq(16, 1e4, spec)


@pytest.mark.parametrize("bad, field", [
    ({"rope_type": "linear"}, "missing.*factor"),
    ({"rope_type": "linear", "factor": 0.0}, "factor"),
    ({"rope_type": "linear", "factor": float("nan")}, "factor"),
    ({"rope_type": "linear", "factor": 2.0, "beta_fast": 32}, "unknown key.*beta_fast"),
    (dict(_LLAMA3, high_freq_factor=1.0), "high_freq_factor"),
    (dict(_LLAMA3, original_max_position_embeddings=0), "original_max_position_embeddings"),
    (dict(_LLAMA3, original_max_position_embeddings=16.5), "original_max_position_embeddings"),
    ("llama3", "rope_scaling"),
])
def test_bad_rope_scaling_values_raise_naming_the_field(bad, field):
  with pytest.raises(ValueError, match=field):
    ModelConfig.tiny(rope_scaling=bad)


def test_hf_only_unsupported_rope_features_raise():
  with pytest.raises(ValueError, match="partial_rotary_factor"):
    from_hf_config(_hf_dict(rope_parameters=dict(_LINEAR, partial_rotary_factor=0.5)))
  with pytest.raises(ValueError, match="nested"):
    from_hf_config(_hf_dict(rope_parameters={"full_attention": dict(_LINEAR)}))


# ------------------------------------------------------------------ rope tables


def test_llama3_bands_and_linear_division():
  base = model_lib.rope_inv_freq(16, 5e5)
  linear = model_lib.rope_inv_freq(16, 5e5, _LINEAR)
  np.testing.assert_allclose(linear, base / 4.0, rtol=1e-7)
  # Context 64: wavelengths 2 pi * 5e5^(i/8) = 6.3 (high band), 32 (medium), 167.. (low).
  scaled = model_lib.rope_inv_freq(16, 5e5, dict(_LLAMA3, original_max_position_embeddings=64))
  wavelen = 2 * np.pi / base
  high = wavelen < 64 / 4.0   # kept as is
  low = wavelen > 64 / 1.0    # divided by factor
  mid = ~high & ~low
  assert high.any() and low.any() and mid.any()  # every band is exercised at this size
  np.testing.assert_array_equal(scaled[high], base[high])
  np.testing.assert_allclose(scaled[low], base[low] / 8.0, rtol=1e-6)
  assert np.all((scaled[mid] < base[mid]) & (scaled[mid] > base[mid] / 8.0))
  with pytest.raises(ValueError):  # cached tables are shared: they must be read-only
    scaled[0] = 1.0


def test_rope_cos_sin_jit_matches_eager_and_degenerate_positions():
  positions = jnp.array([[0, 1, 2, 40_000], [0, 0, 5, 1_000_000]], jnp.int32)
  scaling = ModelConfig.tiny(rope_scaling=_LLAMA3).rope_scaling
  jitted = jax.jit(model_lib.rope_cos_sin, static_argnums=(1, 2, 3))
  for rope in (None, scaling, ModelConfig.tiny(rope_scaling=_LINEAR).rope_scaling):
    cos, sin = model_lib.rope_cos_sin(positions, 16, 5e5, rope)
    cos_j, sin_j = jitted(positions, 16, 5e5, rope)
    np.testing.assert_allclose(np.asarray(cos_j), np.asarray(cos), atol=1e-6)
    np.testing.assert_allclose(np.asarray(sin_j), np.asarray(sin), atol=1e-6)
    assert np.isfinite(np.asarray(cos)).all() and np.isfinite(np.asarray(sin)).all()
    np.testing.assert_array_equal(np.asarray(cos[:, 0]), 1.0)  # position 0: identity rotation
    np.testing.assert_array_equal(np.asarray(sin[:, 0]), 0.0)
  cos_s, _ = model_lib.rope_cos_sin(positions, 16, 5e5, scaling)
  cos_d, _ = model_lib.rope_cos_sin(positions, 16, 5e5)
  assert np.abs(np.asarray(cos_s - cos_d)).max() > 0.1


# ------------------------------------------------------------------ parity with transformers

def _build_hf_llama(rope_parameters, seed):
  """Tiny random LlamaForCausalLM (non-trivial norms), as in test_llm_hf.py."""
  torch.manual_seed(seed)
  cfg = transformers.LlamaConfig(
      vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
      rms_norm_eps=1e-6, initializer_range=0.2, tie_word_embeddings=False,
      rope_parameters=dict(rope_parameters, rope_theta=5e5))
  model = transformers.LlamaForCausalLM(cfg)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("norm.weight"):
        p.copy_(1.0 + 0.3 * torch.randn_like(p))
  model.config._attn_implementation = "eager"  # pylint: disable=protected-access
  return model.float().eval()


def _hf_logits(model, tokens, mask):
  pos = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
  with torch.no_grad():
    out = model(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask),
                position_ids=torch.tensor(pos))
  return out.logits.numpy()


def _long_batch():
  rng = np.random.default_rng(1)
  tokens = rng.integers(0, 128, size=(2, _SEQ))
  mask = np.ones((2, _SEQ), np.int64)
  mask[1, :5] = 0  # left padding
  tokens[mask == 0] = 0
  return tokens, mask


@pytest.fixture(scope="module", params=["llama3", "linear"])
def scaled_ckpt(request, tmp_path_factory):
  rope = _LLAMA3 if request.param == "llama3" else _LINEAR
  model = _build_hf_llama(rope, seed=7)
  out = tmp_path_factory.mktemp(f"rope_{request.param}")
  model.save_pretrained(str(out))
  return rope, model, out


@pytest.mark.torch
@pytest.mark.skipif(transformers is None, reason="needs torch + transformers")
def test_inv_freq_matches_transformers(scaled_ckpt):
  from transformers import modeling_rope_utils  # pylint: disable=g-import-not-at-top
  rope, hf_model, _ = scaled_ckpt
  ours = model_lib.rope_inv_freq(16, 5e5, rope)
  np.testing.assert_allclose(ours, hf_model.model.rotary_emb.inv_freq.numpy(), rtol=2e-7)
  variants = [rope] if rope["rope_type"] == "linear" else [
      dict(rope, original_max_position_embeddings=n, low_freq_factor=lo, high_freq_factor=hi)
      for n in (16, 64, 8192) for lo, hi in ((1.0, 4.0), (0.5, 2.0))]
  for spec in variants:
    for head_dim, theta in ((16, 5e5), (128, 1e4)):
      cfg = transformers.LlamaConfig(hidden_size=4 * head_dim, num_attention_heads=4,
                                     max_position_embeddings=16384,
                                     rope_parameters=dict(spec, rope_theta=theta))
      init = modeling_rope_utils.ROPE_INIT_FUNCTIONS[spec["rope_type"]]
      np.testing.assert_allclose(model_lib.rope_inv_freq(head_dim, theta, spec),
                                 init(cfg, "cpu")[0].numpy(), rtol=2e-7, err_msg=str(spec))


@pytest.mark.torch
@pytest.mark.skipif(transformers is None, reason="needs torch + transformers")
def test_scaled_logit_parity_beyond_original_context(scaled_ckpt, tmp_path):
  rope, hf_model, path = scaled_ckpt
  model, cfg, _ = hf.load_hf_checkpoint(path)
  assert cfg.rope_scaling_dict == rope
  tokens, mask = _long_batch()
  valid = mask.astype(bool)
  theirs = _hf_logits(hf_model, tokens, mask)
  ours = np.asarray(_logits(model, jnp.asarray(tokens), jnp.asarray(mask)))
  assert np.abs(theirs).max() > 1.0  # not a comparison of near-zero logits
  assert np.abs(ours - theirs)[valid].max() <= 1e-4
  # The test can fail: the same weights with unscaled RoPE are far off.
  model.config = cfg.replace(rope_scaling=None)
  unscaled = np.asarray(_logits(model, jnp.asarray(tokens), jnp.asarray(mask)))
  assert np.abs(unscaled - theirs)[valid].max() > 1e-2
  # rlpost's save writes rope_parameters that transformers reads back identically.
  model.config = cfg
  hf.save_hf_checkpoint(model, cfg, tmp_path / "out")
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(
      str(tmp_path / "out"), dtype=torch.float32).eval()
  assert reloaded.config.rope_parameters == {**rope, "rope_theta": 5e5}
  np.testing.assert_allclose(_hf_logits(reloaded, tokens, mask)[valid], theirs[valid], atol=1e-5)
  assert hf.load_hf_checkpoint(tmp_path / "out")[1] == cfg
