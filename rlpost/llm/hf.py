"""Bridge between HF Llama/Qwen2 safetensors checkpoints and the rlpost NNX `Decoder`.

Nothing is downloaded: `load_hf_checkpoint` reads a local directory (or one of its .safetensors
files) written by `transformers` `save_pretrained`, and `save_hf_checkpoint` writes the same
layout (config.json + model.safetensors, or shards + model.safetensors.index.json) so that
`AutoModelForCausalLM.from_pretrained(out_dir)` loads a policy trained in rlpost.

HF stores Linear weights as [out, in]; rlpost's `Dense.kernel` is [in, out], so projections are
transposed on the way in and out. Embeddings, norms and biases map one to one.
"""
from __future__ import annotations

import json
import math
import os
import pathlib
import re
import shutil
import tempfile
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


_SIZE_UNITS = {"TB": 10**12, "GB": 10**9, "MB": 10**6, "KB": 10**3,
               "TIB": 2**40, "GIB": 2**30, "MIB": 2**20, "KIB": 2**10}
_SHARD_RE = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")
_INDEX_NAME = "model.safetensors.index.json"
_SINGLE_NAME = "model.safetensors"


def parse_shard_size(max_shard_size: int | str) -> int:
  """Bytes of a `max_shard_size` given as an int or a string like "5MB", "2GB", "1.5GB", "64KiB".

  Same meaning as transformers 5.x `save_pretrained` (huggingface_hub `parse_size_to_int`):
  KB/MB/GB/TB are powers of 10, case-insensitive; the binary units KiB/MiB/GiB/TiB (accepted by
  transformers 4.x) are powers of 2.

  Raises:
    ValueError: naming `max_shard_size`, for a non-positive, non-integer or unparseable size.
  """
  if isinstance(max_shard_size, bool):
    raise ValueError(f"max_shard_size must be a positive int or a size string like '5GB', "
                     f"got {max_shard_size!r}")
  if isinstance(max_shard_size, int):
    size = max_shard_size
  elif isinstance(max_shard_size, str):
    text = max_shard_size.strip()
    upper = text.upper()
    unit = next((u for u in sorted(_SIZE_UNITS, key=len, reverse=True) if upper.endswith(u)),
                None)
    value = None
    if unit is not None:
      try:
        value = float(text[:-len(unit)].strip())
      except ValueError:
        pass
    if value is None or not math.isfinite(value):
      raise ValueError(f"max_shard_size={max_shard_size!r} is not a size; use an int (bytes) or "
                       "a number with a unit KB/MB/GB/TB or KiB/MiB/GiB/TiB, e.g. '5GB'")
    size = int(value * _SIZE_UNITS[unit])
  else:
    raise ValueError(f"max_shard_size must be a positive int or a size string like '5GB', "
                     f"got {max_shard_size!r}")
  if size <= 0:
    raise ValueError(f"max_shard_size must be > 0 bytes, got {max_shard_size!r}")
  return size


def _split_shards(tensors: dict[str, Any], max_bytes: Optional[int]) -> list[list[str]]:
  """Tensor names per shard, greedily in order (transformers' rule).

  A tensor larger than `max_bytes` gets a shard of its own; otherwise a new shard starts when the
  next tensor would push the current one past `max_bytes`.
  """
  if max_bytes is None:
    return [list(tensors)]
  shards, current, current_bytes = [], [], 0
  for name, value in tensors.items():
    nbytes = value.size * value.dtype.itemsize
    if nbytes > max_bytes:
      shards.append([name])
      continue
    if current and current_bytes + nbytes > max_bytes:
      shards.append(current)
      current, current_bytes = [], 0
    current.append(name)
    current_bytes += nbytes
  if current:
    shards.append(current)
  return shards


