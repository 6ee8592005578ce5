"""`import jaxinterp` is light: no TFDS, orbax, grain or penzai until a submodule needs them."""

import subprocess
import sys

HEAVY = ("tensorflow_datasets", "orbax", "grain", "penzai", "treescope", "matplotlib")


def _loaded(code: str) -> list[str]:
    probe = f"{code}; import sys; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True,
                         text=True).stdout.strip()
    return [m for m in out.split(",") if m]


def test_import_jaxinterp_loads_no_heavy_dependency():
    assert _loaded("import jaxinterp as ji; ji.models.build('gpt2_small'); ji.Add") == []


def test_submodules_load_on_first_use():
    assert "orbax" in _loaded("import jaxinterp as ji; ji.train.load")
    assert "tensorflow_datasets" in _loaded("from jaxinterp import data")
    assert "penzai" in _loaded("import jaxinterp as ji; ji.pretrained.to_penzai")
