"""An independent NumPy (float64) transformer forward pass, written from the equations.

It shares no code with jaxinterp. `forward` returns the logits and a dict of activations keyed
by TransformerLens site names, and accepts `hooks={name: fn(array) -> array}` so that tests can
express an intervention as plain NumPy and compare with `jaxinterp.run`.

Register tokens (`cfg.n_register_tokens` = R): `W_reg` [R, d_model] is prepended after the
embeddings, block sites and `ln_final.hook_normalized` hold R + pos positions, and the logits
drop the first R.
"""

from __future__ import annotations

import math

import flax.linen as nn
import numpy as np
from scipy.special import erf


def _gelu(x, approximate):
    if approximate:
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + erf(x / math.sqrt(2)))


ACT = {
    "gelu": lambda x: _gelu(x, False),
    "gelu_new": lambda x: _gelu(x, True),
    "relu": lambda x: np.maximum(x, 0),
    "silu": lambda x: x / (1 + np.exp(-x)),
}


def _norm(x, p, kind, eps):
    if kind == "LN":
        x = x - x.mean(-1, keepdims=True)
        return x / np.sqrt((x**2).mean(-1, keepdims=True) + eps) * p["w"] + p["b"]
    if kind == "RMS":
        return x / np.sqrt((x**2).mean(-1, keepdims=True) + eps) * p["w"]
    return x


def _norm_sites(site, prefix, x, p, kind, eps):
    """`_norm` with its two sites: `{prefix}.hook_scale` (1 / sqrt(var + eps), [..., 1]) and
    `{prefix}.hook_normalized`."""
    if kind == "LN":
        x = x - x.mean(-1, keepdims=True)
    scale = site(prefix + ".hook_scale", 1 / np.sqrt((x**2).mean(-1, keepdims=True) + eps))
    out = x * scale * p["w"] + (p["b"] if kind == "LN" else 0)
    return site(prefix + ".hook_normalized", out)


def _rotary(x, dim, base):
    """x [b, pos, h, d]: rotate pairs (i, i + dim/2) by angle pos * base^(-2i/dim)."""
    n = x.shape[1]
    half = dim // 2
    out = x.copy()
    for p in range(n):
        for i in range(half):
            theta = p * base ** (-i / half)
            c, s = math.cos(theta), math.sin(theta)
            x1, x2 = x[:, p, :, i], x[:, p, :, i + half]
            out[:, p, :, i] = x1 * c - x2 * s
            out[:, p, :, i + half] = x2 * c + x1 * s
    return out


