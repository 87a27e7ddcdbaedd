"""Synthetic TabMWP-schema problems: deterministic, difficulty-scaled, split-disjoint.

Records have the fields of TabMWP (Lu et al., "Dynamic Prompt Learning via Policy Gradient for
Semi-structured Mathematical Reasoning", ICLR 2023, arXiv 2209.14610) so the same prompt, reward
and loader code serves real and synthetic data. Question families:

  sum              total of `num_terms` cells                       free_text, integer_number
  difference       larger minus smaller of two cells                free_text, integer_number
  extreme          who has the most / fewest                        multi_choice, extractive_text
  count_threshold  number of rows above / below a threshold         free_text, integer_number
  rate_of_change   (y2 - y1) / (x2 - x1) between consecutive rows    free_text, integer_number
                   of a linear or non-linear table
  linearity        "Is the function linear or nonlinear?"           multi_choice, boolean_text

Difficulty (`level` 1..5, see `difficulty_spec`) scales the number size, the row count and the
number of steps (terms summed, rows compared, x step that needs a division).

Determinism and splits: problem `index` of split `split` is drawn with
`np.random.default_rng([seed, split_id, level, index, attempt])`. A problem belongs to the split
given by hashing its canonical text (question + table, `problem_key`) into 60/20/20 train/dev/test
buckets; draws whose hash lands in another split are rejected (`attempt` += 1). The same problem
therefore can never occur in two splits, whatever the seed.

Solutions come in several teacher "styles" (all stored in `record.solutions`, one copied into
`record.solution`):
  rows     copy the relevant rows first, then one equation: "Ann | 12. Cal | 30. 12 + 30 = 42."
           (the default; a tiny model learns this copy-then-compute format far more easily);
  verbose  full sentences naming each row and the operation;
  terse    the bare computation, no copied rows.
A mixture such as "rows+terse" gives each problem ONE of the listed styles, chosen by a hash of the
problem text (deterministic, independent of seed and index): demonstrations from several teachers
of different reliability, as in real SFT data.
The final "The answer is X." is appended by `prompts.format_target`, not stored in the solution.

Deviation from TabMWP: numbers carry no thousands separators and answers are always integers
(rates are made integral by construction) so a tiny model's arithmetic stays learnable.
"""
from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence

import numpy as np

from rlpost.llm.tasks import schema

FAMILIES = ("sum", "difference", "extreme", "count_threshold", "rate_of_change", "linearity")
STYLES = ("rows", "verbose", "terse")
SPLITS = ("train", "dev", "test")
SPLIT_FRACTIONS = (0.6, 0.2, 0.2)
_SPLIT_IDS = {name: i for i, name in enumerate(SPLITS)}
MAX_LEVEL = 5
_MAX_ATTEMPTS = 1000

NAMES = ("Ann", "Ben", "Cal", "Dee", "Eli", "Fay", "Gus", "Hal", "Ivy", "Jo", "Kim", "Lou", "Max",
         "Ned", "Owen", "Pam", "Quinn", "Rex", "Sue", "Tom", "Uma", "Val", "Wes", "Zoe")
# (plural noun, verb, past tense)
THEMES = (("apples", "pick", "picked"), ("books", "read", "read"), ("stickers", "collect",
          "collected"), ("shells", "find", "found"), ("cookies", "bake", "baked"),
          ("laps", "swim", "swam"), ("kites", "make", "made"), ("stamps", "collect", "collected"),
          ("pencils", "buy", "bought"), ("points", "score", "scored"), ("cards", "trade", "traded"),
          ("miles", "run", "ran"))


@dataclasses.dataclass(frozen=True)
class DifficultySpec:
  """What a difficulty level means: cell values in [1, max_value], `num_rows` data rows,
  `num_terms` cells summed, x step in [1, max_x_step] for the rate families."""
  level: int
  max_value: int
  num_rows: int
  num_terms: int
  max_x_step: int
  grade: int


_LEVELS = {
    1: DifficultySpec(1, max_value=9, num_rows=3, num_terms=2, max_x_step=1, grade=2),
    2: DifficultySpec(2, max_value=20, num_rows=4, num_terms=2, max_x_step=1, grade=3),
    3: DifficultySpec(3, max_value=99, num_rows=5, num_terms=3, max_x_step=2, grade=4),
    4: DifficultySpec(4, max_value=999, num_rows=6, num_terms=3, max_x_step=5, grade=6),
    5: DifficultySpec(5, max_value=9999, num_rows=7, num_terms=4, max_x_step=5, grade=8),
}


def difficulty_spec(level: int) -> DifficultySpec:
  if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or level not in _LEVELS:
    raise ValueError(f"difficulty level must be an int in [1, {MAX_LEVEL}], got {level!r}")
  return _LEVELS[int(level)]


