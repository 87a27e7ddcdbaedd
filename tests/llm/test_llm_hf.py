"""Parity of the rlpost decoder, HF bridge and sampler with transformers' torch Qwen2/Llama."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlpost.llm import hf
from rlpost.llm import model as model_lib
from rlpost.llm import sampler as sampler_lib
from rlpost.llm.config import ModelConfig, from_hf_config

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.torch
_logits = jax.jit(model_lib.logits)

_COMMON = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
               rms_norm_eps=1e-6, initializer_range=0.2)


def _build_hf(kind: str):
  torch.manual_seed(0 if kind == "qwen2" else 1)
  if kind == "qwen2":
    cfg = transformers.Qwen2Config(**_COMMON, tie_word_embeddings=False, rope_theta=1e6)
    model = transformers.Qwen2ForCausalLM(cfg)
  else:
    cfg = transformers.LlamaConfig(**_COMMON, tie_word_embeddings=True, rope_theta=5e5)
    model = transformers.LlamaForCausalLM(cfg)
  with torch.no_grad():  # Non-trivial norms and biases so the mapping is really checked.
    for name, p in model.named_parameters():
      if name.endswith("norm.weight"):
        p.copy_(1.0 + 0.3 * torch.randn_like(p))
      elif name.endswith("bias"):
        p.copy_(0.3 * torch.randn_like(p))
  model.config._attn_implementation = "eager"  # pylint: disable=protected-access
  return model.float().eval()


@pytest.fixture(scope="module", params=["qwen2", "llama"])
def hf_ckpt(request, tmp_path_factory):
  model = _build_hf(request.param)
  out = tmp_path_factory.mktemp(f"hf_{request.param}")
  model.save_pretrained(str(out))
  return request.param, model, out


def _batch():
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, 128, size=(3, 12))
  mask = np.ones((3, 12), np.int64)
  mask[1, :4] = 0  # left padding
  mask[2, :9] = 0
  tokens[mask == 0] = 0
  return tokens, mask


def _hf_logits(model, tokens, mask):
  pos = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
  with torch.no_grad():
    out = model(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask),
                position_ids=torch.tensor(pos))
  return out.logits.numpy()


def test_config_from_hf(hf_ckpt):
  kind, model, _ = hf_ckpt
  cfg = from_hf_config(model.config)
  assert cfg.model_type == kind
  assert cfg.attention_bias == (kind == "qwen2")
  assert cfg.rope_theta == (1e6 if kind == "qwen2" else 5e5)
  assert cfg.tie_word_embeddings == (kind == "llama")
  assert cfg.num_key_value_heads == 2


def test_logit_parity_left_padded(hf_ckpt):
  _, hf_model, path = hf_ckpt
  model, cfg, tok = hf.load_hf_checkpoint(path)
  assert tok is None
  assert cfg.param_dtype == "float32"
  tokens, mask = _batch()
  ours = np.asarray(_logits(model, jnp.asarray(tokens), jnp.asarray(mask)))
  theirs = _hf_logits(hf_model, tokens, mask)
  valid = mask.astype(bool)
  assert np.abs(ours - theirs)[valid].max() <= 1e-4
  assert np.abs(theirs).max() > 1.0  # the comparison is not between near-zero logits
  # Left padding does not change the logits of the real tokens.
  solo = np.asarray(_logits(model, jnp.asarray(tokens[2:, 9:]),
                                     jnp.ones((1, 3), jnp.int32)))
  np.testing.assert_allclose(ours[2, 9:], solo[0], atol=1e-5)


def test_save_reload_transformers(hf_ckpt, tmp_path):
  _, hf_model, path = hf_ckpt
  model, cfg, _ = hf.load_hf_checkpoint(path / "model.safetensors")
  hf.save_hf_checkpoint(model, cfg, tmp_path / "out")
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(
      str(tmp_path / "out"), dtype=torch.float32).eval()
  tokens, mask = _batch()
  valid = mask.astype(bool)  # HF's outputs at fully masked (padding) rows are arbitrary
  np.testing.assert_allclose(_hf_logits(reloaded, tokens, mask)[valid],
                             _hf_logits(hf_model, tokens, mask)[valid], atol=1e-5)
  model2, cfg2, _ = hf.load_hf_checkpoint(tmp_path / "out")
  assert cfg2 == cfg
  np.testing.assert_array_equal(np.asarray(model2.embed_tokens.value),
                                np.asarray(model.embed_tokens.value))


def test_missing_and_misshaped_tensors_are_named(hf_ckpt, tmp_path):
  from safetensors.numpy import load_file, save_file  # pylint: disable=g-import-not-at-top
  _, _, path = hf_ckpt
  tensors = load_file(str(path / "model.safetensors"))
  cfg_text = (path / "config.json").read_text()
  bad = tmp_path / "missing"
  bad.mkdir()
  (bad / "config.json").write_text(cfg_text)
  name = "model.layers.1.mlp.up_proj.weight"
  save_file({k: v for k, v in tensors.items() if k != name}, str(bad / "model.safetensors"))
  with pytest.raises(ValueError, match="model.layers.1.mlp.up_proj.weight"):
    hf.load_hf_checkpoint(bad)
  wrong = tmp_path / "shape"
  wrong.mkdir()
  (wrong / "config.json").write_text(cfg_text)
  tensors = dict(tensors)
  tensors["model.norm.weight"] = np.ones((7,), np.float32)
  save_file(tensors, str(wrong / "model.safetensors"))
  with pytest.raises(ValueError, match="model.norm.weight"):
    hf.load_hf_checkpoint(wrong)


def test_sharded_checkpoint(tmp_path):
  hf_model = _build_hf("qwen2")
  hf_model.save_pretrained(str(tmp_path), max_shard_size="100KB")
  assert (tmp_path / "model.safetensors.index.json").exists()
  assert len(json.loads((tmp_path / "model.safetensors.index.json").read_text())
             ["weight_map"]) > 1
  model, _, _ = hf.load_hf_checkpoint(tmp_path)
  tokens, mask = _batch()
  ours = np.asarray(_logits(model, jnp.asarray(tokens), jnp.asarray(mask)))
  assert np.abs(ours - _hf_logits(hf_model, tokens, mask))[mask.astype(bool)].max() <= 1e-4


@pytest.mark.parametrize(
    "hf_ckpt", ["qwen2", "llama"], indirect=True)
def test_greedy_parity_with_hf_generate(hf_ckpt):
  _, hf_model, path = hf_ckpt
  model, _, _ = hf.load_hf_checkpoint(path)
  tokens, mask = _batch()
  with torch.no_grad():
    expected = hf_model.generate(
        input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask), do_sample=False,
        max_new_tokens=32, min_new_tokens=32, pad_token_id=0, eos_token_id=None).numpy()
  expected = expected[:, tokens.shape[1]:]
  sampler = sampler_lib.Sampler(model)
  out = sampler.generate(jnp.asarray(tokens), jnp.asarray(mask), max_new_tokens=32,
                         temperature=0.0)
  np.testing.assert_array_equal(np.asarray(out.response_tokens)[:, :32], expected)


def test_bf16_roundtrip(tmp_path):
  cfg = ModelConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=1,
                    num_attention_heads=4, num_key_value_heads=2, param_dtype="bfloat16",
                    dtype="bfloat16")
  model = model_lib.init_model(cfg, seed=3)
  hf.save_hf_checkpoint(model, cfg, tmp_path)
  reloaded, cfg2, _ = hf.load_hf_checkpoint(tmp_path)
  assert cfg2.param_dtype == "bfloat16"
  assert reloaded.layers[0].mlp.up_proj.kernel.value.dtype == jnp.bfloat16
  torch_model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path),
                                                                  dtype=torch.float32)
  w = torch_model.model.layers[0].mlp.up_proj.weight.detach().numpy()
  np.testing.assert_array_equal(
      w.T, np.asarray(model.layers[0].mlp.up_proj.kernel.value.astype(jnp.float32)))
