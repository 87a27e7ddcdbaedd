"""TabMWP record schema and validator.

The record layout is that of TabMWP, the tabular math word problem set released with PromptPG
(Lu et al., "Dynamic Prompt Learning via Policy Gradient for Semi-structured Mathematical
Reasoning", ICLR 2023, arXiv 2209.14610). One problem per record:

  question, choices, answer, unit, table_title, table, table_for_pd, row_num, column_num,
  solution, ques_type (free_text | multi_choice), ans_type, grade, split.

Invariants checked by `validate_record` (all hold on the released dev1k/test1k files):
  * `table` has exactly `row_num` lines and every line has `column_num` cells split by "|";
  * `table_for_pd` maps `column_num` column names to equally long lists of cells; headerless
    tables use the keys "Column 1", "Column 2", ... and then every line of `table` is a data
    row, otherwise the first line is the header (so each column has `row_num - 1` cells);
  * the stripped cells of `table` equal those of `table_for_pd` row by row;
  * a multi-choice record has choices and its answer is one of them.

rlpost additions (not in TabMWP; empty/None for real records): `pid` (the problem id every error
names), `family` and `difficulty` (synthetic generator metadata) and `solutions` (alternative
teacher write-ups keyed by style name).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

QUES_TYPES = ("free_text", "multi_choice")
ANS_TYPES = ("integer_number", "decimal_number", "extractive_text", "boolean_text", "other_text")
TABMWP_FIELDS = ("question", "choices", "answer", "unit", "table_title", "table", "table_for_pd",
                 "row_num", "column_num", "solution", "ques_type", "ans_type", "grade", "split")


class RecordError(ValueError):
  """A TabMWP record is malformed; the message names the record id and the field."""


@dataclasses.dataclass(frozen=True)
class TabMWPRecord:
  """One validated TabMWP problem (see module docstring for the invariants)."""
  pid: str
  question: str
  choices: tuple[str, ...] | None
  answer: str
  unit: str | None
  table_title: str | None
  table: str
  table_for_pd: dict[str, tuple[str, ...]]
  row_num: int
  column_num: int
  solution: str
  ques_type: str
  ans_type: str
  grade: int
  split: str
  family: str | None = None
  difficulty: int | None = None
  solutions: dict[str, str] = dataclasses.field(default_factory=dict)

  def __hash__(self) -> int:
    # The generated hash would fail on the dict fields; (pid, question, table) identifies a record.
    return hash((self.pid, self.question, self.table))

  @property
  def has_header(self) -> bool:
    return has_header(self.table_for_pd)

  def to_dict(self) -> dict[str, Any]:
    """JSON-ready dict with TabMWP's field types (lists, not tuples)."""
    out = dataclasses.asdict(self)
    out["choices"] = None if self.choices is None else list(self.choices)
    out["table_for_pd"] = {k: list(v) for k, v in self.table_for_pd.items()}
    return out


def has_header(table_for_pd: Mapping[str, Any]) -> bool:
  """TabMWP names the columns of header-less tables "Column 1", "Column 2", ..."""
  keys = list(table_for_pd)
  return keys != [f"Column {i + 1}" for i in range(len(keys))]


def split_table_line(line: str) -> list[str]:
  return [cell.strip() for cell in line.split("|")]


def _fail(pid: str, field: str, msg: str) -> RecordError:
  return RecordError(f"TabMWP record {pid!r}: field {field!r} {msg}")


def _get(raw: Mapping[str, Any], pid: str, field: str, types: tuple[type, ...], *,
         optional: bool = False, nonempty: bool = False) -> Any:
  if field not in raw:
    raise _fail(pid, field, "is missing")
  value = raw[field]
  if value is None and optional:
    return None
  # bool is an int subclass; a True row_num is a bug, not a count.
  if isinstance(value, bool) or not isinstance(value, types):
    names = "/".join(t.__name__ for t in types) + (" or None" if optional else "")
    raise _fail(pid, field, f"must be {names}, got {type(value).__name__} {value!r:.60}")
  if nonempty and isinstance(value, str) and not value.strip():
    raise _fail(pid, field, "is empty")
  return value


def _validate_table(pid: str, table: str, table_for_pd: Any, row_num: int,
                    column_num: int) -> dict[str, tuple[str, ...]]:
  """Checks that `table`, `table_for_pd`, `row_num` and `column_num` describe one table."""
  if not isinstance(table_for_pd, Mapping) or not table_for_pd:
    raise _fail(pid, "table_for_pd", f"must be a non-empty column -> cells mapping, got "
                f"{type(table_for_pd).__name__} {table_for_pd!r:.60}")
  columns: dict[str, tuple[str, ...]] = {}
  for name, cells in table_for_pd.items():
    if not isinstance(name, str):
      raise _fail(pid, "table_for_pd", f"has a non-string column name {name!r}")
    if not isinstance(cells, (list, tuple)) or not all(isinstance(c, str) for c in cells):
      raise _fail(pid, "table_for_pd", f"column {name!r} must be a list of strings, got "
                  f"{cells!r:.60}")
    columns[name] = tuple(cells)
  if len(columns) != column_num:
    raise _fail(pid, "column_num", f"is {column_num} but table_for_pd has {len(columns)} columns")
  lengths = {name: len(cells) for name, cells in columns.items()}
  if len(set(lengths.values())) != 1:
    raise _fail(pid, "table_for_pd", f"has columns of unequal length {lengths}")
  header = has_header(columns)
  n_data = next(iter(lengths.values()))
  if n_data == 0:
    raise _fail(pid, "table_for_pd", "has no data rows")
  if n_data + int(header) != row_num:
    raise _fail(pid, "row_num", f"is {row_num} but table_for_pd has {n_data} data rows"
                f"{' plus a header' if header else ''}")
  lines = table.split("\n")
  if len(lines) != row_num:
    raise _fail(pid, "table", f"has {len(lines)} lines but row_num is {row_num}")
  rows = [tuple(c.strip() for c in columns)] if header else []
  rows += [tuple(columns[c][i].strip() for c in columns) for i in range(n_data)]
  for i, (line, expected) in enumerate(zip(lines, rows)):
    cells = split_table_line(line)
    if not any(cells):
      raise _fail(pid, "table", f"line {i} is an empty row: {line!r}")
    if len(cells) != column_num:
      raise _fail(pid, "table", f"line {i} has {len(cells)} cells, expected column_num="
                  f"{column_num}: {line!r}")
    if tuple(cells) != expected:
      raise _fail(pid, "table", f"line {i} {line!r} disagrees with table_for_pd {list(expected)}")
  return columns


