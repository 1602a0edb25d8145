"""Prior weights and offsets: the working system that the penalized least squares solves.

With prior weights ``w_i`` and an offset ``o_i`` the model is (lme4, Bates et al. 2015)

    y = o + X beta + Z b + e,   e_i ~ N(0, sigma^2 / w_i),   b = Lambda(theta) u.

Multiplying row i by ``sqrt(w_i)`` gives residuals of equal variance sigma^2, so the model
is an unweighted one for the *working* response and matrices

    y~ = W^{1/2} (y - o),   X~ = W^{1/2} X,   Z~ = W^{1/2} Z,

solved by :mod:`lmmlib.pls` as any other.  The change of variables from y to y~ has Jacobian
``|W|^{1/2}``, so the log-likelihood gains ``log|W| / 2 = sum(log w_i) / 2``: the deviance and
the REML criterion are those of the working system minus ``sum(log w_i)`` (lme4's
``lmerResp::Laplace``: ``ldL2 - ldW + ...``).  sigma is that of the working system:
``sigma^2 = r^2 / (n - p)`` (REML) or ``r^2 / n`` (ML) with the weighted r^2.

>>> import numpy as np
>>> round(log_det_weights(np.array([1.0, 4.0, 0.25])), 12)
0.0
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["working_system", "working_response", "log_det_weights"]


def log_det_weights(weights) -> float:
    """``log|W| = sum(log w_i)`` (0 without weights), lme4's ``ldW``."""
    return 0.0 if weights is None else float(np.sum(np.log(weights)))


def working_response(design, y=None) -> np.ndarray:
    """``W^{1/2} (y - o)`` for the response ``y`` (default: the design's)."""
    y = np.asarray(design.y if y is None else y, dtype=float)
    if design.offset is not None:
        y = y - design.offset
    return y if design.weights is None else np.sqrt(design.weights) * y


def working_system(design):
    """``(X~, y~, terms~)``: the design's X, response and random-effects terms with rows
    multiplied by ``sqrt(w_i)`` and the offset taken from y (the design itself if neither)."""
    y = working_response(design)
    if design.weights is None:
        return design.X, y, design.terms
    root = np.sqrt(design.weights)
    terms = [dataclasses.replace(t, X=t.X * root[:, None]) for t in design.terms]
    return design.X * root[:, None], y, terms
