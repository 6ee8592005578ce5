"""What every experiment binary shares: writing its outputs and its absl `main` (and, for the
experiments that study a small LM, training it: `trained_lm`).

An experiment is a module `experiments/<name>.py` with `run_experiment(config, workdir) ->
summary` (a notebook calls it directly) and, for the command line,

    if __name__ == "__main__":
        runner.main(run_experiment, "<name>")

which defines `--config` (default `configs/<name>.py`, overridable field by field:
`--config.seed=1`) and `--workdir` (default `workdirs/<name>`), runs the experiment and prints its
summary. Flags are defined only there, so importing an experiment defines none.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax

from jaxinterp import data as data_lib
from jaxinterp.train.checkpoint import load_params
from jaxinterp.train.config import build_model
from jaxinterp.train.loop import train


def write_outputs(workdir: str, summary: dict[str, Any],
                  figures: Mapping[str, Callable[[str], None]] = ()) -> dict[str, Any]:
    """Draws the figures and writes `summary.json` into `workdir` (on process 0 only).

    Args:
      workdir: the experiment's output directory (created if missing).
      summary: JSON-serialisable up to NumPy/JAX scalars and lists of them.
      figures: file name (e.g. "curves.png") -> a function that draws the figure to that path.

    Returns:
      The summary as plain Python types (what `summary.json` holds, so a caller's dict equals
      the file's).
    """
    summary = json.loads(json.dumps(summary, default=_plain))
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        for name, draw in dict(figures).items():
            draw(os.path.join(workdir, name))
        with open(os.path.join(workdir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
    return summary


def _plain(x: Any) -> Any:
    """NumPy/JAX scalars and arrays as Python numbers and lists (json's `default` hook)."""
    if hasattr(x, "tolist"):
        return x.tolist()
    raise TypeError(f"summary value {x!r} of type {type(x).__name__} is not JSON-serialisable")


def main(run_experiment: Callable[[Any, str], dict[str, Any]], name: str,
         omit: Sequence[str] = ()) -> None:
    """Runs `run_experiment` as an absl binary (see the module docstring).

    Args:
      run_experiment: `(config, workdir) -> summary`.
      name: the experiment's name: its config is `configs/<name>.py`, its workdir
        `workdirs/<name>` unless the flags say otherwise.
      omit: summary keys too long to print (they stay in `summary.json`).
    """
    from absl import app, flags, logging
    from ml_collections import config_flags

    config = config_flags.DEFINE_config_file("config", f"configs/{name}.py",
                                             "Experiment config.", lock_config=True)
    workdir = flags.DEFINE_string("workdir", f"workdirs/{name}", "Output directory.")

    def _main(argv: Sequence[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments {list(argv[1:])}: pass settings as "
                                 "--config.<field>=<value>")
        if not flags.FLAGS["verbosity"].present:  # orbax logs every save at INFO
            logging.set_verbosity(logging.WARNING)
        summary = run_experiment(config.value, workdir.value)
        print(json.dumps({k: v for k, v in summary.items() if k not in omit}, indent=2))
        written = sorted(f for f in os.listdir(workdir.value) if f.endswith((".png", ".json")))
        print(f"wrote to {workdir.value}: {', '.join(written)}")

    app.run(_main)


def trained_lm(lm: Any, workdir: str) -> tuple[Any, dict[str, Any], Any, Any]:
    """Trains (or resumes) the trainer config `lm` under `<workdir>/lm`; returns (model,
    variables, train source, eval source), the sources from `lm.data` (its `data_dir`, or the
    run's own `<workdir>/lm/data`)."""
    lm_dir = os.path.join(workdir, "lm")
    train(lm, lm_dir)
    model, variables = build_model(lm), {"params": load_params(lm_dir)}
    data_dir = lm.data.data_dir or os.path.join(lm_dir, "data")
    kwargs = dict(lm.data.builder_kwargs)
    train_src = data_lib.load_source(lm.data.name, lm.data.train_split, data_dir, **kwargs)
    eval_src = data_lib.load_source(lm.data.name, lm.data.eval_split, data_dir, **kwargs)
    return model, variables, train_src, eval_src
