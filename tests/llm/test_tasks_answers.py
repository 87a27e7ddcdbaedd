"""Answer extraction / normalisation table, choice matching and rewards."""
import numpy as np
import pytest

from rlpost.llm import tasks
from rlpost.llm.tasks import answers
from rlpost.llm.tasks import schema


def _record(answer="42", *, unit=None, choices=None, ans_type="integer_number", pid="r1"):
  raw = dict(question="q?", choices=choices, answer=answer, unit=unit, table_title=None,
             table="Name | N\nAnn | 1", table_for_pd={"Name": ["Ann"], "N": ["1"]}, row_num=2,
             column_num=2, solution="", ques_type="multi_choice" if choices else "free_text",
             ans_type=ans_type, grade=3, split="dev")
  return schema.validate_record(raw, pid=pid)


# (text, extracted answer)
EXTRACT_CASES = [
    ("Ann | 12. Cal | 30. 12 + 30 = 42. The answer is 42.", "42"),
    ("The answer is 42", "42"),
    ("the answer is: nonlinear.", "nonlinear"),
    ("The answer is 3.5.", "3.5"),
    ("The answer is 1. The answer is 2.", "2"),  # last marker wins
    ("The answer is $1,605.00.\nextra line", "$1,605.00"),
    ("no marker here", None),
    ("The answer is .", None),
    ("", None),
]


@pytest.mark.parametrize("text,expected", EXTRACT_CASES)
def test_extract_answer(text, expected):
  assert answers.extract_answer(text) == expected


# (raw, canonical) -- PromptPG's normalize_answer cases first.
NORMALIZE_CASES = [
    ("1,000", "1000"), ("$56.40", "56.4"), ("3/4", "0.75"), ("-3", "-3"), ("123", "123"),
    ("56.456", "56.456"), ("-10.02", "-10.02"), ("-3/2", "-1.5"), ("4,656", "4656"),
    ("3.0", "3"), ("0.3333", "0.333"), ("25%", "25"), ("1 1/2", "1.5"),
    ("\\frac{3}{4}", "0.75"), ("+7", "7"), ("-$2", "-2"), ("42.", "42"), ("7/", "7"),
    ("Cal.", "cal"), ("  Linear ", "linear"), ("Yes", "yes"), ("'nonlinear'", "nonlinear"),
    ("2,825.35", "2825.35"), ("1/0", "1/0"),
]


@pytest.mark.parametrize("raw,expected", NORMALIZE_CASES)
def test_normalize_answer(raw, expected):
  assert answers.normalize_answer(raw) == expected


# (prediction, gold, unit, match?)
MATCH_CASES = [
    ("42 apples", "42", "apples", True),
    ("42", "42", "apples", True),
    ("$3.50 per day", "3.5", None, True),
    ("0.75", "3/4", None, True),
    ("3/4", "0.75", None, True),
    ("0.334", "1/3", None, False),
    ("1000", "1,000", None, True),
    ("43", "42", None, False),
    ("-6", "6", None, False),
    ("42 apples", "42 apples", None, True),
    ("buying a used phone", "Buying a used phone", None, True),
    ("surplus", "shortage", None, False),
    ("", "42", None, False),
    ("forty-two", "42", None, False),
]


@pytest.mark.parametrize("pred,gold,unit,expected", MATCH_CASES)
def test_answers_match(pred, gold, unit, expected):
  assert answers.answers_match(pred, gold, unit=unit) is expected


CHOICES = ("linear", "nonlinear")


@pytest.mark.parametrize("pred,expected", [
    ("nonlinear", 1), ("NONLINEAR ", 1), ("B", 1), ("(b)", 1), ("A.", 0), ("option B", 1),
    ("(B) nonlinear", 1), ("(A) nonlinear", None), ("C", None), ("non linear", None),
])
def test_match_choice(pred, expected):
  assert answers.match_choice(pred, CHOICES) == expected


def test_match_choice_numeric_choices():
  assert answers.match_choice("$3.5", ("$2.00", "$3.50")) == 1


def test_is_correct_multi_choice_and_free_text():
  mc = _record("nonlinear", choices=list(CHOICES), ans_type="boolean_text")
  assert tasks.is_correct("B", mc) and tasks.is_correct("nonlinear", mc)
  assert not tasks.is_correct("A", mc) and not tasks.is_correct("maybe", mc)
  assert not tasks.is_correct(None, mc)
  ft = _record("42", unit="apples")
  assert tasks.is_correct("42 apples", ft) and not tasks.is_correct("41", ft)


def test_accuracy_and_format_rewards():
  rec = _record("42")
  assert tasks.accuracy_reward(" 40 + 2 = 42. The answer is 42.", rec) == 1.0
  assert tasks.accuracy_reward("The answer is 41.", rec) == 0.0
  assert tasks.accuracy_reward("42", rec) == 0.0  # no marker, no credit
  assert tasks.format_reward(" 40 + 2 = 42. The answer is 41.", rec) == 1.0
  assert tasks.format_reward("The answer is 42. The answer is 42.", rec) == 0.0
  assert tasks.format_reward("The answer is 42", rec) == 0.0  # no final period
  assert tasks.format_reward("The answer is 42. Then more text", rec) == 0.0
  mc = _record("linear", choices=list(CHOICES), ans_type="boolean_text")
  assert tasks.format_reward("The answer is curved.", mc) == 0.0
  assert tasks.format_reward("The answer is (A).", mc) == 1.0


def test_make_reward_fn_weights_dtype_and_empty_batch():
  recs = [_record("42", pid="a"), _record("7", pid="b"), _record("1", pid="c")]
  responses = ["The answer is 42.", "The answer is 8.", "garbage"]
  fn = tasks.make_reward_fn(accuracy_weight=1.0, format_weight=0.5)
  r = fn(responses, recs)
  assert r.dtype == np.float32 and r.shape == (3,)
  np.testing.assert_allclose(r, [1.5, 0.5, 0.0])
  plain = tasks.make_reward_fn()(responses, recs)
  np.testing.assert_allclose(plain, [1.0, 0.0, 0.0])
  extra = tasks.make_reward_fn(extra=[lambda y, x: -0.01 * len(y)])(responses, recs)
  np.testing.assert_allclose(extra, plain - 0.01 * np.array([len(y) for y in responses]),
                             rtol=1e-6)
  empty = fn([], [])
  assert empty.shape == (0,) and empty.dtype == np.float32


def test_check_rewards_finite_names_record_id():
  recs = [_record(pid="p0"), _record(pid="p1")]
  np.testing.assert_array_equal(tasks.check_rewards_finite([1, 0], recs), [1.0, 0.0])
  with pytest.raises(FloatingPointError, match="'p1'"):
    tasks.check_rewards_finite([0.0, np.inf], recs)


def test_gold_targets_rewarded_and_shuffled_answers_rejected():
  recs = tasks.generate_dataset(60, seed=11, split="dev", level=3)
  fn = tasks.make_reward_fn(format_weight=1.0)
  gold = fn([tasks.format_target(r) for r in recs], recs)
  np.testing.assert_array_equal(gold, 2.0)
  wrong = [f"The answer is {recs[(i + 1) % len(recs)].answer}." for i in range(len(recs))]
  acc = tasks.make_reward_fn()(wrong, recs)
  same = np.array([recs[(i + 1) % len(recs)].answer == r.answer for i, r in enumerate(recs)])
  np.testing.assert_array_equal(acc, same.astype(np.float32))
