"""Shared pieces of the agent experiments: text SFT of a small solver, cached solvers, greedy
solving of free-form prompts, and the artefact writers.

The agents (PromptPG, Retroformer) prompt rlpost's own Flax policy with text that is not a plain
TabMWP prompt (in-context examples, previous attempts, reflections). These helpers take prompt /
target *strings*, so the batch layout is the one of `rlpost.llm.sft` (prompt left-padded to
`prompt_len`, target right-padded to `response_len`) and the jitted SFT step
(`rlpost.llm.sft.make_sft_step`) and sampler (`rlpost.llm.sampler.Sampler`) are reused as they are.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import pathlib
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

Log = Callable[[str], None]


# --- text batches --------------------------------------------------------------------------------


def encode_text(tokenizer, prompt: str,
                target: Optional[str] = None) -> tuple[list[int], list[int]]:
  """([<bos>] + prompt ids, target ids + [<eos>]); the target is empty when None."""
  p = [tokenizer.bos_token_id] + tokenizer.encode(prompt, add_special_tokens=False)
  t = [] if target is None else tokenizer.encode(target, add_special_tokens=False) + [
      tokenizer.eos_token_id]
  return p, t


def make_text_batch(tokenizer, prompts: Sequence[str], targets: Sequence[str], *, prompt_len: int,
                    response_len: int) -> dict[str, np.ndarray]:
  """tokens / attention_mask / loss_mask [B, prompt_len + response_len] for `make_sft_step`.

  Raises:
    ValueError: naming the row when a prompt or target does not fit.
  """
  pad = tokenizer.pad_token_id or 0
  b, length = len(prompts), prompt_len + response_len
  tokens = np.full((b, length), pad, np.int32)
  attn = np.zeros((b, length), np.int32)
  loss = np.zeros((b, length), np.int32)
  for i, (prompt, target) in enumerate(zip(prompts, targets)):
    p, t = encode_text(tokenizer, prompt, target)
    if len(p) > prompt_len:
      raise ValueError(f"row {i}: prompt has {len(p)} tokens > prompt_len={prompt_len}")
    if len(t) > response_len:
      raise ValueError(f"row {i}: target has {len(t)} tokens > max_new_tokens={response_len}")
    tokens[i, prompt_len - len(p):prompt_len] = p
    tokens[i, prompt_len:prompt_len + len(t)] = t
    attn[i, prompt_len - len(p):prompt_len + len(t)] = 1
    loss[i, prompt_len:prompt_len + len(t)] = 1
  return {"tokens": tokens, "attention_mask": attn, "loss_mask": loss}


# --- solver training and caching -----------------------------------------------------------------


def spec_hash(spec: Mapping[str, Any]) -> str:
  return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def train_text_solver(*, tokenizer, model_spec: Mapping[str, Any], batch_fn: Callable[[int], Any],
                      steps: int, learning_rate: float, seed: int, prompt_len: int,
                      response_len: int, init_dir: str = "", progress: bool = True,
                      desc: str = "solver SFT", log: Log = print):
  """SFT of a Decoder on (prompts, targets) = batch_fn(step); returns (model, config, losses).

  `model_spec` holds ModelConfig fields (vocab_size 0 = the tokenizer's size); with `init_dir`
  (an HF checkpoint) the weights start from it instead.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from rlpost.llm import sft as sft_lib  # pylint: disable=g-import-not-at-top
  from rlpost.llm import train as train_lib  # pylint: disable=g-import-not-at-top
  from rlpost.llm.config import ModelConfig  # pylint: disable=g-import-not-at-top
  from rlpost.llm.hf import load_hf_checkpoint  # pylint: disable=g-import-not-at-top
  from rlpost.llm.model import init_model  # pylint: disable=g-import-not-at-top
  if init_dir:
    model, config, _ = load_hf_checkpoint(init_dir, load_tokenizer=False)
  else:
    spec = dict(model_spec)
    spec["vocab_size"] = spec.get("vocab_size") or len(tokenizer)
    config = ModelConfig(**spec, tie_word_embeddings=True)
    model = init_model(config, seed=seed)
  if prompt_len + response_len > config.max_position_embeddings:
    raise ValueError(f"prompt_len + max_new_tokens = {prompt_len + response_len} exceeds the "
                     f"solver's max_position_embeddings={config.max_position_embeddings}")
  graphdef, params = nnx.split(model)
  opt = train_lib.make_optimizer(learning_rate=learning_rate, warmup_steps=min(20, steps // 10),
                                 total_steps=steps)
  state = train_lib.init_train_state(params, opt, seed=seed)
  step_fn = sft_lib.make_sft_step(graphdef, opt)
  losses = []
  bar = _bar(steps, desc) if progress else None
  for step in range(steps):
    prompts, targets = batch_fn(step)
    batch = make_text_batch(tokenizer, prompts, targets, prompt_len=prompt_len,
                            response_len=response_len)
    state, met = step_fn(state, batch)
    loss = float(met["loss"])
    train_lib.check_finite({"loss": loss}, phase=desc, step=step)
    losses.append(loss)
    if bar is not None:
      bar.update(1)
      bar.set_postfix(loss=f"{loss:.3f}")
  if bar is not None:
    bar.close()
  del jax
  return nnx.merge(graphdef, state["params"]), config, losses


def cached_solver(cache_dir: str | os.PathLike, spec: Mapping[str, Any],
                  train_fn: Callable[[], Any], *, log: Log = print):
  """Loads the solver trained with `spec` from `cache_dir/<hash>`, or trains and saves it.

  `train_fn() -> (model, config, losses)`. Returns (model, config, info) where info says whether
  it was cached and the training wall time / final loss.
  """
  from rlpost.llm.hf import load_hf_checkpoint  # pylint: disable=g-import-not-at-top
  from rlpost.llm.hf import save_hf_checkpoint  # pylint: disable=g-import-not-at-top
  directory = pathlib.Path(cache_dir) / spec_hash(spec)
  info_path = directory / "solver_info.json"
  if info_path.is_file() and (directory / "model.safetensors").is_file():
    info = json.loads(info_path.read_text())
    model, config, _ = load_hf_checkpoint(directory, load_tokenizer=False)
    log(f"loaded cached solver from {directory}")
    return model, config, {**info, "cached": True}
  t0 = time.perf_counter()
  model, config, losses = train_fn()
  wall = time.perf_counter() - t0
  save_hf_checkpoint(model, config, directory)
  tail = losses[-max(1, len(losses) // 10):] if losses else [float("nan")]
  info = {"spec": dict(spec), "train_wall_s": wall, "final_loss": float(np.mean(tail)),
          "steps": len(losses)}
  info_path.write_text(json.dumps(info, indent=2, default=str))
  return model, config, {**info, "cached": False}


# --- greedy solving ------------------------------------------------------------------------------


def generate_texts(sampler, params, tokenizer, prompts: Sequence[str], *, prompt_len: int,
                   max_new_tokens: int, batch_size: int, temperature: float = 0.0,
                   seed: int = 0) -> list[str]:
  """Responses to free-form prompts in fixed-size batches (the last one padded, so one compile).

  Raises:
    ValueError: naming the prompt index when a prompt is longer than prompt_len.
  """
  from rlpost.llm.sampler import left_pad  # pylint: disable=g-import-not-at-top
  from rlpost.llm.train import decode_responses  # pylint: disable=g-import-not-at-top
  if not prompts:
    return []
  sampler.set_params(params)
  encoded = []
  for i, text in enumerate(prompts):
    ids, _ = encode_text(tokenizer, text)
    if len(ids) > prompt_len:
      raise ValueError(f"prompt {i} has {len(ids)} tokens > prompt_len={prompt_len}")
    encoded.append(ids)
  pad, eos = tokenizer.pad_token_id or 0, tokenizer.eos_token_id
  out_texts = []
  for start in range(0, len(encoded), batch_size):
    chunk = list(range(start, min(start + batch_size, len(encoded))))
    idx = chunk + [chunk[-1]] * (batch_size - len(chunk))
    toks, mask = left_pad([encoded[i] for i in idx], pad_id=pad, length=prompt_len)
    out = sampler.generate(toks, mask, max_new_tokens=max_new_tokens, temperature=temperature,
                           stop_ids=(eos,), pad_id=pad, seed=seed + start)
    texts = decode_responses(tokenizer, np.asarray(out.response_tokens),
                             np.asarray(out.response_mask))
    out_texts.extend(texts[:len(chunk)])
  return out_texts


def correctness(texts: Sequence[str], records: Sequence[Any]) -> np.ndarray:
  """0/1 accuracy of each response against its record (rlpost.llm.tasks.accuracy_reward)."""
  from rlpost.llm.tasks import accuracy_reward  # pylint: disable=g-import-not-at-top
  return np.asarray([accuracy_reward(t, r) for t, r in zip(texts, records)], np.float32)


# --- config checks, progress and artefacts -------------------------------------------------------


def positive_int(value, name: str, *, allow_zero: bool = False) -> int:
  ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
  if not ok or value < (0 if allow_zero else 1):
    raise ValueError(f"config.{name} must be a {'non-negative' if allow_zero else 'positive'} "
                     f"int, got {value!r}")
  return int(value)


def positive_float(value, name: str, *, allow_zero: bool = False) -> float:
  ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool)
  if not ok or not math.isfinite(float(value)) or value < 0 or (value == 0 and not allow_zero):
    raise ValueError(f"config.{name} must be a {'non-negative' if allow_zero else 'positive'} "
                     f"finite number, got {value!r}")
  return float(value)


def _bar(total: int, desc: str):
  from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm(total=total, desc=desc, dynamic_ncols=True)


def progress_bar(total: int, desc: str, enabled: bool = True):
  return _bar(total, desc) if enabled else None


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  """Mean and sample std (ddof=1; 0 for a single value)."""
  v = np.asarray(values, np.float64)
  if v.size == 0:
    return float("nan"), float("nan")
  return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def write_summary(workdir: str | os.PathLike, summary: Mapping[str, Any]) -> pathlib.Path:
  path = pathlib.Path(workdir) / "summary.json"
  tmp = path.with_suffix(".tmp")
  tmp.write_text(json.dumps(summary, indent=2, default=float))
  os.replace(tmp, path)
  return path
