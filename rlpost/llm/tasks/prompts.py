"""Prompt and target text for TabMWP records.

Follows PromptPG's TQ-SA format (Lu et al., "Dynamic Prompt Learning via Policy Gradient for
Semi-structured Mathematical Reasoning", ICLR 2023, arXiv 2209.14610, §10 of
llm_hybrids_and_agents.md): "Table: ...\\nQuestion: ...\\nOptions: (A) ...\\nAnswer: {solution}
The answer is {answer}."

    Table: Apples picked
    Name | Apples
    Ann | 12
    Cal | 30
    Question: How many apples did Ann and Cal pick in total? (Unit: apples)
    Answer:

and the target ` Ann | 12. Cal | 30. 12 + 30 = 42. The answer is 42.`

The target starts with a space so that `prompt + target` is the full text and the boundary
falls on a pre-token boundary of the shipped tokenizer (prompt and target can be encoded
separately and concatenated). Deviations from PromptPG: no in-context examples (zero-shot;
the policy is trained on this format); the unit hint is kept only when the record has a unit.
"""
from __future__ import annotations

from rlpost.llm.tasks import schema

ANSWER_PREFIX = "The answer is"
OPTION_LETTERS = "ABCDEFGHIJ"


def format_choices(choices: tuple[str, ...] | list[str]) -> str:
  if len(choices) > len(OPTION_LETTERS):
    raise ValueError(f"choices: at most {len(OPTION_LETTERS)} options can be lettered, got "
                     f"{len(choices)}")
  return " ".join(f"({OPTION_LETTERS[i]}) {c}" for i, c in enumerate(choices))


def format_prompt(record: schema.TabMWPRecord) -> str:
  """Table, question and (when multi-choice) lettered options, ending with "Answer:"."""
  title = f"Table: {record.table_title}\n" if record.table_title else "Table:\n"
  question = record.question
  if record.unit:
    question += f" (Unit: {record.unit})"
  lines = [title + record.table, f"Question: {question}"]
  if record.choices:
    lines.append(f"Options: {format_choices(record.choices)}")
  lines.append("Answer:")
  return "\n".join(lines)


def format_answer(answer: str) -> str:
  return f"{ANSWER_PREFIX} {answer}."


def format_target(record: schema.TabMWPRecord, style: str | None = None) -> str:
  """" {solution} The answer is {answer}." with the solution of `style` (None = record.solution).

  Real TabMWP solutions span several lines; newlines are kept.
  """
  if style is None:
    solution = record.solution
  elif style in record.solutions:
    solution = record.solutions[style]
  else:
    raise ValueError(f"record {record.pid!r} has no solution of style {style!r}; available: "
                     f"{sorted(record.solutions) or 'none (only record.solution)'}")
  solution = solution.strip()
  answer = format_answer(record.answer)
  return f" {solution} {answer}" if solution else f" {answer}"
