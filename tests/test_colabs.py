"""Executes every notebook in colabs/ top to bottom; any cell that raises fails the test."""

from __future__ import annotations

import json
import pathlib
import re
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from ipykernel.kernelspec import write_kernel_spec  # noqa: E402
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402
from jupyter_client.manager import KernelManager  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "colabs").glob("*.ipynb"))
KERNEL = "python3"

# Appended to each notebook (in memory only): reports the kernel's interpreter and platform.
_PROBE = ("import json, os, sys\n"
          "print(json.dumps([sys.executable, sys.prefix, os.environ.get('JAX_PLATFORMS')]))")


@pytest.fixture(scope="module")
def kernel_spec_manager(tmp_path_factory) -> KernelSpecManager:
    """Finds only a private "python3" kernelspec that runs this interpreter on CPU.

    Whatever "python3" would resolve to otherwise (a user-level kernelspec, another Python on
    PATH), the notebooks run with `sys.executable` (the project's venv) and JAX_PLATFORMS=cpu.
    """
    kernels = tmp_path_factory.mktemp("kernels")
    write_kernel_spec(kernels / KERNEL, overrides={"env": {"JAX_PLATFORMS": "cpu"}})
    ksm = KernelSpecManager(kernel_dirs=[str(kernels)])
    spec = ksm.get_kernel_spec(KERNEL)
    assert spec.argv[0] == sys.executable, spec.argv
    return ksm


@pytest.mark.slow
@pytest.mark.parametrize(
    "path",
    NOTEBOOKS or [pytest.param(None, id="no-notebooks")],
    ids=lambda p: p.name if isinstance(p, pathlib.Path) else str(p),
)
def test_notebook_runs(path: pathlib.Path | None, kernel_spec_manager: KernelSpecManager):
    assert path is not None, f"no notebooks in {REPO / 'colabs'}: nothing was tested"
    nb = nbformat.read(path, as_version=4)
    n_cells = len(nb.cells)
    nb.cells.append(nbformat.v4.new_code_cell(_PROBE))
    client = nbclient.NotebookClient(
        nb,
        km=KernelManager(kernel_name=KERNEL, kernel_spec_manager=kernel_spec_manager),
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
