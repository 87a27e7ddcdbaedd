"""Shared pieces of the LLM trainers (SFT and RL): train state, optimizer, data stream, metrics
logging, the NaN/Inf guard, greedy evaluation and the curves plot.

Determinism (what makes a killed-and-resumed run bit-identical to an uninterrupted one):
  * the data order is a pure function of (seed, position): position `i` of the stream is
    element `i % N` of the permutation `default_rng([seed, i // N])` of the N-problem pool, and the
    train state carries the position (`data_pos`), so resuming mid-epoch or exactly at an epoch
    boundary continues with the next unseen problem (never "0 steps left in this epoch");
  * every random draw of step `s` uses `fold_in(key(rng), s)`, where `rng` is stored in the state;
  * checkpoints are restored bit-exactly (orbax) and the jitted programs are the same.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import pathlib
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rlpost.llm.tasks import accuracy_reward
from rlpost.llm.tasks import encode_example

TrainState = dict  # keys: params, opt_state, step, rng, data_pos, objective_state


# --- train state and optimizer -------------------------------------------------------------------


def make_optimizer(*, learning_rate: float, warmup_steps: int = 0, total_steps: int = 0,
                   weight_decay: float = 0.0, max_grad_norm: float = 1.0, b1: float = 0.9,
                   b2: float = 0.99) -> optax.GradientTransformation:
  """AdamW with global-norm clipping, linear warmup and (when total_steps > 0) cosine decay."""
  if not learning_rate > 0:
    raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")
  if warmup_steps < 0:
    raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps!r}")
  if total_steps and total_steps > warmup_steps:
    schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, max(warmup_steps, 1),
                                                  total_steps, end_value=0.1 * learning_rate)
  elif warmup_steps:
    schedule = optax.linear_schedule(0.0, learning_rate, warmup_steps)
  else:
    schedule = learning_rate
  parts = [optax.clip_by_global_norm(max_grad_norm)] if max_grad_norm else []
  parts.append(optax.adamw(schedule, b1=b1, b2=b2, weight_decay=weight_decay))
  return optax.chain(*parts)


def init_train_state(params: Any, optimizer: optax.GradientTransformation, *, seed: int,
                     objective_state: Any = None, data_pos: int = 0) -> TrainState:
  """A fresh train state (plain dict pytree, checkpointable as is).

  `params` are copied: the jitted steps donate the state, and the caller's arrays must survive.
  """
  params = jax.tree.map(jnp.copy, params)
  return {
      "params": params,
      "opt_state": optimizer.init(params),
      "step": jnp.zeros((), jnp.int32),
      "rng": jax.random.key_data(jax.random.key(seed)),
      "data_pos": jnp.asarray(data_pos, jnp.int32),
      "objective_state": objective_state,
  }


def step_key(state: TrainState) -> jax.Array:
  """The PRNG key of the state's current step: fold_in(key(rng), step)."""
  return jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), int(state["step"]))


# --- data stream ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _epoch_permutation(seed: int, epoch: int, size: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(size)


def stream_indices(seed: int, pool_size: int, start: int, count: int) -> np.ndarray:
  """Pool indices at stream positions [start, start + count) (reshuffled every epoch)."""
  if pool_size <= 0:
    raise ValueError(f"the training pool is empty (pool_size={pool_size})")
  out = np.empty((count,), np.int64)
  for i, pos in enumerate(range(start, start + count)):
    epoch, offset = divmod(pos, pool_size)
    out[i] = _epoch_permutation(int(seed), epoch, pool_size)[offset]
  return out


# --- metrics -------------------------------------------------------------------------------------


def check_finite(metrics: Mapping[str, Any], *, phase: str, step: int) -> None:
  """NaN/Inf guard: raises FloatingPointError naming the first non-finite scalar metric."""
  for name, value in metrics.items():
    if isinstance(value, (bool, str)) or value is None:
      continue
    v = float(value)
    if not math.isfinite(v):
      raise FloatingPointError(
          f"NaN/Inf guard: metric {name!r} is {v} at {phase} step {step}; stopping (the last "
          f"finite checkpoint is kept; lower the learning rate or check the rewards)")


def to_floats(metrics: Mapping[str, Any]) -> dict[str, float]:
  host = jax.device_get(dict(metrics))
  return {k: float(np.asarray(v)) for k, v in host.items()}


