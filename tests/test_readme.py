"""The README's commands and user-code example are real: the example runs, and .ci/run calls exactly
the README's test command."""
import pathlib
import re

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _block_after(marker: str, lang: str) -> str:
  m = re.search(re.escape(f"<!-- {marker} -->") + rf"\s*```{lang}\n(.*?)```", README, re.S)
  assert m, f"README has no ```{lang} block after <!-- {marker} -->"
  return m.group(1)


def test_user_code_example_runs_and_produces_finite_gradients():
  namespace: dict = {}
  exec(compile(_block_after("user-code-example", "python"), "README-example", "exec"), namespace)
  grads, clip_frac = namespace["grads"], namespace["clip_frac"]
  assert grads.shape == (4, 8)
  assert np.all(np.isfinite(np.asarray(grads)))
  # On-policy (ratio 1): the gradient is -A / N on every token; group 1 is all-zero reward.
  assert float(clip_frac) == 0.0
  assert np.allclose(np.asarray(grads[2:]), 0.0)
  assert not np.allclose(np.asarray(grads[:2]), 0.0)


def test_ci_runs_exactly_the_readme_test_command():
  command = _block_after("test-command", "bash").strip()
  ci = (ROOT / ".ci" / "run").read_text()
  assert command in ci.splitlines(), "the README test command must appear verbatim in .ci/run"
  assert "-eq 5" in ci, ".ci/run must treat pytest's exit code 5 as a failure"


def test_paper_map_covers_all_seed_papers():
  assert "PAPER_MAP_PLACEHOLDER" not in README
  numbers = {int(m) for m in re.findall(r"^\| (\d+) \| ", README, re.M)}
  assert numbers == set(range(1, 38)), f"seed-paper map rows missing: {set(range(1, 38)) - numbers}"