def forward(cfg, variables, tokens, hooks=None):
    """Returns (logits [b, pos, vocab], {site name: activation}) in float64."""
    hooks = hooks or {}
    params = nn.meta.unbox(variables)["params"]
    params = {k: _f64(v) for k, v in params.items()}
    acts = {}

    def site(name, x):
        if name in hooks:
            x = np.asarray(hooks[name](x), np.float64)
        acts[name] = x
        return x

    tokens = np.asarray(tokens)
    b, n = tokens.shape
    x = site("hook_embed", params["embed"]["W_E"][tokens])
    if cfg.positional_embedding_type == "standard":
        x = x + site("hook_pos_embed", np.broadcast_to(params["pos_embed"]["W_pos"][:n],
                                                       (b, n, cfg.d_model)))
    n_reg = getattr(cfg, "n_register_tokens", 0)
    if n_reg:  # registers first: token t sits at position R + t from here on
        x = np.concatenate([np.broadcast_to(params["W_reg"], (b, n_reg, cfg.d_model)), x], 1)
        n += n_reg
    h, dh = cfg.n_heads, cfg.d_head
    kvh = cfg.n_key_value_heads or h
    for layer in range(cfg.n_layers):
        p = params[f"blocks_{layer}"]
        pre = f"blocks.{layer}."
        resid = site(pre + "hook_resid_pre", x)
        a = p["attn"]
        y = _norm_sites(site, pre + "ln1", resid, p.get("ln1"), cfg.normalization_type,
                        cfg.eps) if cfg.normalization_type else resid

        def proj(name, y=y, a=a):
            out = np.einsum("bpm,nmd->bpnd", y, a[f"W_{name}"])
            return out + a[f"b_{name}"] if cfg.use_bias else out

        q = site(pre + "attn.hook_q", proj("Q"))
        k = site(pre + "attn.hook_k", proj("K"))
        v = site(pre + "attn.hook_v", proj("V"))
        if cfg.positional_embedding_type == "rotary":
            dim = cfg.rotary_dim or dh
            q = site(pre + "attn.hook_rot_q", _rotary(q, dim, cfg.rotary_base))
            k = site(pre + "attn.hook_rot_k", _rotary(k, dim, cfg.rotary_base))
        k = np.repeat(k, h // kvh, axis=2)
        v = np.repeat(v, h // kvh, axis=2)
        scores = np.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(dh)
        if cfg.causal:
            scores = np.where(np.tril(np.ones((n, n), bool)), scores, -np.inf)
        scores = site(pre + "attn.hook_attn_scores", scores)
        e = np.exp(scores - scores.max(-1, keepdims=True))
        pattern = site(pre + "attn.hook_pattern", e / e.sum(-1, keepdims=True))
        z = site(pre + "attn.hook_z", np.einsum("bhqk,bkhd->bqhd", pattern, v))
        attn_out = np.einsum("bqhd,hdm->bqm", z, a["W_O"])
        if cfg.use_bias:
            attn_out = attn_out + a["b_O"]
        attn_out = site(pre + "hook_attn_out", attn_out)
        if cfg.attn_only:
            x = site(pre + "hook_resid_post", resid + attn_out)
            continue
        mid = site(pre + "hook_resid_mid", resid + attn_out)
        y = _norm_sites(site, pre + "ln2", mid, p.get("ln2"), cfg.normalization_type,
                        cfg.eps) if cfg.normalization_type else mid
        m = p["mlp"]
        act = ACT[cfg.act_fn]
        lin = y @ m["W_in"] + (m["b_in"] if cfg.use_bias else 0)
        if cfg.gated_mlp:
            gate = site(pre + "mlp.hook_pre", y @ m["W_gate"])
            lin = site(pre + "mlp.hook_pre_linear", lin)
            post = site(pre + "mlp.hook_post", act(gate) * lin)
        else:
            post = site(pre + "mlp.hook_post", act(site(pre + "mlp.hook_pre", lin)))
        mlp_out = post @ m["W_out"] + (m["b_out"] if cfg.use_bias else 0)
        mlp_out = site(pre + "hook_mlp_out", mlp_out)
        x = site(pre + "hook_resid_post", mid + mlp_out)
    if cfg.normalization_type:
        x = _norm_sites(site, "ln_final", x, params["ln_final"], cfg.normalization_type,
                        cfg.eps)
    x = x[:, n_reg:]
    w_u = params["embed"]["W_E"].T if cfg.tie_embeddings else params["W_U"]
    logits = x @ w_u
    if cfg.unembed_bias:
        logits = logits + params["b_U"]
    return logits, acts


def read_out(cfg, variables, resid):
    """The model's head in float64: final norm, the first R = `n_register_tokens` positions
    dropped, unembedding. resid [..., R + pos, d_model] -> logits [..., pos, vocab]."""
    params = _f64(nn.meta.unbox(variables)["params"])
    x = np.asarray(resid, np.float64)
    if cfg.normalization_type:
        x = _norm(x, params["ln_final"], cfg.normalization_type, cfg.eps)
    x = x[..., getattr(cfg, "n_register_tokens", 0):, :]
    w_u = params["embed"]["W_E"].T if cfg.tie_embeddings else params["W_U"]
    return x @ w_u + (params["b_U"] if cfg.unembed_bias else 0)


def _f64(tree):
    if isinstance(tree, dict):
        return {k: _f64(v) for k, v in tree.items()}
    return np.asarray(tree, np.float64)


def edge_forward(cfg, variables, tokens, coef=None, source=None, input_value=None):
    """A float64 forward pass built edge by edge, for edge-level analyses.

    Every receiver's input is assembled from scratch as the constant attention biases b_O of
    the layers before it plus, for each sender s upstream of it,
        (1 - c) * (s's output in this run) + c * source[s],   c = coef.get((s, receiver), 0).
    Senders: "input" (embeddings), "a{l}.h{h}" (z_h W_O[h]), "m{l}" (MLP output with its bias);
    receivers: "a{l}.h{h}<q|k|v>" (k, v: KV heads), "m{l}", "logits". `coef` 1 with `source`
    the corrupted run's outputs ablates an edge; a small coef gives a directional derivative.
    `input_value` [b, pos, d_model] replaces the "input" sender. Softmax attention, no registers.

    Returns (logits [b, pos, vocab], {sender: output [b, pos, d_model]}).
    """
    coef, source = coef or {}, source or {}
    if getattr(cfg, "n_register_tokens", 0):
        raise NotImplementedError("edge_forward: no register tokens")
    params = _f64(nn.meta.unbox(variables)["params"])
    tokens = np.asarray(tokens)
    n = tokens.shape[1]
    x = params["embed"]["W_E"][tokens]
    if cfg.positional_embedding_type == "standard":
        x = x + params["pos_embed"]["W_pos"][:n]
    live = {"input": x if input_value is None else np.asarray(input_value, np.float64)}
    const = np.zeros(cfg.d_model)

    def receiver_input(r):
        total = const.copy()
        for s, out in live.items():
            c = coef.get((s, r), 0.0)
            total = total + (out if c == 0 else (1 - c) * out + c * source[s])
        return total

    h, dh = cfg.n_heads, cfg.d_head
    kvh = cfg.n_key_value_heads or h
    kind = cfg.normalization_type
    for layer in range(cfg.n_layers):
        p = params[f"blocks_{layer}"]
        a = p["attn"]

        def proj(name, head, r, a=a, p=p):
            y = _norm(receiver_input(r), p.get("ln1"), kind, cfg.eps)
            out = y @ a[f"W_{name}"][head]
            return out + a[f"b_{name}"][head] if cfg.use_bias else out

        q = np.stack([proj("Q", i, f"a{layer}.h{i}<q>") for i in range(h)], axis=2)
        k = np.stack([proj("K", g, f"a{layer}.h{g}<k>") for g in range(kvh)], axis=2)
        v = np.stack([proj("V", g, f"a{layer}.h{g}<v>") for g in range(kvh)], axis=2)
        if cfg.positional_embedding_type == "rotary":
            q = _rotary(q, cfg.rotary_dim or dh, cfg.rotary_base)
            k = _rotary(k, cfg.rotary_dim or dh, cfg.rotary_base)
        k, v = np.repeat(k, h // kvh, axis=2), np.repeat(v, h // kvh, axis=2)
        scores = np.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(dh)
        if cfg.causal:
            scores = np.where(np.tril(np.ones((n, n), bool)), scores, -np.inf)
        e = np.exp(scores - scores.max(-1, keepdims=True))
        z = np.einsum("bhqk,bkhd->bqhd", e / e.sum(-1, keepdims=True), v)
        for i in range(h):
            live[f"a{layer}.h{i}"] = z[:, :, i] @ a["W_O"][i]
        if cfg.use_bias:
            const = const + a["b_O"]
        if cfg.attn_only:
            continue
        m = p["mlp"]
        y = _norm(receiver_input(f"m{layer}"), p.get("ln2"), kind, cfg.eps)
        act = ACT[cfg.act_fn]
        lin = y @ m["W_in"] + (m["b_in"] if cfg.use_bias else 0)
        post = act(y @ m["W_gate"]) * lin if cfg.gated_mlp else act(lin)
        live[f"m{layer}"] = post @ m["W_out"] + (m["b_out"] if cfg.use_bias else 0)
    x = _norm(receiver_input("logits"), params.get("ln_final"), kind, cfg.eps)
    w_u = params["embed"]["W_E"].T if cfg.tie_embeddings else params["W_U"]
    logits = x @ w_u + (params["b_U"] if cfg.unembed_bias else 0)
    return logits, live
