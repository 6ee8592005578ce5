"""An SAE / transcoder forward pass in NumPy (float64), written from the papers' equations and
sharing no code with jaxinterp.sae."""

import numpy as np


def np_forward(p, x, config):
    """(recon [..., d_out], acts [..., d_sae], pre [..., d_sae]) of params `p` on x [..., d_in]."""
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    x = np.asarray(x, np.float64)
    x_in = x if config.transcoder else x - p["b_dec"]
    pre = x_in @ p["W_enc"] + p["b_enc"]
    if config.architecture == "relu":
        acts = np.maximum(pre, 0)
    elif config.architecture == "topk":
        acts = np.zeros_like(pre)
        top = np.argsort(-pre, axis=-1)[..., :config.k]
        np.put_along_axis(acts, top, np.maximum(np.take_along_axis(pre, top, -1), 0), -1)
    else:
        z = np.maximum(pre, 0)
        acts = z * (z > np.exp(p["log_threshold"]))
    return acts @ p["W_dec"] + p["b_dec"], acts, pre
