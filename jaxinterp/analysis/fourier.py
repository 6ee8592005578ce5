"""Fourier spectra of weights indexed by a residue `x in [0, p)` and their inverse
participation ratio (IPR), the periodicity measure of Doshi et al. 2023 ("To grok or not to
grok: disentangling generalization and memorization on corrupted algorithmic datasets").

For a neuron whose input weight from residue `x` is `w[x]` (one-hot inputs, or the embedding
times the neuron's input weights), `|DFT(w)|` over the non-zero frequencies says how periodic
it is: a neuron of the modular-addition algorithm uses one or two frequencies (IPR near 1 or
1/2), a memorising neuron spreads over many (IPR near 2 / p).

    IPR = sum_k P_k^2 / (sum_k P_k)^2,   P_k = |w_hat_k|^2,  k = 1 .. p // 2
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def fourier_power(w: jax.Array, axis: int = 0, drop_constant: bool = True) -> jax.Array:
    """Power `|rfft(w)|^2` along `axis` (length p -> p // 2 + 1 frequencies; without the
    constant k = 0 term if `drop_constant`), other axes kept, e.g. [p, neuron] -> [k, neuron]."""
    power = jnp.abs(jnp.fft.rfft(w.astype(jnp.float32), axis=axis)) ** 2
    if drop_constant:
        power = jax.lax.slice_in_dim(power, 1, power.shape[axis], axis=axis)
    return power


def ipr(w: jax.Array, axis: int = 0, drop_constant: bool = True) -> jax.Array:
    """Inverse participation ratio of the Fourier power of `w` along `axis` (the residue axis):
    1 for a single frequency, 1/n for power spread evenly over n. [p, neuron] -> [neuron]."""
    power = fourier_power(w, axis, drop_constant)
    total = power.sum(axis=axis)
    return (power**2).sum(axis=axis) / jnp.maximum(total**2, 1e-30)