class MetricsWriter:
  """metrics.jsonl (one JSON object per line) plus TensorBoard events (tensorboardX).

  On resume, `truncate(keep)` first drops the records a killed run wrote after its last
  checkpoint, so the log matches an uninterrupted run.
  """

  def __init__(self, workdir: str | os.PathLike, *, tensorboard: bool = True):
    self.path = pathlib.Path(workdir) / "metrics.jsonl"
    self._tb = None
    if tensorboard:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(str(pathlib.Path(workdir) / "tensorboard"))

  def records(self) -> list[dict[str, Any]]:
    if not self.path.exists():
      return []
    out = []
    for line in self.path.read_text().splitlines():
      try:
        out.append(json.loads(line))
      except json.JSONDecodeError:
        break  # a line cut by a kill: everything after it is stale too
    return out

  def truncate(self, keep: Callable[[dict[str, Any]], bool]) -> None:
    kept = [r for r in self.records() if keep(r)]
    tmp = self.path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
    os.replace(tmp, self.path)

  def write(self, record: Mapping[str, Any], *, tb_step: Optional[int] = None) -> None:
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
             for k, v in record.items()}
    with self.path.open("a") as f:
      f.write(json.dumps(clean) + "\n")
    if self._tb is not None and tb_step is not None:
      phase = record.get("phase", "train")
      for k, v in record.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step":
          self._tb.add_scalar(f"{phase}/{k}", v, tb_step)

  def close(self) -> None:
    if self._tb is not None:
      self._tb.flush()
      self._tb.close()


# --- prompts and evaluation ----------------------------------------------------------------------


def encode_prompts(tokenizer, records: Sequence[Any], *, max_len: int) -> list[list[int]]:
  """[<bos>] + prompt ids per record; raises naming the record when longer than max_len."""
  out = []
  for r in records:
    ids, _ = encode_example(tokenizer, r, add_eos=False)
    if len(ids) > max_len:
      raise ValueError(f"prompt of record {r.pid!r} has {len(ids)} tokens > prompt_len={max_len}; "
                       f"raise config.prompt_len or use an easier task")
    out.append(ids)
  return out


def decode_responses(tokenizer, response_tokens: np.ndarray, response_mask: np.ndarray,
                     ) -> list[str]:
  rows = [t[m.astype(bool)].tolist() for t, m in zip(response_tokens, response_mask)]
  return tokenizer.batch_decode(rows, skip_special_tokens=True)


def accuracy_stats(correct: Sequence[float]) -> dict[str, float]:
  """Mean and standard error sqrt(p (1 - p) / n) of 0/1 outcomes."""
  c = np.asarray(correct, np.float64)
  n = max(len(c), 1)
  p = float(c.mean()) if len(c) else 0.0
  return {"accuracy": p, "accuracy_stderr": math.sqrt(max(p * (1 - p), 0.0) / n), "n": len(c)}


def evaluate(sampler, params: Any, tokenizer, records: Sequence[Any], *, prompt_len: int,
             max_new_tokens: int, batch_size: int = 250, shards: int = 2) -> dict[str, float]:
  """Greedy-decoding accuracy (mean, stderr) of the policy `params` on `records`.

  Batches have a fixed size (the last is padded by repeating records and the padding is
  dropped), so evaluation compiles once. Each batch is decoded as `shards` concurrent chunks
  (`Sampler.generate(shards=...)`; greedy, so the chunking changes no token beyond float
  rounding).
  """
  sampler.set_params(params)
  prompts = encode_prompts(tokenizer, records, max_len=prompt_len)
  eos = tokenizer.eos_token_id
  pad = tokenizer.pad_token_id or 0
  correct, lengths = [], []
  from rlpost.llm.sampler import left_pad  # pylint: disable=g-import-not-at-top
  for start in range(0, len(records), batch_size):
    chunk = list(range(start, min(start + batch_size, len(records))))
    idx = chunk + [chunk[-1]] * (batch_size - len(chunk))
    toks, mask = left_pad([prompts[i] for i in idx], pad_id=pad, length=prompt_len)
    out = sampler.generate(toks, mask, max_new_tokens=max_new_tokens, temperature=0.0,
                           stop_ids=(eos,), pad_id=pad, seed=0, shards=shards)
    rt, rm = np.asarray(out.response_tokens), np.asarray(out.response_mask)
    texts = decode_responses(tokenizer, rt, rm)
    for j, i in enumerate(chunk):
      correct.append(accuracy_reward(texts[j], records[i]))
      lengths.append(int(rm[j].sum()))
  stats = accuracy_stats(correct)
  stats["response_len_mean"] = float(np.mean(lengths)) if lengths else 0.0
  return stats


