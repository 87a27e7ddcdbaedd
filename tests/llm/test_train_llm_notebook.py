"""Executes notebooks/llm_post_training.ipynb (smoke settings) with nbclient."""
import os
import pathlib

import nbformat
from nbclient import NotebookClient

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_train_llm_notebook_executes(tmp_path, monkeypatch):
  nb = nbformat.read(REPO / "notebooks" / "llm_post_training.ipynb", as_version=4)
  if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # the kernel inherits this
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax_cache"))
  NotebookClient(nb, timeout=900, kernel_name="python3",
                 resources={"metadata": {"path": str(REPO)}}).execute()
  outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                    for o in c.get("outputs", []))
  assert "after grpo (3 steps)" in outputs and "after dapo (3 steps)" in outputs
  assert "policy:" in outputs and "gold:" in outputs
  assert "Traceback" not in outputs