def _write_checkpoint_files(tensors: dict[str, Any], config: ModelConfig, directory: pathlib.Path,
                            max_bytes: Optional[int], tokenizer: Any) -> list[str]:
  """Writes the checkpoint into `directory`; returns the weight/index file names written."""
  from safetensors.flax import save_file  # pylint: disable=g-import-not-at-top
  shards = _split_shards(tensors, max_bytes)
  written = []
  if len(shards) == 1:
    save_file({n: tensors[n] for n in shards[0]}, str(directory / _SINGLE_NAME),
              metadata={"format": "pt"})
    written.append(_SINGLE_NAME)
  else:
    weight_map = {}
    for i, names in enumerate(shards):
      filename = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
      save_file({n: tensors[n] for n in names}, str(directory / filename),
                metadata={"format": "pt"})
      weight_map.update({n: filename for n in names})
      written.append(filename)
    index = {"metadata": {
        "total_size": int(sum(v.size * v.dtype.itemsize for v in tensors.values())),
        "total_parameters": int(sum(v.size for v in tensors.values()))},
             "weight_map": weight_map}
    (directory / _INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    written.append(_INDEX_NAME)
  (directory / "config.json").write_text(json.dumps(config.to_hf_dict(), indent=2))
  if tokenizer is not None:
    tokenizer.save_pretrained(str(directory))
  return written


def save_hf_checkpoint(model: Decoder, config: ModelConfig, out_dir: str | os.PathLike, *,
                       tokenizer: Any = None,
                       max_shard_size: Optional[int | str] = None) -> pathlib.Path:
  """Writes config.json + safetensors weights (HF layout, torch-loadable) to `out_dir`.

  LoRA adapters must be merged first (`rlpost.llm.lora.merge_lora`). With tied embeddings no
  lm_head.weight is written (transformers re-ties it on load).

  Sharding: with `max_shard_size` None (default) all weights go to model.safetensors. Otherwise
  the tensors (in `param_table` order) are split greedily as transformers does, and when that
  gives more than one shard they are written as model-0000i-of-0000N.safetensors plus
  model.safetensors.index.json ({"metadata": {"total_size", "total_parameters"}, "weight_map"}).

  Atomicity: everything is first written into a temporary directory on the same filesystem; a
  failure there removes it and leaves `out_dir` as it was (not even created). A new or empty
  `out_dir` then appears with a single directory rename (all or nothing). An existing non-empty
  `out_dir` (e.g. a workdir holding other files) gets each file moved in with an atomic rename,
  weights before the index and config.json, and stale model.safetensors / shard / index files of
  an earlier save removed (as transformers does), so other files there are kept.

  Args:
    model: the decoder to save.
    config: its config (written as config.json via `ModelConfig.to_hf_dict`).
    out_dir: target directory.
    tokenizer: optional HF tokenizer, saved with `save_pretrained` into the same directory.
    max_shard_size: None, or the largest shard in bytes, as an int or a string like "5MB" / "2GB"
      (see `parse_shard_size`). A single tensor larger than that gets a shard of its own.

  Returns:
    `out_dir` as a Path.

  Raises:
    ValueError: naming `max_shard_size` when it is not a valid size.
  """
  max_bytes = None if max_shard_size is None else parse_shard_size(max_shard_size)
  out = pathlib.Path(out_dir)
  tensors = {}
  for name, variable, transpose in param_table(model):
    value = jnp.asarray(variable.value, dtype=config.jnp_param_dtype)
    tensors[name] = value.T if transpose else value
  fresh = not out.exists() or (out.is_dir() and not any(out.iterdir()))
  stage_parent = out.parent if fresh else out
  stage_parent.mkdir(parents=True, exist_ok=True)
  stage = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=stage_parent))
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(stage, 0o777 & ~umask)  # mkdtemp makes it 0700; a renamed-in dir should not be
  try:
    written = _write_checkpoint_files(tensors, config, stage, max_bytes, tokenizer)
    if fresh:
      os.replace(stage, out)  # rename(2) may replace an empty directory
      return out
    weights = [n for n in written if n.endswith(".safetensors")]
    for stale in out.iterdir():
      is_weight = stale.name in (_SINGLE_NAME, _INDEX_NAME) or _SHARD_RE.fullmatch(stale.name)
      if is_weight and stale.is_file() and stale.name not in written:
        stale.unlink()
    later = [n for n in written if n not in weights] + ["config.json"]
    others = sorted(p.name for p in stage.iterdir() if p.name not in weights + later)
    for name in weights + others + later:
      os.replace(stage / name, out / name)
  finally:
    if stage.exists():
      shutil.rmtree(stage, ignore_errors=True)
  return out
