"""Bad inputs to the task code: each must raise a clear error naming the field or value."""
import copy
import json

import pytest

from rlpost.llm import tasks
from rlpost.llm.tasks import schema
from rlpost.llm.tasks import tabmwp

GOOD = {
    "question": "How many apples did Ann and Cal pick in total?",
    "choices": None, "answer": "42", "unit": "apples", "table_title": "Apples picked",
    "table": "Name | Apples\nAnn | 12\nCal | 30",
    "table_for_pd": {"Name": ["Ann", "Cal"], "Apples": ["12", "30"]},
    "row_num": 3, "column_num": 2, "solution": "Ann | 12. Cal | 30. 12 + 30 = 42.",
    "ques_type": "free_text", "ans_type": "integer_number", "grade": 2, "split": "train",
}


def _mutate(**changes):
  raw = copy.deepcopy(GOOD)
  for key, value in changes.items():
    if value is _DROP:
      del raw[key]
    else:
      raw[key] = value
  return raw


_DROP = object()

# (case id, raw record, exception, substrings the message must contain)
RECORD_CASES = [
    ("missing_answer", _mutate(answer=_DROP), "'answer' is missing"),
    ("empty_answer", _mutate(answer="  "), "'answer' is empty"),
    ("empty_record", {}, "is empty"),
    ("not_a_mapping", ["question", "answer"], "expected a mapping"),
    ("row_num_string", _mutate(row_num="3"), "'row_num' must be int"),
    ("grade_bool", _mutate(grade=True), "'grade' must be int"),
    ("bad_ques_type", _mutate(ques_type="essay"), "'essay'"),
    ("bad_ans_type", _mutate(ans_type="number"), "'ans_type'"),
    ("row_num_inconsistent", _mutate(row_num=4), "'row_num' is 4"),
    ("column_num_inconsistent", _mutate(column_num=3), "'column_num' is 3"),
    ("table_for_pd_not_mapping", _mutate(table_for_pd="Name: Ann"), "'table_for_pd'"),
    ("table_for_pd_missing", _mutate(table_for_pd=_DROP), "'table_for_pd' is missing"),
    ("unequal_columns", _mutate(table_for_pd={"Name": ["Ann", "Cal"], "Apples": ["12"]}),
     "unequal length"),
    ("non_string_cell", _mutate(table_for_pd={"Name": ["Ann", "Cal"], "Apples": [12, 30]}),
     "column 'Apples'"),
    ("unreadable_table_cells", _mutate(table="Name | Apples\nAnn 12\nCal | 30"),
     "line 1 has 1 cells"),
    ("empty_row", _mutate(table="Name | Apples\n | \nCal | 30",
                          table_for_pd={"Name": ["", "Cal"], "Apples": ["", "30"]}),
     "line 1 is an empty row"),
    ("table_disagrees", _mutate(table="Name | Apples\nAnn | 13\nCal | 30"), "'Ann | 13'"),
    ("table_line_count", _mutate(table="Name | Apples\nAnn | 12"), "has 2 lines"),
    ("mc_without_choices", _mutate(ques_type="multi_choice"), "'choices' is None"),
    ("mc_answer_not_a_choice", _mutate(ques_type="multi_choice", choices=["41", "43"]),
     "'42' is not one of the choices"),
    ("empty_choices", _mutate(choices=[]), "'choices'"),
    ("empty_question", _mutate(question=""), "'question' is empty"),
]


@pytest.mark.parametrize("raw,needle", [c[1:] for c in RECORD_CASES],
                         ids=[c[0] for c in RECORD_CASES])
def test_bad_record_names_id_and_field(raw, needle):
  with pytest.raises(schema.RecordError) as err:
    schema.validate_record(raw, pid="p-17")
  assert "'p-17'" in str(err.value)
  assert needle in str(err.value)


def test_good_record_is_accepted():
  assert schema.validate_record(GOOD, pid="ok").answer == "42"


def _write(tmp_path, obj, name="problems.json"):
  path = tmp_path / name
  path.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
  return path


def _loader_missing_file(tmp_path):
  tasks.load_tabmwp(tmp_path / "nope.json")


