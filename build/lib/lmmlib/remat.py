"""Random-effects terms: the relative covariance factor Lambda(theta) and Z's cross-products.

A random-effects term ``(x1 + ... + xp | g)`` contributes ``p`` random effects for each of
the ``l`` levels of its grouping factor ``g``.  Its model matrix ``Z_k`` (n x lp) is the row-wise
Khatri-Rao product of the indicator matrix of ``g`` and the term's raw matrix ``X_k`` (n x p):
row ``i`` holds ``X_k[i]`` in the ``p`` columns of level ``g[i]`` and zeros elsewhere.  We never
form ``Z_k``; an integer code per row and ``X_k`` describe it completely.

Bates, Maechler, Bolker and Walker (2015, JSS 67(1), sections 2.2 and 3.1) write the random
effects as ``b = Lambda(theta) u`` with *spherical* ``u ~ N(0, sigma^2 I)``.  For one term,
Lambda is block diagonal, the same lower-triangular ``p x p`` *template* ``T_k`` repeated for
every level, so ``Var(b_kj) = sigma^2 T_k T_k'``.  The parameter vector ``theta`` lists, term by
term, the lower triangle of each template column by column (lme4's order), e.g. for
``(Days | Subject)``: ``theta = (T11, T21, T22)``.  Diagonal elements are bounded below by 0;
off-diagonal elements are free.  lme4 starts at ``T = I``.

Terms come in lme4's order (``build_design`` sorts them by decreasing number of levels, as
lme4's ``mkReTrms``), and theta follows that order.

>>> template(np.array([1.0, 0.5, 2.0]), 2)
array([[1. , 0. ],
       [0.5, 2. ]])
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = [
    "group_labels",
    "varcorr_frame",
    "sdcor_names",
    "sdcor_values",
    "theta_indices",
    "template",
    "ThetaLayout",
    "block_crossprod",
    "term_crossprod",
    "dense_crossprod",
    "random_effects_product",
]


def theta_indices(p: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) of the template entries that ``theta`` holds, column by column.

    >>> theta_indices(3)
    (array([0, 1, 2, 1, 2, 2]), array([0, 0, 0, 1, 1, 2]))
    """
    rows = [r for c in range(p) for r in range(c, p)]
    cols = [c for c in range(p) for _ in range(c, p)]
    return np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64)


def template(theta_k: np.ndarray, p: int) -> np.ndarray:
    """The lower-triangular template ``T_k`` (p x p) of one term from its slice of theta."""
    T = np.zeros((p, p))
    T[theta_indices(p)] = theta_k
    return T


