"""Generation speed: `ji.generate` with four interventions vs without, and vs a Python loop of
single jitted decode steps (on CPU).

    python -m experiments.benchmarks.generation_speed                  # gpt2_small, 12 layers
    python -m experiments.benchmarks.generation_speed --n_layers=2 --new=8 --repeats=1

Model: `ji.models.build("gpt2_small", n_layers=...)` (d_model 768, vocab 50257) with random
weights; `--batch` random prompts of `--prompt` tokens; greedy decoding of `--new` tokens (no
EOS, so every call runs all steps).

  clean:    `ji.generate(model, variables, prompt, new)`: prefill and a compiled
            `lax.while_loop` of decode steps over the KV cache.
  steered:  the same with four interventions applied at every step: `Add` of a steering
            vector at blocks.{L/4}.hook_resid_post, `Scale` of two heads' hook_z at
            blocks.{L/2}, `Clamp` of 64 MLP neurons at blocks.{3L/4 - 1}.mlp.hook_post and
            `ProjectOut` of a direction at blocks.{L-1}.hook_resid_pre.
  loop:     a Python loop calling one jitted decode step (`model.apply(..., cache=, offset=)`
            on one token, then argmax) per new token after one jitted prefill: what a user
            writes without `generate`. Same tokens as `clean` (checked).

All are compiled by a first call ("first call" times), then timed alternately `--repeats`
times (median, min, max). Reported: tokens/s (batch * new / time) of each, the steered overhead
`steered / clean - 1` (goal <= 5%) and `loop / clean`. The machine is shared: quote the load.

Measured (2026-12-01, defaults: 12 layers, 4 prompts x 16 tokens, 48 new tokens, 3 timed calls
per side, 2 CPU cores shared with three other sessions, load average 12.7 before -> 15.5
after): generate 10.09 s (19.0 tokens/s; min 8.12 s), with four interventions 9.40 s (20.4
tokens/s; min 8.14 s), Python loop of jitted decode steps 21.96 s (8.7 tokens/s; min 18.84 s):
steered / clean - 1 = -6.9% by medians, +0.2% fastest against fastest (the interventions
cost less than the noise); loop / generate = 2.18. First calls (compile + run) 27.5 / 30.0 /
34.6 s. The loop decodes the same tokens as generate.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jaxinterp as ji
from experiments.benchmarks.timing import first_calls, timed_calls
from jaxinterp.models.transformer import init_cache

OVERHEAD_GOAL = 0.05  # steered / clean - 1 at most this


def interventions(model) -> list:
    """Four interventions at four layers (see the module docstring)."""
    c = model.config
    n = c.n_layers
    d = c.d_model
    vec = jax.random.normal(jax.random.key(7), (d,)) / np.sqrt(d)
    neurons = np.zeros(c.d_mlp, bool)
    neurons[:64] = True
    return [ji.Add(f"blocks.{n // 4}.hook_resid_post", vec, scale=4.0),
            ji.Scale(f"blocks.{n // 2}.attn.hook_z", 0.5, heads=[0, 1]),
            ji.Clamp(f"blocks.{max(3 * n // 4 - 1, 0)}.mlp.hook_post", 0.0, mask=neurons),
            ji.ProjectOut(f"blocks.{n - 1}.hook_resid_pre", vec)]


@functools.partial(jax.jit, static_argnames=("model", "length"))
def _prefill(variables, prompt, *, model, length):
    cache = init_cache(model, prompt.shape[0], length)
    logits, cache = model.apply(variables, prompt, cache=cache, offset=0)
    return jnp.argmax(logits[:, -1], -1).astype(jnp.int32), cache


@functools.partial(jax.jit, static_argnames=("model",))
def _decode_step(variables, token, cache, offset, *, model):
    logits, cache = model.apply(variables, token[:, None], cache=cache, offset=offset)
    return jnp.argmax(logits[:, -1], -1).astype(jnp.int32), cache


def python_loop(model, variables, prompt, new: int) -> jax.Array:
    """Greedy decoding as a Python loop of jitted single decode steps: [batch, P + new]."""
    p = prompt.shape[1]
    tok, cache = _prefill(variables, prompt, model=model, length=p + new)
    out = [tok]
    for t in range(p, p + new - 1):
        tok, cache = _decode_step(variables, tok, cache, np.int32(t), model=model)
        out.append(tok)
    return jnp.concatenate([prompt, jnp.stack(out, 1)], 1)


def measure(n_layers: int = 12, batch: int = 4, prompt: int = 16, new: int = 48,
            repeats: int = 3, verbose: bool = False, **model_overrides: Any) -> dict[str, Any]:
    """Times clean, steered and the Python loop; returns tokens/s, ratios and checks."""
    log = print if verbose else (lambda *a, **k: None)
    model = ji.models.build("gpt2_small", n_layers=n_layers, **model_overrides)
    c = model.config
    tokens = jax.random.randint(jax.random.key(1), (batch, prompt), 0, c.d_vocab, jnp.int32)
    variables = jax.jit(model.init)(jax.random.key(0), tokens)
    ivs = interventions(model)
    res: dict[str, Any] = dict(n_layers=n_layers, batch=batch, prompt=prompt, new=new,
                               repeats=repeats, d_model=c.d_model, d_vocab=c.d_vocab,
                               device=str(jax.devices()[0]), load_before=os.getloadavg())
    fns = {
        "clean": lambda: ji.generate(model, variables, tokens, new).tokens,
        "steered": lambda: ji.generate(model, variables, tokens, new, interventions=ivs).tokens,
        "loop": lambda: python_loop(model, variables, tokens, new),
    }
    outs = first_calls(fns, res, log)
    res["loop_equals_clean"] = bool(np.array_equal(outs["loop"], outs["clean"]))
    res["steering_changes_tokens"] = bool(not np.array_equal(outs["steered"], outs["clean"]))
    timed_calls(fns, repeats, res, log)
    for name in fns:
        res[f"{name}_tok_s"] = batch * new / (res[f"{name}_ms"] / 1e3)
    res["overhead"] = res["steered_ms"] / res["clean_ms"] - 1.0
    res["loop_ratio"] = res["loop_ms"] / res["clean_ms"]
    res["load_after"] = os.getloadavg()
    return res


def report(res: dict[str, Any]) -> str:
    """A human-readable report of `measure`'s results."""
    load = "/".join(f"{x:.1f}" for x in res["load_before"])
    load2 = "/".join(f"{x:.1f}" for x in res["load_after"])

    def line(name, label):
        lo, hi = res[f"{name}_range_ms"]
        return (f"    {label:<34} {res[f'{name}_ms']:10.1f} ms (min {lo:.1f}, max {hi:.1f}); "
                f"{res[f'{name}_tok_s']:8.1f} tokens/s; first call {res[f'first_{name}_s']:.1f} s")

    goal = "" if res["overhead"] <= OVERHEAD_GOAL else "  ** above goal **"
    return "\n".join([
        f"generation speed: gpt2_small shape, {res['n_layers']} layers, d_model {res['d_model']}, "
        f"vocab {res['d_vocab']}; {res['batch']} prompts x {res['prompt']} tokens, "
        f"{res['new']} new tokens (greedy) on {res['device']}; medians of {res['repeats']} calls",
        f"    load average (1/5/15 min) before {load}, after {load2}",
        line("clean", "generate"),
        line("steered", "generate + 4 interventions"),
        line("loop", "Python loop of jitted decode steps"),
        f"    loop tokens == generate tokens: {res['loop_equals_clean']}; steering changes the "
        f"tokens: {res['steering_changes_tokens']}",
        f"steered / clean - 1 = {100 * res['overhead']:+.1f}% (goal <= "
        f"{100 * OVERHEAD_GOAL:.0f}%){goal}",
        f"    (fastest steered / fastest clean - 1 = "
        f"{100 * (res['steered_range_ms'][0] / res['clean_range_ms'][0] - 1):+.1f}%)",
        f"loop / generate = {res['loop_ratio']:.2f}",
    ])


def main(argv: list[str]) -> None:
    from absl import app, flags

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    jax.config.update("jax_platforms", "cpu")
    f = flags.FLAGS
    res = measure(n_layers=f.n_layers, batch=f.batch, prompt=f.prompt, new=f.new,
                  repeats=f.repeats, verbose=True)
    print()
    print(report(res))


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_integer("n_layers", 12, "Layers of gpt2_small (12 is the full model).")
    flags.DEFINE_integer("batch", 4, "Prompts.")
    flags.DEFINE_integer("prompt", 16, "Tokens per prompt.")
    flags.DEFINE_integer("new", 48, "New tokens per prompt.")
    flags.DEFINE_integer("repeats", 3, "Timed calls per side (median reported).")
    app.run(main)
