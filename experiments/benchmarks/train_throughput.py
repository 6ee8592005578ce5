"""Train-step throughput: the library's step against a minimal hand-written jax + optax step.

    python -m experiments.benchmarks.train_throughput [--n_layers=4 --d_model=256 ...]

Both steps train the same model (a GPT-2-style transformer) with the same optimizer on the same
batches, on one device. The library step goes through `jaxinterp.train` (sharded TrainState on
a 1-device mesh, `ji.run` forward pass, metrics dict, donation); the baseline is the 15 lines a
user would write by hand. Each is compiled first, then timed alternately over `--repeats`
blocks of `--steps` steps; medians are reported.

Also an estimate of model FLOP utilisation (MFU): XLA's FLOP count of one compiled step divided
by its time, against the machine's float32 matmul peak measured in the same run (a large
jitted matmul). Target: library overhead <= 3%.
"""

from __future__ import annotations

import functools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags
from ml_collections import ConfigDict

import jaxinterp as ji
from jaxinterp.train import sharding
from jaxinterp.train import state as state_lib
from jaxinterp.train import step as step_lib
from jaxinterp.train.optimizer import make_optimizer, schedule

OPT = ConfigDict(dict(name="adamw", learning_rate=1e-3, schedule="cosine", warmup_steps=10,
                      min_lr_ratio=0.1, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1,
                      grad_clip_norm=1.0))


def measure(n_layers=4, d_model=256, d_vocab=8192, seq=128, batch=16, steps=10,
            repeats=5) -> dict[str, float]:
    """Times both steps; returns tokens/s, the overhead ratio and the MFU estimate."""
    model = ji.models.build("gpt2_small", n_layers=n_layers, d_model=d_model,
                            n_heads=d_model // 64, d_head=64, d_mlp=4 * d_model,
                            d_vocab=d_vocab, n_ctx=seq)
    device = jax.devices()[:1]
    mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, device)
    total_steps = steps * repeats + 1
    opt = make_optimizer(OPT, total_steps)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, d_vocab, (batch, seq + 1)).astype(np.int32)
    batch_np = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}

    # The library step.
    state, shardings = state_lib.create(model, opt, batch_np["inputs"][:1], 0, mesh,
                                        sharding.DEFAULT_RULES)
    train_fn = functools.partial(step_lib.train_step, model=model, optimizer=opt,
                                 lr_schedule=schedule(OPT, total_steps))
    eval_fn = functools.partial(step_lib.eval_step, model=model)
    lib_step, _ = step_lib.compile_steps(mesh, shardings, train_fn, eval_fn)
    lib_batch = jax.device_put(batch_np, sharding.batch_sharding(mesh))

    # The hand-written baseline: same model, optimizer and initial parameters.
    def loss_fn(params, b):
        logits = model.apply({"params": params}, b["inputs"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, b["targets"]).mean()

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def plain_step(params, opt_state, b):
        loss, grads = jax.value_and_grad(loss_fn)(params, b)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    params = jax.tree.map(jnp.copy, state.params)
    opt_state = opt.init(params)
    plain_batch = jax.device_put(batch_np, device[0])

    flops = lib_step.lower(state, lib_batch).compile().cost_analysis()
    flops = (flops[0] if isinstance(flops, list) else flops).get("flops", float("nan"))

    state, m = lib_step(state, lib_batch)  # warm-up (compiled above; first call runs)
    jax.block_until_ready(m)
    params, opt_state, loss = plain_step(params, opt_state, plain_batch)
    jax.block_until_ready(loss)

    lib_times, plain_times = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(steps):
            state, m = lib_step(state, lib_batch)
        jax.block_until_ready(m)
        lib_times.append((time.perf_counter() - t) / steps)
        t = time.perf_counter()
        for _ in range(steps):
            params, opt_state, loss = plain_step(params, opt_state, plain_batch)
        jax.block_until_ready(loss)
        plain_times.append((time.perf_counter() - t) / steps)

    peak = matmul_peak(device[0])
    lib_t, plain_t = statistics.median(lib_times), statistics.median(plain_times)
    tokens_per_step = batch * seq
    return {
        "library_tokens_per_s": tokens_per_step / lib_t,
        "plain_tokens_per_s": tokens_per_step / plain_t,
        "library_ms": 1e3 * lib_t, "plain_ms": 1e3 * plain_t,
        "overhead": lib_t / plain_t - 1.0,
        "step_flops": flops, "peak_flops": peak,
        "mfu": flops / lib_t / peak,
        "params": sum(x.size for x in jax.tree.leaves(state.params)),
    }


def matmul_peak(device, n: int = 2048, repeats: int = 5) -> float:
    """Measured float32 matmul FLOP/s on `device` (median of `repeats` timed products)."""
    a = jax.device_put(jnp.ones((n, n), jnp.float32), device)
    f = jax.jit(lambda x: x @ x)
    jax.block_until_ready(f(a))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(f(a))
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times)


def report(r: dict[str, float]) -> str:
    return "\n".join([
        f"train throughput: {r['params'] / 1e6:.1f}M parameters, on {jax.devices()[0]}",
        f"  library step:     {r['library_ms']:8.1f} ms  {r['library_tokens_per_s']:10.0f} tok/s",
        f"  hand-written:     {r['plain_ms']:8.1f} ms  {r['plain_tokens_per_s']:10.0f} tok/s",
        f"  overhead = {100 * r['overhead']:+.2f}% (target <= 3%)",
        f"  MFU ~ {100 * r['mfu']:.1f}% ({r['step_flops'] / 1e9:.1f} GFLOP/step against a "
        f"measured matmul peak of {r['peak_flops'] / 1e9:.1f} GFLOP/s)",
    ])


def main(argv):
    del argv
    f = flags.FLAGS
    print(report(measure(f.n_layers, f.d_model, f.d_vocab, f.seq, f.batch, f.steps,
                         f.repeats)))


if __name__ == "__main__":  # flags defined here, so other modules can import measure()
    flags.DEFINE_integer("n_layers", 4, "Blocks.")
    flags.DEFINE_integer("d_model", 256, "Residual width (d_head = 64).")
    flags.DEFINE_integer("d_vocab", 8192, "Vocabulary.")
    flags.DEFINE_integer("seq", 128, "Tokens per sequence.")
    flags.DEFINE_integer("batch", 16, "Sequences per step.")
    flags.DEFINE_integer("steps", 10, "Steps per timed block.")
    flags.DEFINE_integer("repeats", 5, "Timed blocks per step function.")
    app.run(main)
