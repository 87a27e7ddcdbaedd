"""Bridge between HF Llama/Qwen2 safetensors checkpoints and the rlpost NNX `Decoder`.

Nothing is downloaded: `load_hf_checkpoint` reads a local directory (or one of its .safetensors
files) written by `transformers` `save_pretrained`, and `save_hf_checkpoint` writes the same layout
(config.json + model.safetensors) so that `AutoModelForCausalLM.from_pretrained(out_dir)` loads a
policy trained in rlpost.

HF stores Linear weights as [out, in]; rlpost's `Dense.kernel` is [in, out], so projections are
transposed on the way in and out. Embeddings, norms and biases map one to one.
"""
from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Optional

import jax
import jax.numpy as jnp
from flax import nnx

from rlpost.llm.config import ModelConfig, from_hf_config
from rlpost.llm.model import Decoder

# Tensors that HF checkpoints may carry but that rlpost recomputes.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def param_table(model: Decoder) -> list[tuple[str, nnx.Variable, bool]]:
  """(HF tensor name, rlpost variable, transpose?) for every weight of `model`."""
  entries = [("model.embed_tokens.weight", model.embed_tokens, False)]
  for i, layer in enumerate(model.layers):
    prefix = f"model.layers.{i}."
    entries.append((prefix + "input_layernorm.weight", layer.input_layernorm.weight, False))
    entries.append((prefix + "post_attention_layernorm.weight",
                    layer.post_attention_layernorm.weight, False))
    for owner, group, names in ((layer.self_attn, "self_attn",
                                 ("q_proj", "k_proj", "v_proj", "o_proj")),
                                (layer.mlp, "mlp", ("gate_proj", "up_proj", "down_proj"))):
      for name in names:
        dense = getattr(owner, name)
        if dense.lora_a is not None:
          raise ValueError(f"{prefix}{group}.{name} carries a LoRA adapter; call "
                           "rlpost.llm.lora.merge_lora(model) before saving")
        entries.append((f"{prefix}{group}.{name}.weight", dense.kernel, True))
        if dense.bias is not None:
          entries.append((f"{prefix}{group}.{name}.bias", dense.bias, False))
  entries.append(("model.norm.weight", model.norm.weight, False))
  if model.lm_head is not None:
    entries.append(("lm_head.weight", model.lm_head.kernel, True))
  return entries


def _safetensor_files(directory: pathlib.Path) -> list[pathlib.Path]:
  index = directory / "model.safetensors.index.json"
  if index.exists():
    weight_map = json.loads(index.read_text())["weight_map"]
    return [directory / f for f in sorted(set(weight_map.values()))]
  files = sorted(directory.glob("*.safetensors"))
  if not files:
    raise FileNotFoundError(f"no *.safetensors (or model.safetensors.index.json) in {directory}")
  return files


def read_safetensors(directory: str | os.PathLike) -> dict[str, jax.Array]:
  """All tensors of a (possibly sharded) HF checkpoint directory, as jax arrays on host."""
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  tensors = {}
  for path in _safetensor_files(pathlib.Path(directory)):
    with safe_open(str(path), framework="flax") as f:
      for name in f.keys():
        tensors[name] = f.get_tensor(name)
  return tensors


def load_hf_checkpoint(
    path_or_dir: str | os.PathLike, *, param_dtype: Optional[str] = None,
    dtype: Optional[str] = None, load_tokenizer: bool = True,
) -> tuple[Decoder, ModelConfig, Any]:
  """Loads an HF Llama/Qwen2 checkpoint into a `Decoder`.

  Args:
    path_or_dir: checkpoint directory, or a file inside it (e.g. model.safetensors).
    param_dtype: "float32" | "bfloat16"; defaults to the checkpoint's stored dtype (bf16 stays
      bf16, everything else becomes f32).
    dtype: compute dtype; defaults to param_dtype.
    load_tokenizer: also return `AutoTokenizer.from_pretrained(dir)` when tokenizer files exist.

  Returns:
    (model, config, tokenizer or None).

  Raises:
    ValueError: naming the tensor, when one is missing, has the wrong shape, or is unexpected.
  """
  directory = pathlib.Path(path_or_dir)
  if directory.is_file():
    directory = directory.parent
  hf_dict = json.loads((directory / "config.json").read_text())
  tensors = read_safetensors(directory)
  if param_dtype is None:
    stored = {str(v.dtype) for v in tensors.values()}
    param_dtype = "bfloat16" if stored == {"bfloat16"} else "float32"
  config = from_hf_config(hf_dict, param_dtype=param_dtype, dtype=dtype or param_dtype)
  # Build the module tree without allocating random weights, then fill every variable.
  model = nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0)))
  expected = set()
  for name, variable, transpose in param_table(model):
    expected.add(name)
    if name not in tensors:
      raise ValueError(f"checkpoint {directory} is missing tensor {name!r}")
    value = tensors[name]
    if transpose:
      value = value.T
    if tuple(value.shape) != tuple(variable.value.shape):
      raise ValueError(f"tensor {name!r} has shape {tuple(tensors[name].shape)}, expected "
                       f"{tuple(variable.value.shape)[::-1] if transpose else variable.value.shape}"
                       f" for this config")
    variable.value = jnp.asarray(value, dtype=config.jnp_param_dtype)
  unexpected = [n for n in tensors if n not in expected and not n.endswith(_IGNORED_SUFFIXES)
                and not (n == "lm_head.weight" and config.tie_word_embeddings)]
  if unexpected:
    raise ValueError(f"checkpoint {directory} has unexpected tensors {sorted(unexpected)[:8]}")
  tokenizer = None
  if load_tokenizer and any((directory / f).exists() for f in _TOKENIZER_FILES):
    import transformers  # pylint: disable=g-import-not-at-top
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory))
  return model, config, tokenizer


def save_hf_checkpoint(model: Decoder, config: ModelConfig, out_dir: str | os.PathLike, *,
                       tokenizer: Any = None) -> pathlib.Path:
  """Writes config.json + model.safetensors (HF layout, torch-loadable) to `out_dir`.

  LoRA adapters must be merged first (`rlpost.llm.lora.merge_lora`). With tied embeddings no
  lm_head.weight is written (transformers re-ties it on load).
  """
  from safetensors.flax import save_file  # pylint: disable=g-import-not-at-top
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  tensors = {}
  for name, variable, transpose in param_table(model):
    value = jnp.asarray(variable.value, dtype=config.jnp_param_dtype)
    tensors[name] = value.T if transpose else value
  save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
  (out / "config.json").write_text(json.dumps(config.to_hf_dict(), indent=2))
  if tokenizer is not None:
    tokenizer.save_pretrained(str(out))
  return out