# --- plots ---------------------------------------------------------------------------------------


def plot_curves(records: Iterable[Mapping[str, Any]], path: str | os.PathLike, *,
                title: str = "") -> None:
  """curves.png: accuracy and reward against step (train phases), held-out evals as markers."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  records = list(records)
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  for phase, style in (("sft", "-"), ("rl", "-"), ("control", "--")):
    rows = [r for r in records if r.get("phase") == phase]
    if not rows:
      continue
    steps = [r["step"] for r in rows]
    if phase == "rl":
      axes[0].plot(steps, [r.get("accuracy") for r in rows], style, label="rl train accuracy")
      axes[1].plot(steps, [r.get("reward_mean") for r in rows], style, label="rl reward mean")
    else:
      axes[2].plot(steps, [r.get("loss") for r in rows], style, label=f"{phase} loss")
  evals = [r for r in records if r.get("phase") == "eval"]
  for name in sorted({r.get("policy") for r in evals}):
    rows = [r for r in evals if r.get("policy") == name]
    axes[0].errorbar([r["step"] for r in rows], [r["accuracy"] for r in rows],
                     yerr=[r["accuracy_stderr"] for r in rows], fmt="o", capsize=3,
                     label=f"held-out: {name}")
  axes[0].set(xlabel="RL step", ylabel="accuracy", title="accuracy")
  axes[1].set(xlabel="RL step", ylabel="reward", title="reward")
  axes[2].set(xlabel="step", ylabel="cross-entropy", title="SFT loss")
  for ax in axes:
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=8)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)


# --- the experiment: SFT warm-start, RL, evaluation, control, artefacts --------------------------

# Config fields whose change makes a workdir's checkpoints or data stream unusable.
SHAPE_FIELDS = ("model", "prompt_len", "tokenizer_dir", "init_checkpoint", "objective",
                "task.level", "task.families", "task.train_size", "sft.batch_size",
                "rl.batch_size", "rl.group_size", "rl.max_new_tokens")


def _as_dict(config) -> dict[str, Any]:
  return config.to_dict() if hasattr(config, "to_dict") else dict(config)


def _positive_int(value, name: str, *, allow_zero: bool = False) -> int:
  ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
  if not ok or value < (0 if allow_zero else 1):
    raise ValueError(f"config.{name} must be a {'non-negative' if allow_zero else 'positive'} "
                     f"int, got {value!r}")
  return int(value)


def build(config) -> dict[str, Any]:
  """Validates `config` and builds everything a run needs, writing nothing to disk.

  Returns a dict: tokenizer, model_config, graphdef, params, objective, rl_config, pool,
  eval_set, reward_fn. Errors name the offending config field.
  """
  from rlpost.llm import rl as rl_lib  # pylint: disable=g-import-not-at-top
  from rlpost.llm.config import ModelConfig  # pylint: disable=g-import-not-at-top
  from rlpost.llm.model import init_model  # pylint: disable=g-import-not-at-top
  from rlpost.llm import tasks  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  c = config
  _positive_int(c.seed, "seed", allow_zero=True)
  prompt_len = _positive_int(c.prompt_len, "prompt_len")
  from rlpost.llm.sampler import bucket_size  # pylint: disable=g-import-not-at-top
  if bucket_size(prompt_len) != prompt_len:
    raise ValueError(f"config.prompt_len={prompt_len} must be a sampler prompt bucket (a power of "
                     f"two >= 16, e.g. {bucket_size(prompt_len)})")
  for name in ("sft.steps", "rl.steps", "rl.eval_every", "checkpoint_every"):
    section, _, field = name.rpartition(".")
    _positive_int((c[section] if section else c)[field], name, allow_zero=True)
  _positive_int(c.sft.batch_size, "sft.batch_size")
  from rlpost.llm import sft as sft_lib  # pylint: disable=g-import-not-at-top
  sft_lib.check_sft_loss(c.sft.get("loss", "xent"),
                         **{k: c.sft[k] for k in ("otr_num_samples", "otr_temperature",
                                                  "otr_wrong_reward") if k in c.sft})
  _positive_int(c.eval.size, "eval.size")
  _positive_int(c.eval.batch_size, "eval.batch_size")
  if c.eval.split not in ("train", "dev", "test"):
    raise ValueError(f"config.eval.split must be 'train', 'dev' or 'test', got {c.eval.split!r}")
  rl_fields = {f.name for f in dataclasses.fields(rl_lib.RLConfig)}
  rl_kwargs = {k: v for k, v in _as_dict(c.rl).items() if k in rl_fields}
  for k in ("top_k", "top_p"):
    if rl_kwargs.get(k) in (0, 0.0, 1.0) and not (k == "top_k" and rl_kwargs.get(k) == 1):
      rl_kwargs[k] = None  # 0 / 1.0 mean "off" in the config file
  # Progress-scheduled objectives (d3s with schedule=True) read step / total_steps.
  rl_kwargs.setdefault("total_steps", int(c.rl.steps) if int(c.rl.steps) > 0 else None)
  rl_config = rl_lib.RLConfig(**rl_kwargs)
  objective = rl_lib.make_objective(c.objective, _as_dict(c.objective_overrides),
                                    max_new_tokens=rl_config.max_new_tokens)
  tokenizer = tasks.load_tokenizer(c.tokenizer_dir or None)
  model = None
  if c.init_checkpoint:
    from rlpost.llm.hf import load_hf_checkpoint  # pylint: disable=g-import-not-at-top
    ckpt = pathlib.Path(c.init_checkpoint)
    if not (ckpt / "config.json").is_file():
      raise FileNotFoundError(f"config.init_checkpoint={str(ckpt)!r} has no config.json (expected "
                              f"an HF checkpoint directory)")
    model, model_config, _ = load_hf_checkpoint(ckpt, load_tokenizer=False)
  else:
    m = _as_dict(c.model)
    model_config = ModelConfig(vocab_size=m["vocab_size"] or len(tokenizer),
                               hidden_size=m["hidden_size"],
                               intermediate_size=m["intermediate_size"],
                               num_hidden_layers=m["num_hidden_layers"],
                               num_attention_heads=m["num_attention_heads"],
                               num_key_value_heads=m["num_key_value_heads"],
                               max_position_embeddings=m["max_position_embeddings"],
                               tie_word_embeddings=True)
  if model_config.vocab_size < len(tokenizer):
    raise ValueError(f"model.vocab_size={model_config.vocab_size} is smaller than the tokenizer "
                     f"({len(tokenizer)} tokens)")
  if prompt_len + rl_config.max_new_tokens > model_config.max_position_embeddings:
    raise ValueError(f"config.rl.max_new_tokens={rl_config.max_new_tokens} + prompt_len="
                     f"{prompt_len} exceeds the model context max_position_embeddings="
                     f"{model_config.max_position_embeddings}")
  # SFT (warm start and control) may train on longer targets than RL generates.
  sft_response_len = _positive_int(c.sft.get("response_len", 0), "sft.response_len",
                                   allow_zero=True) or rl_config.max_new_tokens
  if prompt_len + sft_response_len > model_config.max_position_embeddings:
    raise ValueError(f"config.sft.response_len={sft_response_len} + prompt_len={prompt_len} "
                     f"exceeds the model context max_position_embeddings="
                     f"{model_config.max_position_embeddings}")
  t = c.task
  families = tuple(t.families)
  pool = tasks.generate_dataset(_positive_int(t.train_size, "task.train_size"), seed=t.seed,
                                split="train", level=t.level, families=families, style=t.style)
  eval_set = tasks.generate_dataset(c.eval.size, seed=t.seed, split=c.eval.split, level=t.level,
                                    families=families, style=t.style,
                                    unique=c.eval.split != "train")
  encode_prompts(tokenizer, eval_set, max_len=prompt_len)  # fails early when a prompt is too long
  if int(c.sft.steps) > 0 or bool(c.get("control", False)):  # SFT targets must fit: fail now,
    from rlpost.llm.tasks import encode_example  # pylint: disable=g-import-not-at-top
    for r in pool:  # not after the RL phase
      n_target = len(encode_example(tokenizer, r)[1])
      if n_target > sft_response_len:
        raise ValueError(f"target of record {r.pid!r} has {n_target} tokens > "
                         f"config.sft.response_len={sft_response_len} (0 = rl.max_new_tokens); "
                         f"raise sft.response_len")
  if model is None:
    model = init_model(model_config, seed=c.seed)
  graphdef, params = nnx.split(model)
  reward_fn = tasks.make_reward_fn(format_weight=c.rl.format_weight)
  return dict(tokenizer=tokenizer, model_config=model_config, graphdef=graphdef, params=params,
              objective=objective, rl_config=rl_config, pool=pool, eval_set=eval_set,
              reward_fn=reward_fn, sft_response_len=sft_response_len)


def _sft_loop(s: dict[str, Any], state: TrainState, step_fn, *, stop_step: int, data_seed: int,
              writer: MetricsWriter, phase: str, ckpt=None, checkpoint_every: int = 0,
              wall_limit: Optional[float] = None, pbar=None, step_offset: int = 0) -> TrainState:
  """SFT steps until `stop_step` (or `wall_limit` seconds); logs, guards and checkpoints."""
  from rlpost.llm.sft import make_sft_batch  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  cfg, tok, pool = s["config"], s["tokenizer"], s["pool"]
  t_start = time.perf_counter()
  while int(state["step"]) < stop_step:
    if wall_limit is not None and time.perf_counter() - t_start >= wall_limit:
      break
    t0 = time.perf_counter()
    idx = stream_indices(data_seed, len(pool), int(state["data_pos"]), cfg.sft.batch_size)
    batch = make_sft_batch(tok, [pool[i] for i in idx], prompt_len=cfg.prompt_len,
                           response_len=s["sft_response_len"])
    state, met = step_fn(state, batch)
    met = to_floats(met)
    step = int(state["step"])
    met.update(phase=phase, step=step, time_step=time.perf_counter() - t0)
    check_finite(met, phase=phase, step=step)
    writer.write(met, tb_step=step_offset + step)
    if ckpt is not None and (step % max(checkpoint_every, 1) == 0 or step == stop_step):
      ckpt.save(step, state)
    if pbar is not None:
      pbar.update(1)
      pbar.set_postfix(phase=phase, loss=f"{met['loss']:.3f}")
  return state


def _eval_record(s, params, *, policy: str, step: int) -> dict[str, Any]:
  stats = evaluate(s["sampler"], params, s["tokenizer"], s["eval_set"],
                   prompt_len=s["config"].prompt_len,
                   max_new_tokens=s["rl_config"].max_new_tokens,
                   batch_size=s["config"].eval.batch_size)
  return {"phase": "eval", "policy": policy, "step": step, **stats}


def format_table(summary: Mapping[str, Any]) -> str:
  """The before/after table printed at the end of a run."""
  n, split = summary["eval_size"], summary["eval_split"]
  rows = [("start (SFT policy)", summary["sft_accuracy"], summary["sft_accuracy_stderr"])]
  if summary["steps"]:
    rows.append((f"after {summary['objective']} ({summary['steps']} steps)",
                 summary["final_accuracy"], summary["final_accuracy_stderr"]))
  if summary.get("control_sft_accuracy") is not None:
    rows.append((f"control: more SFT ({summary['control_wall_s']:.0f} s)",
                 summary["control_sft_accuracy"], summary["control_sft_accuracy_stderr"]))
  lines = [f"{'policy':<36} accuracy on {split} (n={n}, mean +- stderr)"]
  lines += [f"{name:<36} {100 * a:6.2f} +- {100 * e:4.2f}" for name, a, e in rows]
  lift = 100 * (summary["final_accuracy"] - summary["sft_accuracy"])
  lines.append(f"RL lift over start: {lift:+.2f} points; wall {summary['wall_s']:.0f} s")
  return "\n".join(lines)


def run_experiment(config, workdir: str | os.PathLike, *, progress: bool = True,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
  """SFT warm-start (config.sft.steps) -> RL (config.rl.steps) -> evals -> control -> artefacts.

  Writes into workdir: metrics.jsonl, tensorboard/, ckpt_sft/, ckpt_rl/ (orbax), policy/ (HF
  safetensors of the final policy), curves.png, summary.json. An existing workdir resumes from
  its checkpoints (bit-identical to an uninterrupted run); a finished one is only re-reported.
  Config errors are raised before anything is written.
  """
  import time  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from rlpost.llm import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  from rlpost.llm import rl as rl_lib  # pylint: disable=g-import-not-at-top
  from rlpost.llm import sft as sft_lib  # pylint: disable=g-import-not-at-top
  from rlpost.llm.hf import save_hf_checkpoint  # pylint: disable=g-import-not-at-top
  from rlpost.llm.sampler import Sampler  # pylint: disable=g-import-not-at-top
  from rlpost.llm.tasks.tokenizer import save_tokenizer  # pylint: disable=g-import-not-at-top
  t_begin = time.perf_counter()
  workdir = pathlib.Path(workdir)
  if (workdir / "run_config.json").exists():
    # Raises ResumeConfigError (naming the field) before anything is touched.
    ckpt_lib.check_resume_config(workdir, _as_dict(config), SHAPE_FIELDS)
  s = build(config)
  s["config"] = c = config
  summary_path = workdir / "summary.json"
  if summary_path.exists():
    summary = json.loads(summary_path.read_text())
    log(format_table(summary))
    return summary
  workdir.mkdir(parents=True, exist_ok=True)
  ckpt_lib.check_resume_config(workdir, _as_dict(c), SHAPE_FIELDS)
  graphdef, init_params = s["graphdef"], s["params"]
  s["sampler"] = Sampler(nnx.merge(graphdef, init_params))
  writer = MetricsWriter(workdir)
  ckpt_sft = ckpt_lib.Checkpointer(workdir / "ckpt_sft")
  ckpt_rl = ckpt_lib.Checkpointer(workdir / "ckpt_rl")
  sft_done = ckpt_sft.latest_step() or 0
  rl_done = ckpt_rl.latest_step() or 0
  sft_steps, rl_steps = c.sft.steps, c.rl.steps
  name = s["objective"].config.name
  writer.truncate(lambda r: (r.get("phase") == "sft" and r["step"] <= sft_done) or
                  (r.get("phase") == "rl" and r["step"] <= rl_done) or
                  (r.get("phase") == "eval" and r.get("policy") == "start" and
                   sft_done >= sft_steps) or
                  (r.get("phase") == "eval" and r.get("policy") == name and
                   r["step"] <= rl_done and r["step"] < rl_steps))
  pbar = None
  if progress:
    from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
    pbar = tqdm(total=sft_steps + rl_steps, initial=min(sft_done, sft_steps) + rl_done,
                desc="train_llm", dynamic_ncols=True)
  sft_opt = make_optimizer(learning_rate=c.sft.learning_rate, warmup_steps=c.sft.warmup_steps,
                           total_steps=sft_steps if c.sft.cosine else 0,
                           weight_decay=c.sft.weight_decay)
  # 1. SFT warm-start.
  start_params = init_params
  if sft_steps:
    like = init_train_state(init_params, sft_opt, seed=c.seed)
    state = ckpt_sft.restore(like) if sft_done else like
    if sft_done < sft_steps:
      step_fn = sft_lib.sft_step_from_config(graphdef, sft_opt, c.sft, prompt_len=c.prompt_len)
      state = _sft_loop(s, state, step_fn, stop_step=sft_steps,
                        data_seed=c.seed, writer=writer, phase="sft", ckpt=ckpt_sft,
                        checkpoint_every=c.checkpoint_every, pbar=pbar)
    start_params = state["params"]
  # 2. Held-out accuracy of the starting policy.
  records = writer.records()
  start_eval = next((r for r in records if r.get("phase") == "eval" and
                     r.get("policy") == "start"), None)
  if start_eval is None:
    start_eval = _eval_record(s, start_params, policy="start", step=0)
    writer.write(start_eval, tb_step=0)
  # 3. RL.
  rl_opt = make_optimizer(learning_rate=c.rl.learning_rate, warmup_steps=c.rl.warmup_steps,
                          weight_decay=c.rl.weight_decay, max_grad_norm=c.rl.max_grad_norm)
  objective = s["objective"]
  if objective.config.advantage == "oblr":  # OBLR-PO: SNR-adaptive step size, chained last
    from rlpost import core  # pylint: disable=g-import-not-at-top
    rl_opt = optax.chain(rl_opt, core.oblr_scale())
  obj_state = objective.init_state(**({"num_prompts": len(s["pool"])}
                                      if objective.config.advantage == "dcpo" else {}))
  like = init_train_state(start_params, rl_opt, seed=c.seed + 1, objective_state=obj_state)
  state = ckpt_rl.restore(like) if rl_done else like
  trainer = rl_lib.RLTrainer(graphdef=graphdef, params=start_params, tokenizer=s["tokenizer"],
                             objective=objective, rl_config=s["rl_config"], optimizer=rl_opt,
                             pool=s["pool"], data_seed=c.seed + 1, prompt_len=c.prompt_len,
                             reward_fn=s["reward_fn"], ref_params=start_params)
  trainer.sampler = s["sampler"]
  while int(state["step"]) < rl_steps:
    t0 = time.perf_counter()
    state, met = trainer.step(state)
    step = met["step"]
    met.update(phase="rl", time_step=time.perf_counter() - t0)
    check_finite(met, phase="rl", step=step)
    writer.write(met, tb_step=sft_steps + step)
    if c.rl.eval_every and step % c.rl.eval_every == 0 and step < rl_steps:
      writer.write(_eval_record(s, state["params"], policy=name, step=step),
                   tb_step=sft_steps + step)
    if step % max(c.checkpoint_every, 1) == 0 or step == rl_steps:
      ckpt_rl.save(step, state)
    if pbar is not None:
      pbar.update(1)
      pbar.set_postfix(phase="rl", acc=f"{met['accuracy']:.2f}", r=f"{met['reward_mean']:.2f}")
  if pbar is not None:
    pbar.close()
  final_params = state["params"]
  final_eval = _eval_record(s, final_params, policy=name, step=rl_steps)
  writer.write(final_eval, tb_step=sft_steps + rl_steps)
  policy_dir = workdir / "policy"
  save_hf_checkpoint(nnx.merge(graphdef, final_params), s["model_config"], policy_dir)
  save_tokenizer(s["tokenizer"], policy_dir)
  if c.export_dir:
    save_hf_checkpoint(nnx.merge(graphdef, final_params), s["model_config"], c.export_dir)
    save_tokenizer(s["tokenizer"], c.export_dir)
  # 4. Control: continued SFT from the same start for the RL phase's wall time.
  rl_wall = float(sum(r.get("time_step", 0.0) for r in writer.records() if r.get("phase") == "rl"))
  control_eval = None
  if c.control and rl_steps:
    ctrl_opt = make_optimizer(learning_rate=c.sft.control_learning_rate or c.sft.learning_rate,
                              weight_decay=c.sft.weight_decay)
    ctrl_state = init_train_state(start_params, ctrl_opt, seed=c.seed + 2)
    ctrl_state = _sft_loop(s, ctrl_state, sft_lib.make_sft_step(graphdef, ctrl_opt),
                           stop_step=c.control_max_steps or 10**9, data_seed=c.seed + 2,
                           writer=writer, phase="control",
                           wall_limit=rl_wall, step_offset=sft_steps)
    control_eval = _eval_record(s, ctrl_state["params"], policy="control_sft",
                                step=int(ctrl_state["step"]))
    writer.write(control_eval)
  summary = {
      "objective": name, "objective_config": {k: v for k, v in dataclasses.asdict(
          objective.config).items() if k != "paper"},
      "sft_accuracy": start_eval["accuracy"], "sft_accuracy_stderr": start_eval["accuracy_stderr"],
      "final_accuracy": final_eval["accuracy"],
      "final_accuracy_stderr": final_eval["accuracy_stderr"],
      "control_sft_accuracy": control_eval["accuracy"] if control_eval else None,
      "control_sft_accuracy_stderr": control_eval["accuracy_stderr"] if control_eval else None,
      "control_steps": control_eval["step"] if control_eval else 0,
      "control_wall_s": rl_wall if control_eval else 0.0,
      "eval_split": c.eval.split, "eval_size": len(s["eval_set"]), "steps": rl_steps,
      "sft_steps": sft_steps, "rl_wall_s": rl_wall,
      "wall_s": time.perf_counter() - t_begin,
      "lift_points": 100 * (final_eval["accuracy"] - start_eval["accuracy"]),
      "init_checkpoint": c.init_checkpoint or None,
  }
  writer.close()
  plot_curves(writer.records(), workdir / "curves.png",
              title=f"{name}: start {100 * summary['sft_accuracy']:.1f}% -> "
                    f"{100 * summary['final_accuracy']:.1f}%")
  tmp = summary_path.with_suffix(".tmp")
  tmp.write_text(json.dumps(summary, indent=2))
  os.replace(tmp, summary_path)
  ckpt_sft.close()
  ckpt_rl.close()
  log(format_table(summary))
  return summary


# --- objective comparison ------------------------------------------------------------------------


def compare_objectives(config, workdir: str | os.PathLike, *, progress: bool = False,
                       log: Callable[[str], None] = print) -> list[dict[str, Any]]:
  """Runs `config.objectives` from ONE shared starting policy with the same seeds.

  When config.init_checkpoint is empty, an SFT-only run (config.sft.steps) first writes the
  start to workdir/sft/policy. Each objective then runs `run_experiment` in workdir/<name>
  (control off). Writes comparison.png (train accuracy, entropy and zero-spread fraction vs step
  per objective), comparison.json and comparison.md (the table), and returns the table rows.
  """
  if config.get("num_seeds"):  # issue 5: N seeds per objective, mechanism metrics, summary.json
    from rlpost.llm import compare  # pylint: disable=g-import-not-at-top
    return compare.compare_seeded(config, workdir, progress=progress, log=log)
  workdir = pathlib.Path(workdir)
  names = list(config.objectives)
  if not names:
    raise ValueError("config.objectives must name at least one objective")
  from rlpost.llm import rl as rl_lib  # pylint: disable=g-import-not-at-top
  for n in names:  # fail fast on a bad name or override, before any run
    rl_lib.make_objective(n, _as_dict(config.objective_overrides),
                          max_new_tokens=config.rl.max_new_tokens)
  start = config.init_checkpoint
  if not start:
    sft_cfg = config.copy_and_resolve_references()
    with sft_cfg.unlocked():
      sft_cfg.rl.steps, sft_cfg.control = 0, False
    run_experiment(sft_cfg, workdir / "sft", progress=progress, log=log)
    start = str(workdir / "sft" / "policy")
  rows, curves = [], {}
  for n in names:
    cfg = config.copy_and_resolve_references()
    with cfg.unlocked():
      cfg.objective, cfg.init_checkpoint, cfg.sft.steps, cfg.control = n, start, 0, False
    summary = run_experiment(cfg, workdir / n, progress=progress, log=log)
    recs = [r for r in MetricsWriter(workdir / n, tensorboard=False).records()
            if r.get("phase") == "rl"]
    curves[n] = recs
    tail = recs[-max(1, len(recs) // 4):]
    rows.append({"objective": n, "start_accuracy": summary["sft_accuracy"],
                 "final_accuracy": summary["final_accuracy"],
                 "final_accuracy_stderr": summary["final_accuracy_stderr"],
                 "train_accuracy_last": float(np.mean([r["accuracy"] for r in tail])),
                 "entropy_last": float(np.mean([r["entropy"] for r in tail])),
                 "zero_spread_mean": float(np.mean([r["zero_spread_frac"] for r in recs])),
                 "rl_wall_s": summary["rl_wall_s"], "steps": summary["steps"]})
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  for n, recs in curves.items():
    steps = [r["step"] for r in recs]
    for ax, key in zip(axes, ("accuracy", "entropy", "zero_spread_frac")):
      ax.plot(steps, [r[key] for r in recs], label=n)
  for ax, key in zip(axes, ("train accuracy", "entropy", "zero-spread fraction")):
    ax.set(xlabel="RL step", title=key)
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(workdir / "comparison.png", dpi=80)
  plt.close(fig)
  header = ("| objective | start acc | final acc (held-out) | train acc (last 25%) | entropy | "
            "zero-spread | RL wall s |\n|---|---|---|---|---|---|---|\n")
  table = header + "".join(
      f"| {r['objective']} | {100 * r['start_accuracy']:.1f} | {100 * r['final_accuracy']:.1f} +- "
      f"{100 * r['final_accuracy_stderr']:.1f} | {100 * r['train_accuracy_last']:.1f} | "
      f"{r['entropy_last']:.3f} | {r['zero_spread_mean']:.2f} | {r['rl_wall_s']:.0f} |\n"
      for r in rows)
  (workdir / "comparison.md").write_text(table)
  (workdir / "comparison.json").write_text(json.dumps(rows, indent=2))
  log(table)
  return rows