class ThetaLayout:
    """Where each term's parameters sit in ``theta``, their bounds, start and names.

    Parameters
    ----------
    terms
        Random-effects terms (objects with ``group``, ``names``, ``p``) in lme4's order.

    Attributes
    ----------
    slices : list[slice]
        ``theta[slices[k]]`` is term ``k``'s lower triangle, column by column.
    lower : numpy.ndarray
        Lower bounds: 0 for diagonal elements of a template, ``-inf`` for the others.
    start : numpy.ndarray
        lme4's starting value: 1 on the diagonal, 0 off it (``T_k = I``).
    names : list[str]
        lme4's theta names, e.g. ``"Subject.(Intercept)"``, ``"Subject.Days.(Intercept)"``.
    """

    def __init__(self, terms: Sequence):
        self.p = [len(t.names) for t in terms]
        sizes = [p * (p + 1) // 2 for p in self.p]
        ends = np.cumsum([0, *sizes])
        self.slices = [slice(int(a), int(b)) for a, b in zip(ends[:-1], ends[1:])]
        lower, start, names = [], [], []
        self._indices = [theta_indices(p) for p in self.p]
        for term, (rows, cols) in zip(terms, self._indices):
            diagonal = rows == cols
            lower.append(np.where(diagonal, 0.0, -np.inf))
            start.append(diagonal.astype(float))
            for r, c in zip(rows, cols):
                pair = term.names[r] if r == c else f"{term.names[r]}.{term.names[c]}"
                names.append(f"{term.group}.{pair}")
        self.lower = np.concatenate(lower)
        self.start = np.concatenate(start)
        self.names = names
        self.size = int(ends[-1])

    def row_values(self, per_term: Sequence[np.ndarray]) -> np.ndarray:
        """Spread one value per template row over theta: entry (r, c) of term k gets
        ``per_term[k][r]``.

        >>> from types import SimpleNamespace as T
        >>> layout = ThetaLayout([T(group="g", names=("(Intercept)", "x"))])
        >>> layout.row_values([np.array([1.0, 8.0])])
        array([1., 8., 8.])
        """
        return np.concatenate(
            [np.asarray(v, dtype=float)[rows] for v, (rows, _) in zip(per_term, self._indices)]
        ) if self._indices else np.zeros(0)

    def templates(self, theta: np.ndarray) -> list[np.ndarray]:
        """The templates ``T_k`` of all terms at ``theta``."""
        out = []
        for s, p, index in zip(self.slices, self.p, self._indices):
            T = np.zeros((p, p))
            T[index] = theta[s]
            out.append(T)
        return out

    def boundary_restarts(self, theta: np.ndarray, tol: float = 1e-4, value: float = 0.5):
        """Starting points away from a boundary estimate, for a second look.

        A template column whose diagonal element is 0 contributes ``c c'`` with ``c`` its
        off-diagonal part, which is the same for ``c`` and ``-c``; once the diagonal element
        grows, the sign of ``c`` sets the sign of correlations, so both signs are offered:
        ``theta`` with the zero diagonal elements set to ``value``, and the same with the
        off-diagonal elements of those columns negated (when there are any).

        >>> from types import SimpleNamespace as T
        >>> layout = ThetaLayout([T(group="g", names=("(Intercept)", "x"))])
        >>> layout.boundary_restarts(np.array([0.0, -0.3, 0.4]))
        [array([ 0.5, -0.3,  0.4]), array([0.5, 0.3, 0.4])]
        """
        raised = np.where((self.lower == 0) & (theta < tol), value, theta)
        flipped = raised.copy()
        for s, (rows, cols) in zip(self.slices, self._indices):
            zero_columns = cols[(rows == cols) & (theta[s] < tol)]
            below = np.isin(cols, zero_columns) & (rows != cols)
            flipped[s][below] *= -1
        return [raised] if np.array_equal(raised, flipped) else [raised, flipped]

    def is_singular(self, theta: np.ndarray, tol: float = 1e-4) -> bool:
        """lme4's ``isSingular``: some theta with lower bound 0 is below ``tol``."""
        bounded = self.lower == 0
        return bool(np.any(theta[bounded] < tol))

    def singular_terms(self, theta: np.ndarray, tol: float = 1e-4) -> list[int]:
        """Indices of the terms with a diagonal template element below ``tol`` (a singular
        covariance ``T_k T_k'``).

        >>> from types import SimpleNamespace as T
        >>> layout = ThetaLayout([T(group="g", names=("(Intercept)", "x")),
        ...                       T(group="h", names=("(Intercept)",))])
        >>> layout.singular_terms(np.array([1.0, 0.3, 0.0, 0.5]))
        [0]
        """
        small = (self.lower == 0) & (np.asarray(theta) < tol)
        return [k for k, s in enumerate(self.slices) if small[s].any()]


def _codes_and_matrix(term) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(term.codes, dtype=np.int64), np.asarray(term.X, dtype=float)


def block_crossprod(term) -> np.ndarray:
    """Diagonal blocks of ``Z_k'Z_k``: array (levels, p, p), block j = sum_{g[i]=j} x_i x_i'.

    ``Z_k'Z_k`` of a single term is block diagonal because each row of ``Z_k`` has its
    nonzeros in one level's columns only.
    """
    codes, Xk = _codes_and_matrix(term)
    nlev, p = len(term.levels), Xk.shape[1]
    out = np.empty((nlev, p, p))
    for a in range(p):
        for c in range(a + 1):
            out[:, a, c] = np.bincount(codes, weights=Xk[:, a] * Xk[:, c], minlength=nlev)
            out[:, c, a] = out[:, a, c]
    return out


def term_crossprod(term_a, term_b) -> sp.csr_matrix:
    """The sparse cross-product ``Z_a'Z_b`` (levels_a p_a x levels_b p_b) of two terms.

    Entry ((j, r), (k, s)) is ``sum_i X_a[i, r] X_b[i, s]`` over the rows i at level j of
    ``g_a`` and level k of ``g_b``.
    """
    ca, Xa = _codes_and_matrix(term_a)
    cb, Xb = _codes_and_matrix(term_b)
    pa, pb = Xa.shape[1], Xb.shape[1]
    shape = (len(term_a.levels) * pa, len(term_b.levels) * pb)
    rows = np.concatenate([ca * pa + r for r in range(pa) for _ in range(pb)])
    cols = np.concatenate([cb * pb + s for _ in range(pa) for s in range(pb)])
    vals = np.concatenate([Xa[:, r] * Xb[:, s] for r in range(pa) for s in range(pb)])
    return sp.coo_matrix((vals, (rows, cols)), shape=shape).tocsr()


def dense_crossprod(term, M: np.ndarray) -> np.ndarray:
    """``Z_k' M`` for a dense n x m matrix ``M``, as an array (levels, p, m)."""
    codes, Xk = _codes_and_matrix(term)
    nlev, p = len(term.levels), Xk.shape[1]
    out = np.empty((nlev, p, M.shape[1]))
    for a in range(p):
        for c in range(M.shape[1]):
            out[:, a, c] = np.bincount(codes, weights=Xk[:, a] * M[:, c], minlength=nlev)
    return out


def random_effects_product(codes: np.ndarray, Xk: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``Z_k b_k`` for one term: row i is ``X_k[i] @ b_k[g[i]]``; rows with code -1 get 0.

    ``b`` is the (levels, p) array of the term's random effects.
    """
    codes = np.asarray(codes, dtype=np.int64)
    known = codes >= 0
    out = np.zeros(len(codes))
    out[known] = np.einsum("ij,ij->i", np.asarray(Xk, dtype=float)[known], b[codes[known]])
    return out


def group_labels(terms: Sequence) -> list[str]:
    """Labels of the terms in lme4's ``VarCorr``: the grouping factor, made unique as R's
    ``make.names(unique = TRUE)`` when a factor has several terms (``Subject``, ``Subject.1``).

    >>> from types import SimpleNamespace as T
    >>> group_labels([T(group="g"), T(group="g"), T(group="a:b")])
    ['g', 'g.1', 'a.b']
    """
    names = [t.group for t in terms]
    if len(set(names)) == len(names):
        return names
    names = [re.sub(r"[^A-Za-z0-9._]", ".", name) for name in names]
    seen: dict[str, int] = {}
    out = []
    for name in names:
        out.append(name if name not in seen else f"{name}.{seen[name]}")
        seen[name] = seen.get(name, 0) + 1
    return out


def varcorr_frame(terms: Sequence, templates: Sequence[np.ndarray], sigma: float) -> pd.DataFrame:
    """Variances, covariances, SDs and correlations, laid out as R's ``as.data.frame(VarCorr())``.

    For term k the covariance of one level's random effects is ``sigma^2 T_k T_k'``.  Rows per
    term: the variances (``var2`` missing), then covariances for pairs (var1, var2) taken from the
    lower triangle column by column (``sdcor`` holds the correlation); a last ``Residual`` row
    holds ``sigma^2`` and ``sigma``.  ``grp`` is lme4's label (:func:`group_labels`).
    """
    records = []
    for label, term, T in zip(group_labels(terms), terms, templates):
        cov, sd, corr = _covariance_sd_correlation(T, sigma)
        for a, name in enumerate(term.names):
            records.append((label, name, None, cov[a, a], sd[a]))
        p = len(term.names)
        for c in range(p):
            for r in range(c + 1, p):
                records.append((label, term.names[c], term.names[r], cov[r, c], corr[r, c]))
    records.append(("Residual", None, None, sigma**2, sigma))
    frame = pd.DataFrame.from_records(records, columns=["grp", "var1", "var2", "vcov", "sdcor"])
    # One missing-value marker (NaN, as R's NA) in every name column, even one with no names.
    return frame.astype({"grp": "str", "var1": "str", "var2": "str"})


def sdcor_names(terms: Sequence) -> list[str]:
    """lme4's names of the standard-deviation/correlation parameters, in theta's order.

    For ``(Days | Subject)``: ``sd_(Intercept)|Subject``, ``cor_Days.(Intercept)|Subject``,
    ``sd_Days|Subject``; the residual standard deviation ``sigma`` is not included.
    """
    names = []
    for term in terms:
        rows, cols = theta_indices(len(term.names))
        for r, c in zip(rows, cols):
            if r == c:
                names.append(f"sd_{term.names[r]}|{term.group}")
            else:
                names.append(f"cor_{term.names[r]}.{term.names[c]}|{term.group}")
    return names


def sdcor_values(terms: Sequence, templates: Sequence[np.ndarray], sigma: float) -> np.ndarray:
    """The values named by :func:`sdcor_names`: SDs ``sigma sqrt(diag(T T'))`` and correlations."""
    values = []
    for term, T in zip(terms, templates):
        _, sd, corr = _covariance_sd_correlation(T, sigma)
        rows, cols = theta_indices(len(term.names))
        values.extend(sd[r] if r == c else corr[r, c] for r, c in zip(rows, cols))
    return np.array(values)


def _covariance_sd_correlation(T: np.ndarray, sigma: float):
    """One level's covariance ``sigma^2 T T'``, its SDs and its correlations (NaN where an SD
    is 0, as lme4 prints for a singular term)."""
    cov = sigma**2 * (T @ T.T)
    sd = np.sqrt(np.diag(cov))
    denom = np.outer(sd, sd)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.where(denom > 0, cov / np.where(denom > 0, denom, 1.0), np.nan)
    return cov, sd, corr