def problem_key(question: str, table: str) -> str:
  """Canonical identity of a problem (what split assignment and dedup hash)."""
  return hashlib.sha256(f"{question}\n{table}".encode()).hexdigest()


def split_of(question: str, table: str) -> str:
  """The split a problem belongs to, from its hash (60/20/20 train/dev/test)."""
  u = int(problem_key(question, table)[:12], 16) / float(16**12)
  edge = 0.0
  for name, frac in zip(SPLITS, SPLIT_FRACTIONS):
    edge += frac
    if u < edge:
      return name
  return SPLITS[-1]


# --- families ---------------------------------------------------------------------------------
# Each family returns (columns, title, question, choices, answer, unit, ques_type, ans_type,
# solutions); the name/value families return (names, values, noun, past, question, ...) and are
# wrapped by `_people_family`, which builds the "Name | <Noun>" table and its title.


def _join_names(names: Sequence[str]) -> str:
  return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _people_table(rng: np.random.Generator, spec: DifficultySpec, *, distinct: bool):
  names = [NAMES[i] for i in rng.choice(len(NAMES), size=spec.num_rows, replace=False)]
  if distinct:
    values = rng.choice(spec.max_value, size=spec.num_rows, replace=False) + 1
  else:
    values = rng.integers(1, spec.max_value + 1, size=spec.num_rows)
  noun, verb, past = THEMES[int(rng.integers(len(THEMES)))]
  return names, [int(v) for v in values], noun, verb, past


def _sum(rng, spec):
  names, values, noun, verb, past = _people_table(rng, spec, distinct=False)
  rows = sorted(rng.choice(spec.num_rows, size=spec.num_terms, replace=False).tolist())
  picked = [names[i] for i in rows]
  vals = [values[i] for i in rows]
  total = sum(vals)
  eq = " + ".join(map(str, vals)) + f" = {total}."
  copied = " ".join(f"{n} | {v}." for n, v in zip(picked, vals))
  sentences = " ".join(f"{n} {past} {v} {noun}." for n, v in zip(picked, vals))
  solutions = {
      "rows": f"{copied} {eq}",
      "verbose": f"Find the rows for {_join_names(picked)}. {sentences} Add the numbers: {eq}",
      "terse": eq,
  }
  question = f"How many {noun} did {_join_names(picked)} {verb} in total?"
  return names, values, noun, past, question, None, str(total), noun, "free_text", \
      "integer_number", solutions


def _difference(rng, spec):
  names, values, noun, verb, past = _people_table(rng, spec, distinct=True)
  i, j = rng.choice(spec.num_rows, size=2, replace=False).tolist()
  hi, lo = (i, j) if values[i] > values[j] else (j, i)
  d = values[hi] - values[lo]
  eq = f"{values[hi]} - {values[lo]} = {d}."
  solutions = {
      "rows": f"{names[hi]} | {values[hi]}. {names[lo]} | {values[lo]}. {eq}",
      "verbose": (f"Find the rows for {names[hi]} and {names[lo]}. {names[hi]} {past} "
                  f"{values[hi]} {noun}. {names[lo]} {past} {values[lo]} {noun}. "
                  f"Subtract: {eq}"),
      "terse": eq,
  }
  question = f"How many more {noun} did {names[hi]} {verb} than {names[lo]}?"
  return names, values, noun, past, question, None, str(d), noun, "free_text", \
      "integer_number", solutions


def _extreme(rng, spec):
  names, values, noun, verb, past = _people_table(rng, spec, distinct=True)
  largest = bool(rng.integers(2))
  k = values.index(max(values) if largest else min(values))
  word, adj = ("most", "largest") if largest else ("fewest", "smallest")
  copied = " ".join(f"{n} | {v}." for n, v in zip(names, values))
  listed = _join_names([str(v) for v in values])
  solutions = {
      "rows": f"{copied} The {adj} is {names[k]} | {values[k]}.",
      "verbose": (f"Compare the numbers {listed}. The {adj} number is {values[k]}, which is "
                  f"in the row for {names[k]}."),
      "terse": f"{adj}({', '.join(map(str, values))}) = {values[k]}.",
  }
  question = f"Who {past} the {word} {noun}?"
  return names, values, noun, past, question, tuple(names), names[k], None, "multi_choice", \
      "extractive_text", solutions


_COMPARISONS = {
    "more than": lambda v, t: v > t,
    "fewer than": lambda v, t: v < t,
    "at least": lambda v, t: v >= t,
    "at most": lambda v, t: v <= t,
}


