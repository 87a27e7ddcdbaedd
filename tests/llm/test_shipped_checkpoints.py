"""The shipped SFT checkpoints (rlpost/assets/sft, sft_mixed) and the configs that start from them.

The main job starts from the mixed-teacher checkpoint; compare_objectives and selection keep the
rows-only one. Both must load with the shipped tokenizer, stay within the 5 MB budget and decode
on-format answers.
"""
import importlib.util
import pathlib

import numpy as np
import pytest

from rlpost.llm import train
from rlpost.llm.hf import load_hf_checkpoint
from rlpost.llm.sampler import Sampler
from rlpost.llm.sampler import left_pad
from rlpost.llm.tasks import generate_dataset
from rlpost.llm.tasks import load_tokenizer

REPO = pathlib.Path(__file__).resolve().parents[2]
ASSETS = REPO / "rlpost" / "assets"


def _config(name, arg):
  spec = importlib.util.spec_from_file_location(f"{name}_config",
                                                REPO / "experiments" / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def test_configs_start_from_the_intended_checkpoint():
  main = _config("train_llm", "default")
  assert pathlib.Path(main.init_checkpoint) == ASSETS / "sft_mixed"
  assert main.task.style == "rows+verbose+verbose" and main.sft.steps == 0
  assert pathlib.Path(_config("train_llm", "rows").init_checkpoint) == ASSETS / "sft"
  for name in ("compare_objectives", "selection"):
    c = _config(name, "default")
    assert pathlib.Path(c.init_checkpoint) == ASSETS / "sft" and c.task.style == "rows", name
  mixed = _config("train_llm", "sft_mixed")
  assert mixed.task.style == main.task.style and mixed.rl.steps == 0 and mixed.sft.steps == 1600
  with pytest.raises(ValueError, match="config arg must be one of"):
    _config("train_llm", "mixed")


@pytest.mark.parametrize("name", ["sft", "sft_mixed"])
def test_shipped_checkpoint_loads_and_answers_on_format(name):
  path = ASSETS / name
  size = sum(f.stat().st_size for f in path.iterdir())
  assert size <= 5 * 2**20, f"{name} is {size} bytes (> 5 MB)"
  model, cfg, _ = load_hf_checkpoint(path, load_tokenizer=False)
  tok = load_tokenizer()
  assert cfg.vocab_size >= len(tok)
  recs = generate_dataset(16, split="test", level=1, families=("sum", "difference"))
  prompts = train.encode_prompts(tok, recs, max_len=64)
  toks, mask = left_pad(prompts, pad_id=tok.pad_token_id or 0, length=64)
  out = Sampler(model).generate(toks, mask, max_new_tokens=48, temperature=0.0,
                                stop_ids=(tok.eos_token_id,), pad_id=tok.pad_token_id or 0, seed=0)
  texts = train.decode_responses(tok, np.asarray(out.response_tokens),
                                 np.asarray(out.response_mask))
  # Given room (48 tokens), every greedy answer of either policy ends in the answer sentence.
  assert all("The answer is" in t for t in texts), texts
  if name == "sft_mixed":  # its greedy decoding opens with the verbose teacher's style
    assert np.mean([t.strip().startswith("Find the rows") for t in texts]) > 0.5
