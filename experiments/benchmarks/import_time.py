"""`import jaxinterp` against `import jax, flax.linen`, each in a fresh interpreter.

    python -m experiments.benchmarks.import_time [--repeats=7]

`import jaxinterp` loads the models, sites and interventions; TFDS, grain, orbax and penzai
load only when `jaxinterp.data`, `.train`, `.sae` or `pretrained.to_penzai` are used. The two
commands alternate; the medians and their ratio are printed (target: close to 1).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

from absl import app, flags

_REPEATS = flags.DEFINE_integer("repeats", 7, "Timed runs of each command.")

COMMANDS = {"jax + flax.linen": "import jax, flax.linen",
            "jaxinterp": "import jaxinterp"}


def measure(repeats: int) -> dict[str, float]:
    """Median wall-clock seconds of each command (alternating, after one warm-up each)."""
    times: dict[str, list[float]] = {k: [] for k in COMMANDS}
    for i in range(repeats + 1):
        for name, code in COMMANDS.items():
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            if i:  # the first round warms the file cache
                times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv):
    del argv
    medians = measure(_REPEATS.value)
    base, ours = medians["jax + flax.linen"], medians["jaxinterp"]
    print(f"import jax, flax.linen: {base:.3f} s | import jaxinterp: {ours:.3f} s | "
          f"ratio {ours / base:.2f}")


if __name__ == "__main__":
    app.run(main)