def _count_threshold(rng, spec):
  names, values, noun, verb, past = _people_table(rng, spec, distinct=False)
  ops = list(_COMPARISONS)[:2 if spec.level <= 2 else 4]
  op = ops[int(rng.integers(len(ops)))]
  t = int(rng.integers(1, spec.max_value + 1))
  hits = [(n, v) for n, v in zip(names, values) if _COMPARISONS[op](v, t)]
  count = len(hits)
  copied = " ".join(f"{n} | {v}." for n, v in hits) if hits else "No rows."
  checks = " ".join(f"{v} is {'' if _COMPARISONS[op](v, t) else 'not '}{op} {t}."
                    for v in values)
  solutions = {
      "rows": f"{copied} That is {count}.",
      "verbose": f"Check each row. {checks} So {count} rows match.",
      "terse": f"count = {count}.",
  }
  question = f"How many people {past} {op} {t} {noun}?"
  return names, values, noun, past, question, None, str(count), "people", "free_text", \
      "integer_number", solutions


def _function_table(rng, spec, *, linear: bool):
  """Integer x/y table with integral rates; linear means all rates equal."""
  n = spec.num_rows
  dx = int(rng.integers(1, spec.max_x_step + 1))
  max_rate = max(1, spec.max_value // (2 * dx * (n - 1)))
  for _ in range(_MAX_ATTEMPTS):
    if linear:
      rate = int(rng.integers(1, max_rate + 1)) * (1 if rng.integers(2) else -1)
      rates = [rate] * (n - 1)
    else:
      rates = rng.integers(-max_rate, max_rate + 1, size=n - 1).tolist()
      if len(set(rates)) == 1:
        continue
    y0 = int(rng.integers(1, spec.max_value + 1))
    ys = [y0]
    for r in rates:
      ys.append(ys[-1] + r * dx)
    if min(ys) >= 1 and max(ys) <= spec.max_value:
      break
  else:
    raise RuntimeError(f"could not draw a function table for level {spec.level}")
  return dx, rates, ys


def _rate_of_change(rng, spec):
  dx, rates, ys = _function_table(rng, spec, linear=bool(rng.integers(2)))
  noun, _, past = THEMES[int(rng.integers(len(THEMES)))]
  x0 = int(rng.integers(2000, 2016))
  xs = [x0 + dx * i for i in range(spec.num_rows)]
  i = int(rng.integers(spec.num_rows - 1))
  x1, x2, y1, y2 = xs[i], xs[i + 1], ys[i], ys[i + 1]
  rate = rates[i]
  if dx == 1:
    eq = f"{y2} - {y1} = {rate}."
  else:
    eq = f"{y2} - {y1} = {y2 - y1}. {x2} - {x1} = {dx}. {y2 - y1} / {dx} = {rate}."
  solutions = {
      "rows": f"{x1} | {y1}. {x2} | {y2}. {eq}",
      "verbose": (f"Rate of change = change in {noun} / change in years. In {x1} there were "
                  f"{y1} {noun} and in {x2} there were {y2}. {eq}"),
      "terse": eq,
  }
  question = f"What was the rate of change in {noun} between {x1} and {x2}?"
  columns = {"Year": [str(x) for x in xs], noun.capitalize(): [str(y) for y in ys]}
  title = f"{noun.capitalize()} {past} each year"
  return columns, title, question, None, str(rate), f"{noun} per year", "free_text", \
      "integer_number", solutions


def _linearity(rng, spec):
  linear = bool(rng.integers(2))
  dx, rates, ys = _function_table(rng, spec, linear=linear)
  x0 = int(rng.integers(0, 11))
  xs = [x0 + dx * i for i in range(spec.num_rows)]
  diffs = [ys[i + 1] - ys[i] for i in range(len(ys) - 1)]
  copied = " ".join(f"{x} | {y}." for x, y in zip(xs, ys))
  eqs = " ".join(f"{ys[i + 1]} - {ys[i]} = {d}." for i, d in enumerate(diffs))
  same = "the same" if linear else "not the same"
  solutions = {
      "rows": f"{copied} {eqs} The changes are {same}.",
      "verbose": (f"The x values go up by {dx} each row. Compare the changes in y: {eqs} The "
                  f"rate of change is {'constant' if linear else 'not constant'}."),
      "terse": f"changes {', '.join(map(str, diffs))} are {same}.",
  }
  question = "The table shows a function. Is the function linear or nonlinear?"
  columns = {"x": [str(x) for x in xs], "y": [str(y) for y in ys]}
  answer = "linear" if linear else "nonlinear"
  return columns, None, question, ("linear", "nonlinear"), answer, None, "multi_choice", \
      "boolean_text", solutions


def _people_family(fn):
  def wrapped(rng, spec):
    names, values, noun, past, *rest = fn(rng, spec)
    columns = {"Name": names, noun.capitalize(): [str(v) for v in values]}
    return (columns, f"{noun.capitalize()} {past}", *rest)
  return wrapped


_FAMILY_FNS = {
    "sum": _people_family(_sum),
    "difference": _people_family(_difference),
    "extreme": _people_family(_extreme),
    "count_threshold": _people_family(_count_threshold),
    "rate_of_change": _rate_of_change,
    "linearity": _linearity,
}


# --- public API -------------------------------------------------------------------------------


def _check_args(seed, split, index, level, families, style):
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f"seed must be a non-negative int, got {seed!r}")
  if split not in _SPLIT_IDS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
    raise ValueError(f"index must be a non-negative int, got {index!r}")
  difficulty_spec(level)
  if isinstance(families, str) or not families:
    raise ValueError(f"families must be a non-empty sequence of names from {FAMILIES}, got "
                     f"{families!r}")
  for f in families:
    if f not in _FAMILY_FNS:
      raise ValueError(f"unknown family {f!r} in families; known: {FAMILIES}")
  parts = style.split("+") if isinstance(style, str) else [style]
  for part in parts:
    if part not in STYLES:
      raise ValueError(f"unknown solution style {part!r} in style={style!r}; known: {STYLES} "
                       f"or a '+'-joined mixture of them such as 'rows+terse'")


