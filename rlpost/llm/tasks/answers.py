"""Answer extraction, normalisation and checking for TabMWP-style responses.

Extends PromptPG's `normalize_answer` (Lu et al., "Dynamic Prompt Learning via Policy Gradient
for Semi-structured Mathematical Reasoning", ICLR 2023, arXiv 2209.14610): strip a leading "$"
and trailing [,./]; numbers become an int or round(x, 3) with a trailing ".0" dropped; fractions
a/b become round(a/b, 3); text answers drop the unit; multiple choice maps option letters.

Additions (deviations, all more lenient on the prediction side only):
  * thousands separators anywhere ("4,656"), a trailing "%" (the number is kept in percent, so
    "25%" == "25"), mixed numbers ("1 1/2"), LaTeX "\\frac{a}{b}", a leading "+";
  * a numeric gold accepts a prediction that starts with the number and continues with words
    ("42 apples", "$3.50 per day");
  * text is compared case-, whitespace- and trailing-punctuation-insensitively;
  * multi-choice predictions are matched to a choice by text or by option letter ("B", "(B)").
"""
from __future__ import annotations

import re

from rlpost.llm.tasks import prompts
from rlpost.llm.tasks import schema

_ANSWER_RE = re.compile(re.escape(prompts.ANSWER_PREFIX) + r"\s*:?\s*", re.IGNORECASE)
_FRAC_LATEX = re.compile(r"^\\d?frac\{\s*([-+]?[\d.]+)\s*\}\{\s*([-+]?[\d.]+)\s*\}$")
_DECIMAL = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)$")
_FRACTION = re.compile(r"^([-+]?\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)$")
_MIXED = re.compile(r"^([-+]?)(\d+)\s+(\d+)\s*/\s*(\d+)$")
_LEADING_NUMBER = re.compile(r"^\$?\s*([-+]?\$?\s*[\d,]*\.?\d+(?:\s*/\s*\d+)?)(?=\s|$|%)")
_LETTER = re.compile(r"^(?:option\s+)?\(?([A-J])\)?[.:]?$", re.IGNORECASE)


def extract_answer(text: str) -> str | None:
  """The text after the last "The answer is" up to the end of its line, minus a final period.

  Returns None when the marker is absent or nothing follows it.
  """
  if not isinstance(text, str):
    raise TypeError(f"response must be str, got {type(text).__name__}")
  matches = list(_ANSWER_RE.finditer(text))
  if not matches:
    return None
  rest = text[matches[-1].end():].split("\n", 1)[0].strip()
  if rest.endswith("."):
    rest = rest[:-1].rstrip()
  return rest or None


def parse_number(text: str) -> float | None:
  """A float for numeric strings ("1,000", "$56.40", "-3/2", "1 1/2", "25%"), else None."""
  s = text.strip().replace(",", "").replace(" ", " ")
  if s.startswith("-$"):
    s = "-" + s[2:]
  s = s.lstrip("$").strip()
  if s.endswith("%"):
    s = s[:-1].strip()
  m = _FRAC_LATEX.match(s)
  if m:
    s = f"{m.group(1)}/{m.group(2)}"
  if _DECIMAL.match(s):
    return float(s)
  m = _FRACTION.match(s)
  if m:
    den = float(m.group(2))
    return float(m.group(1)) / den if den else None
  m = _MIXED.match(s)
  if m:
    den = float(m.group(4))
    if not den:
      return None
    value = float(m.group(2)) + float(m.group(3)) / den
    return -value if m.group(1) == "-" else value
  return None


def format_number(value: float) -> str:
  """PromptPG's canonical form: int when integral, else round(x, 3) without trailing zeros."""
  value = round(value, 3)
  if value == int(value):
    return str(int(value))
  return f"{value:.3f}".rstrip("0").rstrip(".")


def _strip_unit(text: str, unit: str | None) -> str:
  if unit:
    low, u = text.lower(), unit.lower().strip()
    if u and low.endswith(u):
      text = text[:len(text) - len(u)]
    elif u and low.startswith(u):
      text = text[len(u):]
  return text.strip()


def normalize_answer(text: str, *, unit: str | None = None) -> str:
  """Canonical string for comparison (numbers canonicalised, text lower-cased)."""
  s = " ".join(str(text).split())
  s = _strip_unit(s, unit)
  s = re.sub(r"[,./]+$", "", s).strip() if not _DECIMAL.match(s) else s
  number = parse_number(s)
  if number is not None:
    return format_number(number)
  s = s.lower().strip().strip("\"'`").strip()
  s = re.sub(r"[.!?,;:]+$", "", s).strip()
  return s


def leading_number(text: str) -> float | None:
  """The number a prediction starts with ("42 apples" -> 42.0), else None."""
  s = " ".join(str(text).split())
  number = parse_number(s)
  if number is not None:
    return number
  m = _LEADING_NUMBER.match(s)
  return parse_number(m.group(1)) if m else None


def match_choice(pred: str, choices: tuple[str, ...] | list[str]) -> int | None:
  """Index of the choice `pred` names (by text, or by option letter), else None."""
  norm = normalize_answer(pred)
  texts = [normalize_answer(c) for c in choices]
  if norm in texts:
    return texts.index(norm)
  m = _LETTER.match(pred.strip())
  if m:
    i = prompts.OPTION_LETTERS.index(m.group(1).upper())
    return i if i < len(choices) else None
  # "(B) nonlinear" or "B. nonlinear": a letter followed by the choice text.
  m = re.match(r"^\(?([A-J])[).:]\s*(.+)$", pred.strip())
  if m:
    i = prompts.OPTION_LETTERS.index(m.group(1).upper())
    if i < len(choices) and normalize_answer(m.group(2)) == texts[i]:
      return i
  return None


def answers_match(pred: str, gold: str, *, unit: str | None = None) -> bool:
  """Numeric comparison (3 decimals) when gold is a number, else normalised text equality."""
  gold_number = parse_number(_strip_unit(" ".join(gold.split()), unit))
  if gold_number is not None:
    pred_number = leading_number(_strip_unit(" ".join(pred.split()), unit))
    return pred_number is not None and round(pred_number, 3) == round(gold_number, 3)
  return normalize_answer(pred, unit=unit) == normalize_answer(gold, unit=unit)


def is_correct(pred: str | None, record: schema.TabMWPRecord) -> bool:
  """Whether an extracted answer `pred` (see `extract_answer`) solves `record`.

  Multi-choice: `pred` must name exactly the gold choice (by text or option letter).
  """
  if pred is None:
    return False
  if record.ques_type == "multi_choice" and record.choices:
    i = match_choice(pred, record.choices)
    return i is not None and record.choices[i] == record.answer
  return answers_match(pred, record.answer, unit=record.unit)
