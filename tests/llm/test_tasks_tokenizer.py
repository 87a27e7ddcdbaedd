"""Shipped synthetic-task tokenizer: transformers loading, round trips, prompt/target split."""
import json

import pytest
import transformers

from rlpost.llm import tasks
from rlpost.llm.tasks import synthetic
from rlpost.llm.tasks import tokenizer as tok_lib


@pytest.fixture(scope="module")
def tok():
  return tasks.load_tokenizer()


def test_shipped_tokenizer_is_a_fast_transformers_tokenizer(tok):
  assert isinstance(tok, transformers.PreTrainedTokenizerFast)
  config = json.loads((tok_lib.DEFAULT_TOKENIZER_DIR / "tokenizer_config.json").read_text())
  assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
  assert not config["clean_up_tokenization_spaces"]  # would turn " ." into "." on decode
  assert [tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id] == [0, 1, 2, 3]
  assert len(tok) == 384


@pytest.mark.slow  # AutoTokenizer imports torch: ~3 s alone, 15 s on a loaded 2-core box.
def test_shipped_tokenizer_loads_through_autotokenizer(tok):
  same = transformers.AutoTokenizer.from_pretrained(str(tok_lib.DEFAULT_TOKENIZER_DIR))
  assert isinstance(same, transformers.PreTrainedTokenizerFast)
  text = "Ann | 12. Cal | 30. 12 + 30 = 42. The answer is 42."
  assert same.encode(text, add_special_tokens=False) == tok.encode(text, add_special_tokens=False)
  assert same.decode(same.encode(text, add_special_tokens=False)) == text


@pytest.mark.parametrize("level", [1, 3, 5])
def test_round_trip_on_generated_problems(tok, level):
  for r in tasks.generate_dataset(30, seed=21, split="test", level=level):
    for text in [tasks.format_prompt(r)] + [tasks.format_target(r, s) for s in synthetic.STYLES]:
      ids = tok.encode(text, add_special_tokens=False)
      assert tok.unk_token_id not in ids
      assert tok.decode(ids) == text


def test_digits_are_single_tokens(tok):
  pieces = tok.convert_ids_to_tokens(tok.encode(" 2026 | 9", add_special_tokens=False))
  assert pieces == ["\u25812", "0", "2", "6", "\u2581|", "\u25819"]


def test_encode_example_concatenation_equals_joint_encoding(tok):
  for r in tasks.generate_dataset(20, seed=5, split="train", level=2):
    prompt_ids, target_ids = tasks.encode_example(tok, r)
    assert prompt_ids[0] == tok.bos_token_id and target_ids[-1] == tok.eos_token_id
    joint = tok.encode(tasks.format_prompt(r) + tasks.format_target(r), add_special_tokens=False)
    assert prompt_ids[1:] + target_ids[:-1] == joint
    full = tok.decode(prompt_ids + target_ids, skip_special_tokens=True)
    assert tasks.accuracy_reward(full, r) == 1.0


def test_non_ascii_maps_to_unk_without_error(tok):
  ids = tok.encode("672 \u00f7 8 = 84", add_special_tokens=False)
  assert tok.unk_token_id in ids
  assert tok.decode(ids, skip_special_tokens=True) == "672  8 = 84"


def test_build_save_load_small_tokenizer(tmp_path):
  texts = tok_lib.training_corpus(seed=0, per_level=5, levels=(1,))
  built = tok_lib.build_tokenizer(texts, vocab_size=128)
  tok_lib.save_tokenizer(built, tmp_path)
  loaded = tasks.load_tokenizer(tmp_path)
  assert len(loaded) == 128
  for text in texts:
    assert loaded.decode(loaded.encode(text, add_special_tokens=False)) == text


@pytest.mark.slow  # generates 1,500 problems and trains BPE (~10 s on a busy 2-core box)
def test_rebuild_reproduces_shipped_tokenizer(tmp_path):
  tok_lib.main(["--out", str(tmp_path)])
  shipped = json.loads((tok_lib.DEFAULT_TOKENIZER_DIR / "tokenizer.json").read_text())
  rebuilt = json.loads((tmp_path / "tokenizer.json").read_text())
  assert rebuilt["model"] == shipped["model"]