def _loader_not_json(tmp_path):
  tasks.load_tabmwp(_write(tmp_path, "{not json"))


def _loader_list(tmp_path):
  tasks.load_tabmwp(_write(tmp_path, [GOOD]))


def _loader_bad_row(tmp_path):
  tasks.load_tabmwp(_write(tmp_path, {"1": GOOD, "2": _mutate(answer=_DROP)}))


def _loader_unknown_split(tmp_path):
  tasks.load_tabmwp(_write(tmp_path, {"1": GOOD}), split="val")


def _loader_bad_limit(tmp_path):
  tabmwp.load_tabmwp_dataset(_write(tmp_path, {"1": GOOD}), limit=-1)


def _tokenizer_no_vocab(tmp_path):
  (tmp_path / "tok").mkdir()
  (tmp_path / "tok" / "tokenizer_config.json").write_text("{}")
  tasks.load_tokenizer(tmp_path / "tok")


def _tokenizer_missing_dir(tmp_path):
  tasks.load_tokenizer(tmp_path / "absent_tok")


def _nan_reward(tmp_path):
  del tmp_path
  recs = [schema.validate_record(GOOD, pid="ok-0"), schema.validate_record(GOOD, pid="bad-1")]
  fn = tasks.make_reward_fn(extra=[lambda y, x: float("nan") if x.pid == "bad-1" else 0.0])
  fn(["The answer is 42.", "The answer is 42."], recs)


def _reward_batch_mismatch(tmp_path):
  del tmp_path
  tasks.make_reward_fn()(["a", "b"], [schema.validate_record(GOOD, pid="x")])


def _unknown_family(tmp_path):
  del tmp_path
  tasks.generate_dataset(2, families=["sum", "division"])


def _bad_level(tmp_path):
  del tmp_path
  tasks.generate_dataset(2, level=9)


def _bad_split(tmp_path):
  del tmp_path
  tasks.sample_problem(seed=0, split="validation", index=0)


def _negative_seed(tmp_path):
  del tmp_path
  tasks.sample_problem(seed=-1, split="train", index=0)


def _unknown_style(tmp_path):
  del tmp_path
  tasks.format_target(tasks.sample_problem(seed=0, split="train", index=0), style="pirate")


def _unknown_generator_style(tmp_path):
  del tmp_path
  tasks.generate_dataset(1, style="pirate")


OTHER_CASES = [
    (_loader_missing_file, FileNotFoundError, ["nope.json"]),
    (_loader_not_json, ValueError, ["not valid JSON", "problems.json"]),
    (_loader_list, ValueError, ["keyed by problem id"]),
    (_loader_bad_row, schema.RecordError, ["'2'", "'answer' is missing"]),
    (_loader_unknown_split, ValueError, ["'val'", "['train']"]),
    (_loader_bad_limit, ValueError, ["limit", "-1"]),
    (_tokenizer_no_vocab, tasks.TokenizerError, ["has no vocabulary", "tok'"]),
    (_tokenizer_missing_dir, tasks.TokenizerError, ["absent_tok", "does not exist"]),
    (_nan_reward, FloatingPointError, ["'bad-1'", "nan"]),
    (_reward_batch_mismatch, ValueError, ["2 responses for 1 records"]),
    (_unknown_family, ValueError, ["'division'", "families"]),
    (_bad_level, ValueError, ["difficulty level", "9"]),
    (_bad_split, ValueError, ["split", "'validation'"]),
    (_negative_seed, ValueError, ["seed", "-1"]),
    (_unknown_style, ValueError, ["'pirate'", "syn-train"]),
    (_unknown_generator_style, ValueError, ["style", "'pirate'"]),
]


@pytest.mark.parametrize("fn,exc,needles", OTHER_CASES, ids=[c[0].__name__ for c in OTHER_CASES])
def test_bad_task_inputs_raise_clear_errors(tmp_path, fn, exc, needles):
  with pytest.raises(exc) as err:
    fn(tmp_path)
  for needle in needles:
    assert needle in str(err.value), (needle, str(err.value))
