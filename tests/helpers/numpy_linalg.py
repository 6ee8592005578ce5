"""NumPy references for linear algebra the tuning methods use."""

import numpy as np


def gram_schmidt(a):
    """Classical Gram-Schmidt on the rows of `a` (float64): orthonormal rows spanning them."""
    rows = []
    for v in np.asarray(a, np.float64):
        for u in rows:
            v = v - (v @ u) * u
        rows.append(v / np.linalg.norm(v))
    return np.stack(rows)
