"""Residuals, leverages and Cook's distances of a linear mixed model, as lme4 defines them.

**Residuals** (lme4's ``residuals.merMod``): type ``"response"`` (lme4's default for an LMM,
also ``"working"``) is ``y - mu_hat`` with ``mu_hat = o + X beta_hat + Z b_hat`` the fitted
values; type ``"pearson"`` (also ``"deviance"``) is ``sqrt(w_i) (y_i - mu_hat_i)``, the
same without prior weights.  ``scaled=True`` divides by sigma_hat.

**Leverages** (lme4's ``hatvalues.merMod``, Bates et al. 2015 eqs. 63-65): fitted values are
linear in y, ``W^{1/2} mu_hat = H W^{1/2} (y - o)``, with the hat matrix of the penalized
least-squares problem

    H = M (M'M + diag(I_q, 0))^{-1} M',   M = W^{1/2} [Z Lambda(theta_hat), X],

at the estimated theta.  Its diagonal h_i lies in [0, 1]; ``trace(H)`` is the effective number
of parameters of the fit, between p (no random effects) and p + q.

**Cook's distance** (lme4's ``cooks.distance.merMod``), the ordinary-regression formula with
the Pearson residual and these leverages,

    D_i = (r_i / (1 - h_i))^2 h_i / (sigma^2 p),   p = rank(X),

which for theta = 0 is the OLS Cook's distance.  It ignores the uncertainty of theta (it is
not a refit without row i).

>>> from lmmlib import datasets, lmer
>>> fit = lmer("Reaction ~ Days + (Days | Subject)", datasets.sleepstudy())
>>> h = hatvalues(fit)
>>> bool(h.between(0, 1).all()), round(float(h.sum()), 2)
(True, 29.02)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.linalg as la
import scipy.sparse as sp

from lmmlib.errors import LmmInputError
from lmmlib.priorweights import working_system

__all__ = ["residuals", "hatvalues", "cooks_distance"]

_TYPES = {"response": "response", "working": "response", "pearson": "pearson",
          "deviance": "pearson"}


def residuals(fit, type: str = "response", scaled: bool = False) -> pd.Series:
    """Residuals of ``type`` ``"response"`` (``y - mu_hat``) or ``"pearson"``
    (``sqrt(w) (y - mu_hat)``), divided by sigma_hat if ``scaled`` (lme4's ``residuals``).

    >>> from lmmlib import datasets, lmer
    >>> fit = lmer("Reaction ~ Days + (Days | Subject)", datasets.sleepstudy())
    >>> round(float(residuals(fit, scaled=True).std()), 3)
    0.918
    """
    if type not in _TYPES:
        raise LmmInputError(
            f"type must be one of {', '.join(map(repr, _TYPES))} (lme4's types for an LMM; "
            f"'partial' is not implemented there either), got {type!r}"
        )
    r = fit.design.y - fit.fitted.to_numpy()
    if _TYPES[type] == "pearson" and fit.design.weights is not None:
        r = r * np.sqrt(fit.design.weights)
    if scaled:
        r = r / fit.sigma
    return pd.Series(r, index=fit.design.row_index, name=f"{type} residuals")


def model_matrix_ZLambda_X(fit) -> sp.csr_matrix:
    """``W^{1/2} [Z Lambda(theta_hat), X]``, sparse, n x (q + p), terms in lme4 order."""
    X, _, terms = working_system(fit.design)
    blocks = []
    for term, T in zip(terms, fit.layout.templates(fit.theta)):
        values = np.asarray(term.X, dtype=float) @ T  # row i of Z_k Lambda_k, level's block
        n, p = values.shape
        cols = np.asarray(term.codes)[:, None] * p + np.arange(p)
        blocks.append(sp.csr_matrix((values.ravel(), (np.repeat(np.arange(n), p), cols.ravel())),
                                    shape=(n, term.nlevels * p)))
    return sp.hstack([*blocks, sp.csr_matrix(X)]).tocsr()


#: hatvalues forms the (q + p) x (q + p) matrix C densely: at most this order (512 MB)
MAX_DENSE_ORDER = 8000


def hatvalues(fit) -> pd.Series:
    """The diagonal of lme4's hat matrix ``H = M (M'M + diag(I_q, 0))^{-1} M'`` (module
    docstring), by a Cholesky factor ``C = L L'`` and ``h_i = ||L^{-1} m_i||^2``.

    C is dense, so this is for models with up to :data:`MAX_DENSE_ORDER` random and fixed
    effects together (lme4 uses a sparse factor); larger models are an LmmInputError.
    """
    M = model_matrix_ZLambda_X(fit)
    q = M.shape[1] - fit.p
    if M.shape[1] > MAX_DENSE_ORDER:
        raise LmmInputError(
            f"hatvalues needs a dense matrix of order q + p = {M.shape[1]}; lmmlib computes "
            f"it for at most {MAX_DENSE_ORDER} random and fixed effects together"
        )
    chunk = max(1, int(4e6 // M.shape[1]))  # rows per dense block (32 MB)
    C = (M.T @ M).toarray()
    C[np.arange(q), np.arange(q)] += 1.0
    L = la.cholesky(C, lower=True)
    h = np.empty(M.shape[0])
    for start in range(0, M.shape[0], chunk):
        rows = M[start : start + chunk].toarray().T
        h[start : start + chunk] = np.sum(la.solve_triangular(L, rows, lower=True) ** 2, axis=0)
    return pd.Series(h, index=fit.design.row_index, name="hat")


def cooks_distance(fit) -> pd.Series:
    """Cook's distances ``(r_i/(1 - h_i))^2 h_i / (sigma^2 p)`` with Pearson residuals r_i
    (lme4's ``cooks.distance``; an infinite value, h_i = 1, becomes NaN as there)."""
    h = hatvalues(fit).to_numpy()
    r = residuals(fit, "pearson").to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        d = (r / (1 - h)) ** 2 * h / (fit.sigma**2 * fit.p)
    d[np.isinf(d)] = np.nan
    return pd.Series(d, index=fit.design.row_index, name="cooks distance")
