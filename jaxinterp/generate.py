"""`jaxinterp.generate`: sampling from a causal transformer, with interventions, in one compiled
loop over a KV cache.

    out = ji.generate(model, variables, prompt, 20)                      # greedy
    out = ji.generate(model, variables, prompt, 20, temperature=0.8, top_p=0.9,
                      key=jax.random.key(0),
                      interventions=[ji.Add("blocks.3.hook_resid_post", vec, scale=4.0)])
    out.tokens        # [batch, P + 20]: the prompt, then the generated tokens

How it runs: one `jax.jit`-compiled function. The prompt [batch, P] is computed in one cached
pass (prefill, `jaxinterp.models.transformer.init_cache` of L = P + max_new_tokens positions);
then a `lax.while_loop` feeds each chosen token back as a one-position chunk at its absolute
position (decode steps). Every step goes through `jaxinterp.run` with the same interventions, so
they apply to the prompt and to every generated position. Positions are absolute in the whole
sequence of L positions (`positions=[P]` acts on the first generated token; -1 is position
L - 1), and an operand with a position axis of L entries is read at each step's position (see
`jaxinterp.interventions`). The cached logits equal those of the uncached model on the
whole sequence, interventions included (tested to 1e-5 against recomputing the full sequence at
every step); for sigmoid attention, whose bias -log(n) depends on the sequence length n, n = L
(as for the uncached model on the L-position buffer).

Token choice: `temperature=0` is greedy (argmax; the first index on ties). Otherwise the
logits are divided by `temperature`, restricted to the `top_k` largest and then to the smallest
set whose probability reaches `top_p` (nucleus; the most likely token is always kept), and a
token is drawn with `jax.random.categorical` under `jax.random.fold_in(key, step)`: the same
key gives the same tokens.

EOS and padding: with `eos_token_id`, a row that has produced it is finished: its later tokens
are `pad_token_id` (as Hugging Face's `generate` pads them) and the loop stops early once every
row is finished. `lengths` counts each row's generated tokens (EOS included). Prompts are
given unpadded (every row P real tokens).

`generate` is a pure function of its array arguments: `jax.vmap` over an intervention's arrays
runs a sweep in one call, e.g. 32 steering strengths:

    jax.vmap(lambda s: ji.generate(model, variables, prompt, 10,
                                   interventions=[ji.Add(site, vec, scale=s)]).tokens)(scales)
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.interventions import Intervention
from jaxinterp.models.transformer import check_cacheable, check_transformer, init_cache
from jaxinterp.run import run


class Generation(NamedTuple):
    """What `generate` returns.

    Attributes:
      tokens: int32 [batch, P + max_new_tokens]: the prompt, then the generated tokens
        (`pad_token_id` after a row's EOS).
      lengths: int32 [batch]: generated tokens per row, EOS included.
      logits: float32 [batch, max_new_tokens, d_vocab_out]: the logits each generated token
        was chosen from (before temperature; zeros after a row finished), or None unless
        `return_logits=True`.
    """

    tokens: jax.Array
    lengths: jax.Array
    logits: jax.Array | None


def generate(model: nn.Module, variables: Any, prompt_tokens: jax.Array, max_new_tokens: int,
             *, interventions: Intervention | Sequence[Intervention] = (),
             temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
             key: jax.Array | None = None, eos_token_id: int | None = None,
             pad_token_id: int = 0, return_logits: bool = False) -> Generation:
    """Generates `max_new_tokens` tokens after `prompt_tokens` (see the module docstring).

    Args:
      model, variables: a causal `jaxinterp.models.Transformer` and its variables.
      prompt_tokens: int [batch, P], 1 <= P and P + max_new_tokens <= n_ctx.
      max_new_tokens: tokens to generate (>= 1).
      interventions: applied at every step (prefill and decode); positions are absolute.
      temperature: 0 for greedy decoding, > 0 to sample.
      top_k: keep the k most likely tokens (None: all).
      top_p: nucleus sampling threshold in (0, 1] (None: 1, no restriction).
      key: a `jax.random.key`, needed when temperature > 0.
      eos_token_id: the token that finishes a row (None: rows never finish early).
      pad_token_id: what fills a finished row.
      return_logits: also return the logits of every step.

    Returns:
      A `Generation` (tokens [batch, P + max_new_tokens], lengths [batch], logits).

    Raises:
      ValueError (before anything compiles): not a causal Transformer, a prompt longer than
        n_ctx or of the wrong shape, max_new_tokens past n_ctx, temperature < 0, top_k or
        top_p out of range, no key for sampling, an intervention position beyond the
        generated length, or an intervention that matches no site.
    """
    c = check_transformer(model, "generate")
    check_cacheable(c, "generate")
    prompt = jnp.asarray(prompt_tokens)
    if prompt.ndim != 2 or not jnp.issubdtype(prompt.dtype, jnp.integer) or not prompt.shape[1]:
        raise ValueError(f"prompt_tokens must be integer [batch, P] with P >= 1, got shape "
                         f"{prompt.shape} and dtype {prompt.dtype}")
    n_prompt = prompt.shape[1]
    if n_prompt > c.n_ctx:
        raise ValueError(f"the prompt has {n_prompt} tokens, more than the model's "
                         f"n_ctx={c.n_ctx}")
    if (not isinstance(max_new_tokens, int | np.integer) or isinstance(max_new_tokens, bool)
            or max_new_tokens < 1):
        raise ValueError(f"max_new_tokens={max_new_tokens!r} must be a positive int")
    length = n_prompt + int(max_new_tokens)
    if length > c.n_ctx:
        raise ValueError(f"max_new_tokens={max_new_tokens} after a prompt of {n_prompt} tokens "
                         f"runs past n_ctx={c.n_ctx} (at most {c.n_ctx - n_prompt} new tokens)")
    d_out = c.d_vocab_out or c.d_vocab
    if d_out > c.d_vocab:
        raise ValueError(f"generate feeds generated tokens back in: d_vocab_out={d_out} must "
                         f"not exceed d_vocab={c.d_vocab}")
    temperature = _check_number("temperature", temperature, lo=0.0)
    if top_k is not None and (not isinstance(top_k, int | np.integer) or isinstance(top_k, bool)
                              or not 1 <= top_k <= d_out):
        raise ValueError(f"top_k={top_k!r} must be None or an int in [1, d_vocab_out={d_out}]")
    if top_p is not None:
        top_p = _check_number("top_p", top_p, lo=0.0, hi=1.0)
        if top_p == 0.0:
            raise ValueError("top_p=0 keeps no token; use a value in (0, 1] (or temperature=0 "
                             "for greedy decoding)")
    if temperature > 0 and key is None:
        raise ValueError(f"temperature={temperature} samples: pass key=jax.random.key(...)")
    for name, tok in (("eos_token_id", eos_token_id), ("pad_token_id", pad_token_id)):
        if tok is not None and (not isinstance(tok, int | np.integer) or not 0 <= tok < c.d_vocab):
            raise ValueError(f"{name}={tok!r} must be a token id in [0, d_vocab={c.d_vocab})")
    if isinstance(interventions, Intervention):
        interventions = (interventions,)
    interventions = tuple(interventions)
    for iv in interventions:
        if not isinstance(iv, Intervention):
            raise TypeError(f"interventions must be jaxinterp interventions, got {type(iv)}")
        _check_positions(iv, length, n_prompt)
    if not isinstance(prompt, jax.core.Tracer):
        check_ids = np.asarray(prompt)
        if check_ids.min() < 0 or check_ids.max() >= c.d_vocab:
            raise ValueError(f"prompt token ids must be in [0, d_vocab={c.d_vocab}); got range "
                             f"[{check_ids.min()}, {check_ids.max()}]")
    key = jax.random.key(0) if key is None else key
    return _generate(variables, prompt.astype(jnp.int32), interventions, key, model=model,
                     max_new=int(max_new_tokens), temperature=temperature, top_k=top_k,
                     top_p=top_p, eos=eos_token_id, pad=int(pad_token_id),
                     return_logits=return_logits)


def _check_number(name: str, value: Any, lo: float, hi: float | None = None) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} must be a number") from None
    if not (x >= lo and (hi is None or x <= hi)):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name}={value!r} must be {rng}")
    return x


def _check_positions(iv: Intervention, length: int, n_prompt: int) -> None:
    """Concrete `positions` of `iv` must lie in the generated sequence of `length` positions."""
    value = getattr(iv, "positions", None)
    if value is None or isinstance(value, jax.core.Tracer):
        return
    arr = np.asarray(value)
    if arr.dtype == np.bool_:
        if arr.shape != (length,):
            raise ValueError(f"{type(iv).__name__} at {iv.site!r}: a positions mask has shape "
                             f"{arr.shape}; generate's positions are absolute, so it needs "
                             f"({length},) (prompt {n_prompt} + new tokens)")
        return
    bad = arr[(arr < -length) | (arr >= length)].reshape(-1)
    if bad.size:
        raise ValueError(f"{type(iv).__name__} at {iv.site!r}: position {int(bad[0])} is beyond "
                         f"the generated sequence of {length} positions (prompt {n_prompt} + "
                         f"{length - n_prompt} new tokens; valid: {-length}..{length - 1})")


def choose_tokens(logits: jax.Array, key: jax.Array, temperature: float, top_k: int | None,
                  top_p: float | None) -> jax.Array:
    """logits [batch, vocab] -> int32 [batch]: greedy for temperature 0, else a draw after
    temperature, top-k and top-p (see the module docstring)."""
    if temperature == 0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    x = logits.astype(jnp.float32) / temperature
    neg = -jnp.inf
    if top_k is not None and top_k < x.shape[-1]:
        kth = jax.lax.top_k(x, top_k)[0][..., -1:]
        x = jnp.where(x < kth, neg, x)
    if top_p is not None and top_p < 1.0:
        order = jnp.sort(x, axis=-1)[..., ::-1]  # descending
        probs = jax.nn.softmax(order, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # mass of the strictly more likely tokens
        kept = jnp.where(before < top_p, order, jnp.inf)  # the first is always kept
        x = jnp.where(x < kept.min(axis=-1, keepdims=True), neg, x)
    return jax.random.categorical(key, x, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("model", "max_new", "temperature", "top_k",
                                             "top_p", "eos", "pad", "return_logits"))
def _generate(variables, prompt, interventions, key, *, model, max_new, temperature, top_k,
              top_p, eos, pad, return_logits):
    batch, n_prompt = prompt.shape
    length = n_prompt + max_new

    def step(chunk, cache, offset):
        (logits, cache), _ = run(model, variables, chunk, interventions=interventions,
                                 cache=cache, offset=offset)
        return logits[:, -1], cache

    def choose(logits, i):
        return choose_tokens(logits, jax.random.fold_in(key, i), temperature, top_k, top_p)

    last, cache = step(prompt, init_cache(model, batch, length), 0)
    first = choose(last, 0)
    tokens = jnp.full((batch, length), pad, jnp.int32).at[:, :n_prompt].set(prompt)
    tokens = tokens.at[:, n_prompt].set(first)
    done = (first == eos) if eos is not None else jnp.zeros((batch,), bool)
    lengths = jnp.ones((batch,), jnp.int32)
    logit_buf = (jnp.zeros((batch, max_new, last.shape[-1]), jnp.float32).at[:, 0].set(last)
                 if return_logits else None)

    def cond(carry):
        i, _, _, done, _, _ = carry
        return (i < max_new) & ~jnp.all(done)

    def body(carry):
        i, tokens, cache, done, lengths, logit_buf = carry
        t = n_prompt + i - 1  # the position fed in; it predicts position t + 1
        logits, cache = step(jax.lax.dynamic_slice_in_dim(tokens, t, 1, axis=1), cache, t)
        nxt = jnp.where(done, pad, choose(logits, i))
        tokens = jax.lax.dynamic_update_slice_in_dim(tokens, nxt[:, None], t + 1, axis=1)
        lengths = lengths + (~done).astype(jnp.int32)
        if logit_buf is not None:
            logits = jnp.where(done[:, None], 0.0, logits)
            logit_buf = jax.lax.dynamic_update_slice_in_dim(logit_buf, logits[:, None], i,
                                                            axis=1)
        if eos is not None:
            done = done | (nxt == eos)
        return i + 1, tokens, cache, done, lengths, logit_buf

    _, tokens, _, _, lengths, logit_buf = jax.lax.while_loop(
        cond, body, (jnp.int32(1), tokens, cache, done, lengths, logit_buf))
    return Generation(tokens, lengths, logit_buf)
