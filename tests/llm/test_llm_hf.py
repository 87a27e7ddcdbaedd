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


def test_parse_shard_size_matches_transformers_units():
  assert hf.parse_shard_size(123) == 123
  assert hf.parse_shard_size("5MB") == 5 * 10**6
  assert hf.parse_shard_size(" 2gb ") == 2 * 10**9
  assert hf.parse_shard_size("1.5GB") == 1_500_000_000
  assert hf.parse_shard_size("64KiB") == 64 * 1024
  from huggingface_hub.serialization import _base  # pylint: disable=g-import-not-at-top
  for text in ("5MB", "2GB", "1.5GB", "20KB", "1TB"):
    assert hf.parse_shard_size(text) == _base.parse_size_to_int(text)


@pytest.mark.parametrize("bad", [0, -5, True, 1.5, "abc", "5XB", "MB", "nanGB", "-1KB", None])
def test_bad_max_shard_size_raises_naming_the_argument(bad):
  with pytest.raises(ValueError, match="max_shard_size"):
    hf.parse_shard_size(bad)


_SMALL = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)


@pytest.fixture(scope="module")
def small_model():
  """A random Decoder filled from numpy (no init_model compile: these tests only save it)."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  model = nnx.eval_shape(lambda: model_lib.Decoder(_SMALL, rngs=nnx.Rngs(0)))
  rng = np.random.default_rng(4)
  for _, variable, _ in hf.param_table(model):
    variable.value = jnp.asarray(rng.normal(size=variable.value.shape), jnp.float32)
  return model


def test_save_with_bad_max_shard_size_writes_nothing(small_model, tmp_path):
  model, cfg = small_model, _SMALL
  for bad in ("5XB", 0):
    with pytest.raises(ValueError, match="max_shard_size"):
      hf.save_hf_checkpoint(model, cfg, tmp_path / "out", max_shard_size=bad)
  assert not list(tmp_path.iterdir())


def test_sharded_save_loads_in_rlpost_and_transformers(hf_ckpt, tmp_path):
  kind, hf_model, path = hf_ckpt
  model, cfg, _ = hf.load_hf_checkpoint(path)
  out = hf.save_hf_checkpoint(model, cfg, tmp_path / "sharded", max_shard_size="20KB")
  index = json.loads((out / "model.safetensors.index.json").read_text())
  shards = sorted(set(index["weight_map"].values()))
  assert len(shards) >= 2 and not (out / "model.safetensors").exists()
  assert shards == sorted(p.name for p in out.glob("*.safetensors"))
  assert shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
  names = [name for name, _, _ in hf.param_table(model)]
  assert sorted(index["weight_map"]) == sorted(names)
  assert index["metadata"]["total_size"] == 4 * cfg.num_params()  # f32, tied counted once
  nbytes = {name: np.asarray(v.value).nbytes for name, v, _ in hf.param_table(model)}
  for shard in shards:  # each shard is <= 20KB unless it holds a single larger tensor
    members = [n for n, f in index["weight_map"].items() if f == shard]
    assert sum(nbytes[n] for n in members) <= 20_000 or len(members) == 1
  tokens, mask = _batch()
  valid = mask.astype(bool)
  model2, cfg2, _ = hf.load_hf_checkpoint(out)
  assert cfg2 == cfg
  np.testing.assert_array_equal(np.asarray(_logits(model2, jnp.asarray(tokens), jnp.asarray(mask))),
                                np.asarray(_logits(model, jnp.asarray(tokens), jnp.asarray(mask))))
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
  reloaded.config._attn_implementation = "eager"  # pylint: disable=protected-access
  np.testing.assert_array_equal(_hf_logits(reloaded.eval(), tokens, mask)[valid],
                                _hf_logits(hf_model, tokens, mask)[valid])
  # Default: one file, no index (unchanged behaviour).
  single = hf.save_hf_checkpoint(model, cfg, tmp_path / "single")
  assert sorted(p.name for p in single.iterdir()) == ["config.json", "model.safetensors"]
  assert kind in ("qwen2", "llama")


def test_save_is_atomic_and_replaces_stale_weights(small_model, tmp_path, monkeypatch):
  import safetensors.flax  # pylint: disable=g-import-not-at-top
  model, cfg = small_model, _SMALL
  real_save = safetensors.flax.save_file
  calls = []

  def failing_save(tensors, filename, metadata=None):
    calls.append(filename)
    if len(calls) == 2:  # the second shard fails after the first one was written
      raise OSError("disk full")
    real_save(tensors, filename, metadata=metadata)

  # 1. A failed save into a new directory leaves nothing behind.
  monkeypatch.setattr(safetensors.flax, "save_file", failing_save)
  with pytest.raises(OSError, match="disk full"):
    hf.save_hf_checkpoint(model, cfg, tmp_path / "new", max_shard_size="10KB")
  assert not list(tmp_path.iterdir())
  # 2. Into an existing workdir: stale shards/index go, other files stay, a failure changes nothing.
  monkeypatch.setattr(safetensors.flax, "save_file", real_save)
  work = tmp_path / "work"
  work.mkdir()
  (work / "notes.txt").write_text("keep me")
  hf.save_hf_checkpoint(model, cfg, work, max_shard_size="10KB")
  sharded = sorted(p.name for p in work.iterdir())
  assert "model.safetensors.index.json" in sharded and len(sharded) > 4
  calls.clear()
  monkeypatch.setattr(safetensors.flax, "save_file", failing_save)
  with pytest.raises(OSError, match="disk full"):
    hf.save_hf_checkpoint(model, cfg, work, max_shard_size="5KB")
  assert sorted(p.name for p in work.iterdir()) == sharded
  monkeypatch.setattr(safetensors.flax, "save_file", real_save)
  hf.save_hf_checkpoint(model, cfg, work)
  assert sorted(p.name for p in work.iterdir()) == ["config.json", "model.safetensors",
                                                    "notes.txt"]
  reloaded, _, _ = hf.load_hf_checkpoint(work)
  np.testing.assert_array_equal(np.asarray(reloaded.lm_head.kernel.value),
                                np.asarray(model.lm_head.kernel.value))
  # 3. The staged directory gets normal permissions, not mkdtemp's 0700.
  fresh = hf.save_hf_checkpoint(model, cfg, tmp_path / "fresh")
  assert fresh.stat().st_mode & 0o777 == (tmp_path / "work").stat().st_mode & 0o777
