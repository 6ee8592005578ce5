"""`make demo`: capture and intervene on a small transformer, and print what changed.

    python -m experiments.demo

Builds a 2-layer GPT-2-style model, captures attention patterns, then (1) adds a steering
vector to the residual stream and (2) zero-ablates one attention head, printing how the
next-token distribution and downstream sites move. Takes a few seconds on a CPU.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import jaxinterp as ji


def main() -> None:
    model = ji.models.build("gpt2_small", n_layers=2, d_model=64, n_heads=4, d_head=16,
                            d_mlp=256, d_vocab=100, n_ctx=32)
    tokens = jax.random.randint(jax.random.key(1), (4, 16), 0, 100)
    variables = model.init(jax.random.key(0), tokens)
    print(f"model: gpt2_small shape with 2 layers, {len(ji.sites(model, tokens))} sites")

    run = jax.jit(ji.run, static_argnums=0, static_argnames=("capture",))
    logits, cache = run(model, variables, tokens, capture=("blocks.*.attn.hook_pattern",
                                                           "blocks.*.hook_resid_post"))
    print("captured:", {k: tuple(v.shape) for k, v in cache.items()})
    pattern = np.asarray(cache["blocks.0.attn.hook_pattern"][0, 0])
    print(f"layer 0 head 0 attends to the first token with mean weight {pattern[:, 0].mean():.3f}")

    # (1) Steering: add a random unit vector at layer 0's output, at strength 8.
    vec = jax.random.normal(jax.random.key(2), (64,))
    vec = vec / jnp.linalg.norm(vec)
    steer = [ji.Add("blocks.0.hook_resid_post", vec, scale=8.0)]
    steered, scache = run(model, variables, tokens, capture=("blocks.*.hook_resid_post",),
                          interventions=steer)
    print_change("steering blocks.0.hook_resid_post by 8 x unit vector", logits, steered)
    for name in ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post"):
        d = np.abs(np.asarray(scache[name] - cache[name])).max()
        print(f"  max |change| at {name}: {d:.3f}")

    # (2) Ablation: zero head 2 of layer 1 (its output hook_z), leaving the other heads.
    ablated, _ = run(model, variables, tokens,
                     interventions=[ji.Ablate("blocks.1.attn.hook_z", heads=[2])])
    print_change("zero-ablating head 1.2", logits, ablated)


def print_change(what: str, clean: jax.Array, new: jax.Array) -> None:
    p, q = jax.nn.log_softmax(clean), jax.nn.log_softmax(new)
    kl = float(jnp.mean(jnp.sum(jnp.exp(p) * (p - q), -1)))
    flips = float(jnp.mean(clean.argmax(-1) != new.argmax(-1)))
    print(f"{what}: KL(clean || new) = {kl:.4f} nats/token; top-1 prediction changed at "
          f"{flips:.0%} of positions")


if __name__ == "__main__":
    main()
