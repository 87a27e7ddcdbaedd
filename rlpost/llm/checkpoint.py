"""Orbax checkpoints of an LLM train state, and the resume-config guard.

A train state is a plain dict pytree (see `rlpost.llm.train.init_train_state`):
  params           nnx.State of the policy
  opt_state        optax state
  step             int32 scalar: optimizer steps taken in this phase
  rng              uint32 key data of the phase's base PRNG key
  data_pos         int32 scalar: prompts consumed from the data stream (the iterator position)
  objective_state  the objective's state pytree (None when stateless)

`orbax.checkpoint.CheckpointManager` writes each step into a temporary directory and renames it
when complete, so a process killed mid-write (SIGKILL included) leaves either the previous
checkpoints or a finished one; unfinished temporaries are ignored and cleaned on the next start.
Saving is synchronous (no async thread) so a returned `save` means the step is on disk.
"""
from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Mapping, Optional, Sequence

import jax
import orbax.checkpoint as ocp


class ResumeConfigError(ValueError):
  """A workdir is resumed with a config that differs in a field that changes shapes."""


class Checkpointer:
  """Thin wrapper over `ocp.CheckpointManager` for one phase's train state."""

  def __init__(self, directory: str | os.PathLike, *, max_to_keep: int = 2):
    self.directory = pathlib.Path(directory).absolute()
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                             enable_async_checkpointing=False))

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def all_steps(self) -> Sequence[int]:
    return self._manager.all_steps()

  def save(self, step: int, state: Any) -> None:
    self._manager.save(int(step), args=ocp.args.StandardSave(state), force=True)
    self._manager.wait_until_finished()

  def restore(self, like: Any, step: Optional[int] = None) -> Any:
    """Restores `step` (default: latest) into the structure, shapes and dtypes of `like`."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

  def close(self) -> None:
    self._manager.close()


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, Mapping):
      out.update(_flatten(v, key + "."))
    else:
      out[key] = list(v) if isinstance(v, tuple) else v
  return out


def check_resume_config(workdir: str | os.PathLike, config: Mapping[str, Any],
                        shape_fields: Sequence[str], *, filename: str = "run_config.json"
                        ) -> bool:
  """Writes `config` to workdir/filename on a fresh run; on resume, compares shape fields.

  Args:
    workdir: the run directory.
    config: nested dict of the run's config.
    shape_fields: dotted names ("model.hidden_size") whose change makes old checkpoints
      unloadable; prefixes match ("model" covers every model.* field).
    filename: where the config is stored.

  Returns:
    True when a stored config was found (a resume), False on a fresh run.

  Raises:
    ResumeConfigError naming the first differing field and both values.
  """
  path = pathlib.Path(workdir) / filename
  flat = _flatten(config)
  if not path.exists():
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(flat, indent=1, sort_keys=True, default=str))
    os.replace(tmp, path)  # atomic
    return False
  stored = json.loads(path.read_text())
  for key in sorted(set(stored) | set(flat)):
    if not any(key == f or key.startswith(f + ".") for f in shape_fields):
      continue
    old, new = stored.get(key), json.loads(json.dumps(flat.get(key), default=str))
    if old != new:
      raise ResumeConfigError(
          f"cannot resume {str(workdir)!r}: config field {key!r} changed from {old!r} to "
          f"{new!r}, which changes parameter/data shapes; use a new --workdir")
  return True