def solution_style(style: str, question: str, table: str) -> str:
  """The style a problem's `solution` uses: `style`, or for a mixture "a+b+..." one of its parts
  picked by a hash of the problem text (so every split and seed agree on it)."""
  parts = style.split("+")
  if len(parts) == 1:
    return style
  digest = hashlib.sha256(("style|" + problem_key(question, table)).encode()).digest()
  return parts[int.from_bytes(digest[:4], "little") % len(parts)]


def sample_problem(*, seed: int, split: str, index: int, level: int = 1,
                   families: Sequence[str] = FAMILIES,
                   style: str = "rows") -> schema.TabMWPRecord:
  """Problem `index` of `split`: a pure function of its arguments (see module docstring)."""
  _check_args(seed, split, index, level, families, style)
  spec = difficulty_spec(level)
  for attempt in range(_MAX_ATTEMPTS):
    rng = np.random.default_rng([int(seed), _SPLIT_IDS[split], spec.level, int(index), attempt])
    family = families[int(rng.integers(len(families)))]
    (columns, title, question, choices, answer, unit, ques_type, ans_type,
     solutions) = _FAMILY_FNS[family](rng, spec)
    table, row_num, column_num = schema.make_table(columns)
    if split_of(question, table) == split:
      break
  else:
    raise RuntimeError(f"no problem hashed into split {split!r} after {_MAX_ATTEMPTS} draws")
  raw = dict(question=question, choices=None if choices is None else list(choices),
             answer=answer, unit=unit, table_title=title, table=table,
             table_for_pd=columns, row_num=row_num, column_num=column_num,
             solution=solutions[solution_style(style, question, table)], ques_type=ques_type, ans_type=ans_type,
             grade=spec.grade, split=split, family=family, difficulty=spec.level,
             solutions=solutions)
  return schema.validate_record(raw, pid=f"syn-{split}-s{seed}-l{spec.level}-{index}")


def generate_dataset(num_problems: int, *, seed: int = 0, split: str = "train", level: int = 1,
                     families: Sequence[str] = FAMILIES, style: str = "rows", start: int = 0,
                     unique: bool = False) -> list[schema.TabMWPRecord]:
  """Problems `start, start + 1, ...` of a split (deterministic per seed).

  With `unique=True`, indices whose problem (`problem_key`) was already drawn are skipped until
  `num_problems` distinct problems are collected (useful for held-out sets at low levels, where
  the problem space is small); the result is still a pure function of the arguments.
  """
  if isinstance(num_problems, bool) or not isinstance(num_problems, (int, np.integer)) or \
      num_problems < 0:
    raise ValueError(f"num_problems must be a non-negative int, got {num_problems!r}")
  if not unique:
    return [sample_problem(seed=seed, split=split, index=start + i, level=level,
                           families=families, style=style) for i in range(num_problems)]
  records, seen = [], set()
  max_draws = 20 * num_problems + 100
  for index in range(start, start + max_draws):
    if len(records) == num_problems:
      break
    record = sample_problem(seed=seed, split=split, index=index, level=level,
                            families=families, style=style)
    key = problem_key(record.question, record.table)
    if key not in seen:
      seen.add(key)
      records.append(record)
  if len(records) < num_problems:
    raise ValueError(f"num_problems={num_problems}: only {len(records)} distinct problems found "
                     f"in {max_draws} draws at level {level} with families {list(families)}")
  return records