def validate_record(raw: Any, pid: str | int | None = None) -> TabMWPRecord:
  """Validates a raw TabMWP dict and returns a frozen `TabMWPRecord`.

  Args:
    raw: a mapping with TabMWP's fields (plus optional rlpost extras `pid`, `family`,
      `difficulty`, `solutions`).
    pid: the problem id (the JSON key in the released files); defaults to raw["pid"].

  Raises:
    RecordError: naming the record id and the offending field.
  """
  if pid is None and isinstance(raw, Mapping):
    pid = raw.get("pid")
  pid = "<unknown>" if pid is None else str(pid)
  if not isinstance(raw, Mapping):
    raise RecordError(f"TabMWP record {pid!r}: expected a mapping of fields, got "
                      f"{type(raw).__name__} {raw!r:.60}")
  if not raw:
    raise RecordError(f"TabMWP record {pid!r}: is empty (no fields)")
  question = _get(raw, pid, "question", (str,), nonempty=True)
  answer = _get(raw, pid, "answer", (str,), nonempty=True)
  unit = _get(raw, pid, "unit", (str,), optional=True)
  table_title = _get(raw, pid, "table_title", (str,), optional=True)
  table = _get(raw, pid, "table", (str,), nonempty=True)
  row_num = _get(raw, pid, "row_num", (int,))
  column_num = _get(raw, pid, "column_num", (int,))
  if row_num < 1:
    raise _fail(pid, "row_num", f"must be >= 1, got {row_num}")
  if column_num < 1:
    raise _fail(pid, "column_num", f"must be >= 1, got {column_num}")
  if "table_for_pd" not in raw:
    raise _fail(pid, "table_for_pd", "is missing")
  table_for_pd = _validate_table(pid, table, raw["table_for_pd"], row_num, column_num)
  solution = _get(raw, pid, "solution", (str,))
  ques_type = _get(raw, pid, "ques_type", (str,))
  if ques_type not in QUES_TYPES:
    raise _fail(pid, "ques_type", f"must be one of {QUES_TYPES}, got {ques_type!r}")
  ans_type = _get(raw, pid, "ans_type", (str,))
  if ans_type not in ANS_TYPES:
    raise _fail(pid, "ans_type", f"must be one of {ANS_TYPES}, got {ans_type!r}")
  grade = _get(raw, pid, "grade", (int,))
  if not 1 <= grade <= 12:
    raise _fail(pid, "grade", f"must be in [1, 12], got {grade}")
  split = _get(raw, pid, "split", (str,), nonempty=True)
  choices = _get(raw, pid, "choices", (list, tuple), optional=True)
  if choices is not None:
    if not choices or not all(isinstance(c, str) and c.strip() for c in choices):
      raise _fail(pid, "choices", f"must be a non-empty list of non-empty strings, got "
                  f"{choices!r:.80}")
    choices = tuple(choices)
  if ques_type == "multi_choice":
    if choices is None:
      raise _fail(pid, "choices", "is None but ques_type is 'multi_choice'")
    if answer not in choices:
      raise _fail(pid, "answer", f"{answer!r} is not one of the choices {list(choices)}")
  family = raw.get("family")
  difficulty = raw.get("difficulty")
  if difficulty is not None and (isinstance(difficulty, bool) or not isinstance(difficulty, int)):
    raise _fail(pid, "difficulty", f"must be int or None, got {difficulty!r}")
  solutions = raw.get("solutions") or {}
  if not isinstance(solutions, Mapping) or not all(
      isinstance(k, str) and isinstance(v, str) for k, v in solutions.items()):
    raise _fail(pid, "solutions", f"must map style names to strings, got {solutions!r:.60}")
  return TabMWPRecord(
      pid=pid, question=question, choices=choices, answer=answer, unit=unit,
      table_title=table_title, table=table, table_for_pd=table_for_pd, row_num=row_num,
      column_num=column_num, solution=solution, ques_type=ques_type, ans_type=ans_type,
      grade=grade, split=split, family=family, difficulty=difficulty, solutions=dict(solutions))


def make_table(columns: Mapping[str, list[str]]) -> tuple[str, int, int]:
  """Renders TabMWP's pipe text for a headed table: returns (table, row_num, column_num)."""
  names = list(columns)
  n = len(columns[names[0]])
  lines = [" | ".join(names)]
  lines += [" | ".join(columns[c][i] for c in names) for i in range(n)]
  return "\n".join(lines), n + 1, len(names)
