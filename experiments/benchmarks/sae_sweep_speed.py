"""SAE sweep speed: 8 SAEs trained together (`jaxinterp.sae.sweep`) against the same 8 trained one
after another (`jaxinterp.sae.fit` each), in one run.

    python -m experiments.benchmarks.sae_sweep_speed [--d_sae=1024 --steps=10 --repeats=3 ...]

The model is a small GPT-2-style LM with random weights (`gpt2_small` resized: 2 layers,
d_model 128, 4 heads, d_mlp 512, vocabulary 4096, context 64); the SAEs read
`blocks.1.hook_resid_post` (d_in 128). The grid: ReLU SAEs of widths d_sae and 2 d_sae, each
with L1 coefficients 1e-3, 3e-3, 1e-2, 3e-2: 8 SAEs, 2 compiled groups of 4. Every training
step takes `batch` x 64 = 1024 token rows (one model batch per step, `buffer_batches=1`,
shuffled), Adam, b_dec initialised from the first batch.

Both sides run `3 * steps` steps on the same token batches on the default mesh (every device
on data). Timing: the token iterator records when each batch is requested, and the loop syncs
at every logged step (`log_every = steps`: it reads the metrics), so the time between the
requests that follow logged steps `steps` and `2 * steps` is `steps` steady-state steps, free
of compilation (which happens in the first `steps`). Per repeat: the sweep's steady step time
and the sum over the 8 fits of theirs, and both end-to-end times (with compilation). The sides
alternate (which one goes first alternates too) over `repeats` repeats; medians are reported,
and the ratio (8 fits / sweep) of the medians and the median of the per-repeat ratios. Before
timing, the first repeat checks that every sweep member's final parameters equal its fit's
(max relative difference printed).

Measured (2026-12-01, 2 shared CPU cores, `--steps=8 --repeats=3`, medians; two runs):

    load     sweep ms/step  8 fits ms/step  ratio (steady)  per-repeat ratios  end to end
    17-24        463            771            1.67            0.75 (noisy)     82 / 26 s = 3.2
    2-6          353            274            0.78            0.78             28 / 13 s = 2.2

So on this CPU the sweep wins end to end (2.2-3.2x: one compilation per group instead of one
per SAE, one forward pass instead of 8) but NOT per steady step: with the machine quiet, the
vmapped step of 4 SAEs is slower than 4 unbatched steps (XLA:CPU's batched matmuls are slower
than its plain ones; the 7 saved forward passes of this small model do not make up for it).
The first (loaded) run's 1.67 is load noise (its repeats: sweep 1938 / 463 / 365 ms). Not
yet tried: a group's encoders concatenated into one [d_in, m * d_sae] matmul instead of
vmap, and a GPU (no device was lent to this task). Members vs fits after 24 steps: max
relative difference 4.7e-3 (|x| + 1e-3 denominators; batched rounding, amplified by
training), against 1e-5 on the tests' tiny shapes and 8 steps.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator

import jax
import numpy as np
from absl import app

import jaxinterp as ji
from experiments.benchmarks import cli
from jaxinterp.sae import sweep as sweep_lib
from jaxinterp.sae import train as train_lib
from jaxinterp.sae.model import SAEConfig

L1 = (1e-3, 3e-3, 1e-2, 3e-2)


class Clock:
    """Token batches [batch, seq] that record the time at which each one is requested."""

    def __init__(self, batches: list[np.ndarray]):
        self.batches, self.times = batches, []

    def __iter__(self) -> Iterator[np.ndarray]:
        for b in self.batches:
            self.times.append(time.perf_counter())
            yield b


def steady(times: list[float], steps: int) -> float:
    """Seconds per step between the requests after logged steps `steps` and `2 * steps`.

    Request 0 is the trainer's look at the first batch (which step 1 then uses), request i
    is step i + 1's batch, made once step i is dispatched; a logged step syncs, so request
    `steps` comes right after step `steps` has finished."""
    return (times[2 * steps] - times[steps]) / steps


def measure(d_in: int = 128, d_sae: int = 1024, batch: int = 16, seq: int = 64,
            n_layers: int = 2, d_vocab: int = 4096, steps: int = 10, repeats: int = 3) -> dict:
    """Times the sweep and the 8 fits; returns times (s), ratios and the agreement check. The
    int arguments are the binary's flags (`experiments.benchmarks.cli`).

    Args:
      d_in: The model's width d_model (= the SAEs' d_in).
      d_sae: Width of the first 4 SAEs (the other 4: twice it).
      batch: Sequences per model batch (= per training step).
      seq: Tokens per sequence.
      n_layers: Model layers (the SAEs read the last one's residual stream).
      d_vocab: Vocabulary size.
      steps: Steady-state steps timed (each side runs 3 x steps).
      repeats: Timed repeats per side.
    """
    model = ji.models.build("gpt2_small", n_layers=n_layers, d_model=d_in,
                            n_heads=max(1, d_in // 32), d_head=min(32, d_in),
                            d_mlp=4 * d_in, d_vocab=d_vocab, n_ctx=seq)
    rng = np.random.default_rng(0)
    tokens = [rng.integers(0, d_vocab, (batch, seq)).astype(np.int32)
              for _ in range(3 * steps + 1)]
    variables = model.init(jax.random.key(0), tokens[0])
    site = f"blocks.{n_layers - 1}.hook_resid_post"
    base = SAEConfig("relu", d_in=d_in, d_sae=d_sae, site=site)
    tc = train_lib.TrainConfig(num_steps=3 * steps, batch_size=batch * seq, buffer_batches=1,
                               learning_rate=1e-3, warmup_steps=steps, log_every=steps)
    configs, trains = sweep_lib.grid(base, tc, d_sae=[d_sae, 2 * d_sae], l1_coeff=list(L1))

    def run_sweep():
        clock = Clock(tokens)
        t = time.perf_counter()
        result = sweep_lib.sweep(configs, trains, model, variables, clock, verbose=False)
        jax.block_until_ready(result.params)
        return time.perf_counter() - t, steady(clock.times, steps), result

    def run_fits():
        total, step, fits = 0.0, 0.0, []
        for c, t_ in zip(configs, trains, strict=True):
            clock = Clock(tokens)
            t = time.perf_counter()
            fits.append(train_lib.fit(c, t_, model, variables, clock, verbose=False))
            jax.block_until_ready(fits[-1].params)
            total += time.perf_counter() - t
            step += steady(clock.times, steps)
        return total, step, fits

    res: dict = {"device": str(jax.devices()[0]), "n_devices": len(jax.devices()),
                 "shapes": dict(d_in=d_in, d_sae=(d_sae, 2 * d_sae), rows=batch * seq,
                                n_layers=n_layers, d_vocab=d_vocab), "steps": steps,
                 "repeats": repeats, "groups": None, "max_rel_diff": None}
    sweep_total, sweep_step, fits_total, fits_step = [], [], [], []
    for r in range(repeats):
        order = ("sweep", "fits") if r % 2 == 0 else ("fits", "sweep")
        for side in order:
            if side == "sweep":
                total, step, result = run_sweep()
                sweep_total.append(total)
                sweep_step.append(step)
            else:
                total, step, fits = run_fits()
                fits_total.append(total)
                fits_step.append(step)
        if r == 0:
            res["groups"] = result.groups
            res["max_rel_diff"] = max(
                float(np.max(np.abs(np.asarray(result.params[i][k]) - np.asarray(f.params[k]))
                             / (np.abs(np.asarray(f.params[k])) + 1e-3)))
                for i, f in enumerate(fits) for k in f.params)
    med = statistics.median
    res.update(sweep_step_s=med(sweep_step), fits_step_s=med(fits_step),
               sweep_total_s=med(sweep_total), fits_total_s=med(fits_total),
               ratio=med(fits_step) / med(sweep_step),
               ratio_of_repeats=med(f / s for f, s in zip(fits_step, sweep_step, strict=True)),
               ratio_total=med(fits_total) / med(sweep_total),
               sweep_steps_all=sweep_step, fits_steps_all=fits_step)
    return res


def report(r: dict) -> str:
    s = r["shapes"]
    ms = 1e3
    return "\n".join([
        f"SAE sweep speed on {r['device']} ({r['n_devices']} devices): 8 ReLU SAEs, d_in "
        f"{s['d_in']}, d_sae {s['d_sae'][0]} x 4 and {s['d_sae'][1]} x 4 (groups "
        f"{r['groups']}), {s['rows']} rows per step, {s['n_layers']}-layer model (vocab "
        f"{s['d_vocab']}); {r['steps']} steady steps, {r['repeats']} repeats, medians",
        f"  sweep:           {ms * r['sweep_step_s']:8.1f} ms/step   end to end "
        f"{r['sweep_total_s']:6.1f} s (with compilation)",
        f"  8 fits in turn:  {ms * r['fits_step_s']:8.1f} ms/step   end to end "
        f"{r['fits_total_s']:6.1f} s",
        f"  ratio (8 fits / sweep) = {r['ratio']:.2f} per steady step (median of per-repeat "
        f"ratios {r['ratio_of_repeats']:.2f}; end to end {r['ratio_total']:.2f})",
        "  per repeat (ms/step): sweep "
        + " ".join(f"{ms * x:.0f}" for x in r["sweep_steps_all"]) + ", fits "
        + " ".join(f"{ms * x:.0f}" for x in r["fits_steps_all"]),
        f"  sweep members == fits: max relative difference {r['max_rel_diff']:.1e}",
    ])


def main(argv):
    del argv
    print(report(measure(**cli.int_flag_values(measure))))


if __name__ == "__main__":  # flags defined here, so other modules can import measure()
    cli.define_int_flags(measure)
    app.run(main)
