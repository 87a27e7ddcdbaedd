"""Bad inputs to the LLM post-training stack: each ends in a clear error naming the field or value,
and leaves no partial files in the workdir."""
import json
import math
import pathlib

import numpy as np
import pytest

from rlpost.llm import checkpoint
from rlpost.llm import train
from rlpost.llm.tasks import RecordError
from rlpost.llm.tasks import generate_dataset
from rlpost.llm.tasks import make_reward_fn
from rlpost.llm.tasks import validate_record

REPO = pathlib.Path(__file__).resolve().parents[2]


def _smoke_config():
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location(
      "train_llm_config", REPO / "experiments" / "configs" / "train_llm.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config("smoke")


@pytest.fixture(scope="module")
def hf_checkpoints(tmp_path_factory):
  """A valid tiny HF checkpoint plus two broken copies (missing tensor, wrong shape)."""
  from safetensors.numpy import load_file, save_file  # pylint: disable=g-import-not-at-top
  from rlpost.llm.config import ModelConfig  # pylint: disable=g-import-not-at-top
  from rlpost.llm.hf import save_hf_checkpoint  # pylint: disable=g-import-not-at-top
  from rlpost.llm.model import init_model  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("hf")
  cfg = ModelConfig(vocab_size=384, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                    num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128)
  good = save_hf_checkpoint(init_model(cfg), cfg, root / "good")
  tensors = load_file(str(good / "model.safetensors"))
  out = {}
  for name, edit in (("missing", lambda t: t.pop("model.norm.weight")),
                     ("shape", lambda t: t.update({"model.norm.weight": np.ones(7, np.float32)}))):
    d = root / name
    d.mkdir()
    t = dict(tensors)
    edit(t)
    save_file(t, str(d / "model.safetensors"))
    (d / "config.json").write_text((good / "config.json").read_text())
    out[name] = d
  (root / "no_config").mkdir()
  out["no_config"] = root / "no_config"
  return out


def _set(config, dotted, value):
  *path, last = dotted.split(".")
  node = config
  for p in path:
    node = node[p]
  node[last] = value


# (case id, {dotted field: value}, exception type, text the message must contain)
CONFIG_CASES = [
    ("unknown objective", {"objective": "grpoo"}, ValueError, "unknown objective 'grpoo'"),
    ("unknown override key", {"objective_overrides.clip_hihg": 0.3}, ValueError, "clip_hihg"),
    ("group does not divide batch", {"rl.group_size": 3}, ValueError, "group_size=3"),
    ("micro-batch splits a group", {"rl.micro_batch_size": 6}, ValueError, "micro_batch_size=6"),
    ("negative clip bound", {"objective_overrides.clip_low": -0.1}, ValueError, "clip_low"),
    ("negative upper clip", {"objective_overrides.clip_high": -0.2}, ValueError, "clip_high"),
    ("inverted clip bounds", {"objective_overrides.clip_low": 1.5}, ValueError, "clip_low"),
    ("negative kl", {"objective_overrides.kl_coef": -1.0}, ValueError, "kl_coef"),
    ("critic objective", {"objective": "ppo"}, ValueError, "critic"),
    ("max_new_tokens > context", {"rl.max_new_tokens": 100}, ValueError, "max_new_tokens=100"),
    ("zero ppo epochs", {"rl.ppo_epochs": 0}, ValueError, "rl.ppo_epochs"),
    ("zero temperature", {"rl.temperature": 0.0}, ValueError, "rl.temperature"),
    ("bad sft batch", {"sft.batch_size": 0}, ValueError, "sft.batch_size"),
    ("negative rl steps", {"rl.steps": -1}, ValueError, "rl.steps"),
    ("bad eval split", {"eval.split": "validation"}, ValueError, "eval.split"),
    ("bad level", {"task.level": 7}, ValueError, "level"),
    ("bad family", {"task.families": ("sum", "bogus")}, ValueError, "bogus"),
    ("heads vs kv heads", {"model.num_attention_heads": 3}, ValueError, "num_attention_heads"),
    ("prompt bucket too small", {"prompt_len": 16}, ValueError, "prompt_len=16"),
    ("prompt_len not a bucket", {"prompt_len": 72}, ValueError, "prompt_len=72"),
    ("tokenizer dir missing", {"tokenizer_dir": "/nonexistent/tok"}, ValueError, "does not exist"),
    # verbose SFT targets (up to 43 tokens) do not fit the 32-token default: fail before training
    ("sft target too long", {"task.style": "rows+verbose"}, ValueError,
     "config.sft.response_len=32"),
    ("sft response_len > context", {"sft.response_len": 80}, ValueError, "sft.response_len=80"),
    ("negative sft response_len", {"sft.response_len": -1}, ValueError, "sft.response_len"),
]


@pytest.mark.parametrize("case, fields, exc, text", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_train_llm_bad_config(tmp_path, case, fields, exc, text):
  del case
  config = _smoke_config()
  with config.unlocked():
    for k, v in fields.items():
      _set(config, k, v)
  workdir = tmp_path / "run"
  with pytest.raises(exc, match=text.replace("(", r"\(").replace(")", r"\)")):
    train.run_experiment(config, workdir, progress=False)
  assert not workdir.exists()


def test_train_llm_tokenizer_dir_without_vocabulary(tmp_path):
  (tmp_path / "tok").mkdir()
  (tmp_path / "tok" / "tokenizer_config.json").write_text("{}")
  config = _smoke_config()
  config.tokenizer_dir = str(tmp_path / "tok")
  with pytest.raises(ValueError, match="no vocabulary"):
    train.run_experiment(config, tmp_path / "run", progress=False)
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("which, text", [("missing", "missing tensor 'model.norm.weight'"),
                                         ("shape", "'model.norm.weight' has shape"),
                                         ("no_config", "config.json")])
def test_train_llm_bad_hf_checkpoint(tmp_path, hf_checkpoints, which, text):
  config = _smoke_config()
  config.init_checkpoint = str(hf_checkpoints[which])
  with pytest.raises((ValueError, FileNotFoundError), match=text):
    train.run_experiment(config, tmp_path / "run", progress=False)
  assert not (tmp_path / "run").exists()


def test_train_llm_resume_with_shape_changing_field(tmp_path):
  config = _smoke_config()
  workdir = tmp_path / "run"
  workdir.mkdir()
  checkpoint.check_resume_config(workdir, config.to_dict(), train.SHAPE_FIELDS)
  before = sorted(p.name for p in workdir.iterdir())
  config.model.hidden_size = 48
  with pytest.raises(checkpoint.ResumeConfigError,
                     match="'model.hidden_size' changed from 32 to 48"):
    train.run_experiment(config, workdir, progress=False)
  assert sorted(p.name for p in workdir.iterdir()) == before


RECORD = generate_dataset(1, split="train", level=1, families=("sum",))[0]


def _raw(**changes):
  raw = {k: getattr(RECORD, k) for k in ("question", "choices", "answer", "unit", "table_title",
                                         "table", "table_for_pd", "row_num", "column_num",
                                         "solution", "ques_type", "ans_type", "grade", "split")}
  raw.update(changes)
  return {k: v for k, v in raw.items() if v is not ...}


@pytest.mark.parametrize("raw, text", [
    ({}, "is empty"),  # an empty row
    ("not a dict", "expected a mapping"),  # a malformed row
    (_raw(answer=...), "answer"),  # missing answer field
    (_raw(table=None, table_for_pd=None), "table"),  # an unreadable table
    (_raw(table_for_pd={"Name": ["Ann"]}), "table_for_pd"),  # a table that does not parse
])
def test_train_llm_bad_tabmwp_rows(raw, text):
  with pytest.raises((RecordError, ValueError, TypeError), match=text):
    validate_record(raw, pid="bad")


def test_train_llm_non_finite_user_reward_names_the_record():
  fn = make_reward_fn(extra=[lambda response, record: math.nan])
  with pytest.raises(FloatingPointError, match=RECORD.pid):
    fn(["The answer is 3."], [RECORD])
