"""Executes a notebook in colabs/ top to bottom; any cell that raises fails the test.

One test file per notebook (`test_<name>.py`), so that pytest-xdist's `--dist loadfile` runs
the notebooks on different workers; `test_every_notebook_is_tested.py` checks the files exist.
"""

from __future__ import annotations

import json
import pathlib
import re
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO / "colabs").glob("*.ipynb"))
KERNEL = "python3"

# Appended to each notebook (in memory only): reports the kernel's interpreter and platform.
_PROBE = ("import json, os, sys\n"
          "print(json.dumps([sys.executable, sys.prefix, os.environ.get('JAX_PLATFORMS')]))")


def kernel_spec_manager(kernels: pathlib.Path):
    """Finds only a private "python3" kernelspec that runs this interpreter on CPU.

    Whatever "python3" would resolve to otherwise (a user-level kernelspec, another Python on
    PATH), the notebooks run with `sys.executable` (the project's venv) and JAX_PLATFORMS=cpu.
    """
    from ipykernel.kernelspec import write_kernel_spec
    from jupyter_client.kernelspec import KernelSpecManager

    write_kernel_spec(kernels / KERNEL, overrides={"env": {"JAX_PLATFORMS": "cpu"}})
    ksm = KernelSpecManager(kernel_dirs=[str(kernels)])
    spec = ksm.get_kernel_spec(KERNEL)
    assert spec.argv[0] == sys.executable, spec.argv
    return ksm


def run_notebook(name: str, kernels: pathlib.Path) -> None:
    """Runs colabs/{name} in a fresh kernel of this venv; fails the test on any cell's error."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    from jupyter_client.manager import KernelManager

    path = REPO / "colabs" / name
    assert path.exists(), f"{path} does not exist"
    nb = nbformat.read(path, as_version=4)
    n_cells = len(nb.cells)
    nb.cells.append(nbformat.v4.new_code_cell(_PROBE))
    ksm = kernel_spec_manager(kernels)
    client = nbclient.NotebookClient(
        nb,
        km=KernelManager(kernel_name=KERNEL, kernel_spec_manager=ksm),
        kernel_name=KERNEL,
        timeout=600,
        resources={"metadata": {"path": str(REPO)}},  # the kernel's working directory
    )
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as e:
        message = re.sub(r"\x1b\[[0-9;]*m", "", str(e))  # drop the traceback's ANSI colours
        pytest.fail(f"{path.name}: a cell raised:\n{message}", pytrace=False)

    assert all(c.cell_type != "code" or c.execution_count for c in nb.cells[:n_cells])
    probe = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream")
    executable, prefix, platforms = json.loads(probe)
    assert (executable, prefix) == (sys.executable, sys.prefix)  # the same venv as pytest
    assert platforms == "cpu"
