"""Penalized least squares and the profiled deviance of a linear mixed model.

The model (Bates, Maechler, Bolker and Walker 2015, JSS 67(1), section 3) is

    y = X beta + Z b + e,   b = Lambda(theta) u,   u ~ N(0, sigma^2 I),   e ~ N(0, sigma^2 I).

For a given theta, the conditional modes ``u`` and the fixed effects ``beta`` minimise the
*penalized residual sum of squares*

    r^2(theta) = min_{u, beta} || y - X beta - Z Lambda u ||^2 + || u ||^2,

whose normal equations are solved through the Cholesky factor of one symmetric matrix,

    [Lambda'Z'Z Lambda + I   Lambda'Z'X   Lambda'Z'y]          [L_ZZ   0     0  ]
    [X'Z Lambda              X'X          X'y       ]  = L L', L = [L_XZ   R_X'  0  ]
    [y'Z Lambda              y'X          y'y       ]          [l_yZ'  l_yX' r  ].

The last diagonal element of L is ``r = sqrt(r^2)``, ``R_X`` is the upper-triangular factor of
the fixed effects, and ``log|L|^2 = log det(Lambda'Z'Z Lambda + I)``.  With beta and sigma
profiled out, the deviance (-2 log-likelihood) and the REML criterion are

    d(theta)      = log|L|^2 + n (1 + log(2 pi r^2 / n)),
    d_R(theta)    = log|L|^2 + log|R_X|^2 + (n - p)(1 + log(2 pi r^2 / (n - p))),

with ``sigma^2 = r^2/n`` (ML) or ``r^2/(n - p)`` (REML).

**Blocks.**  The cross-products of [Z X y] are formed once, so one evaluation of d(theta) costs
nothing that grows with n.  As in MixedModels.jl, the term with the most random effects is put
first: its block of ``Lambda'Z'Z Lambda + I`` is block diagonal, one small p1 x p1 block
``M_j = T_1'A_j T_1 + I`` per level (``A_j`` the level's block of ``Z_1'Z_1``), factored all at
once.  Eliminating it leaves the Schur complement of the other terms, X and y::

    S = [Lambda_r'Z_r'; X'; y'] [Z_r Lambda_r, X, y] + diag(I, 0, 0)
        - [Lambda_r'Z_r'; X'; y'] Z_1 N Z_1' [Z_r Lambda_r, X, y],
    N = Lambda_1 (Lambda_1'Z_1'Z_1 Lambda_1 + I)^{-1} Lambda_1' = blockdiag_j(T_1 M_j^{-1} T_1'),

a dense matrix whose Cholesky factor holds the rest of L.  The product ``Z_r'Z_1 N Z_1'Z_r`` has
a sparsity pattern that does not depend on theta; it is computed by one sparse matrix-vector
product with a map from the entries of N (see :class:`BlockSandwich`).

The dense block has one row per random effect of the terms after the first, so this suits
designs where those number up to a few thousand (the first term may have any size).  When that
block is large but mostly zeros (teachers and schools crossed with students: two teachers are
linked only through a shared student), the criterion is computed from a sparse factorization
of it instead (:mod:`lmmlib.sparse_schur`); :meth:`PenalizedLeastSquares.criterion_terms`
chooses.  The dense factor (:meth:`PenalizedLeastSquares.factorize`) remains the reference and
gives the conditional modes and covariances.

**Removing the least-squares fit from y.**  Replacing y by ``y - X gamma`` for any gamma
changes nothing but beta
(which moves by gamma), so y is first replaced by its ordinary-least-squares residual: the
cross-products of y are then small and r^2 does not suffer from cancellation when y has a
large mean (e.g. values around 1e8).

**Units of the predictors.**  The fit does not depend on the units of a predictor: measuring
a column of X in seconds instead of days divides its coefficient by 86400, and a column of a
random-effects term likewise scales the rows of T_k.  The numerical work does: with Days in
seconds, ``Lambda'Z'Z Lambda + I`` at lme4's start ``T = I`` is dominated by entries near
1e13, the Schur complement of X loses all its digits to cancellation and is no longer
numerically positive definite.  So the cross-products are formed from columns divided by a
power of two near their root mean square (:func:`column_scales`), and theta is converted on
the way in: for a term whose columns are divided by ``s``, the template of the scaled columns
is ``diag(s) T``.  The arguments and results of :class:`PenalizedLeastSquares` are in the
units of the data (theta, beta, R_X, b, the criteria); only the raw blocks of
:class:`BlockedCholesky` belong to the scaled columns.  The scaling is exact (powers of two)
and changes nothing but rounding.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.linalg as la
import scipy.sparse as sp

from lmmlib import sparse_schur
from lmmlib.remat import (
    ThetaLayout,
    block_crossprod,
    dense_crossprod,
    term_crossprod,
    theta_indices,
)
from lmmlib.sparse_schur import OffDiagonalPivot, SparseSchurComplement, sparse_is_worthwhile

__all__ = [
    "column_scales",
    "profiled_deviance",
    "profiled_reml_criterion",
    "PenalizedLeastSquares",
    "BlockedCholesky",
    "BlockSandwich",
    "PLSSolution",
]

LOG_2PI = float(np.log(2 * np.pi))


def column_scales(M: np.ndarray) -> np.ndarray:
    """A power of two near the root mean square of each column of ``M`` (1 for a zero column).

    Dividing by a power of two is exact in floating point, so scaled columns carry no new
    rounding error.

    >>> column_scales(np.array([[1.0, 0.0, 86400.0], [1.0, 0.0, 0.0]]))
    array([1.0000e+00, 1.0000e+00, 6.5536e+04])
    """
    M = np.asarray(M, dtype=float)
    rms = np.sqrt(np.mean(M**2, axis=0)) if len(M) else np.zeros(M.shape[1])
    scales = np.ones(M.shape[1])
    positive = rms > 0
    scales[positive] = 2.0 ** np.round(np.log2(rms[positive]))
    return scales


@dataclass(frozen=True)
class ScaledTerm:
    """A random-effects term whose model-matrix columns are divided by ``scale``."""

    codes: np.ndarray
    X: np.ndarray
    levels: Sequence
    names: tuple
    group: str
    scale: np.ndarray

    @classmethod
    def of(cls, term) -> ScaledTerm:
        Xk = np.asarray(term.X, dtype=float)
        scale = column_scales(Xk)
        codes = np.asarray(term.codes, dtype=np.int64)
        return cls(codes, Xk / scale, term.levels, tuple(term.names), term.group, scale)


def profiled_deviance(logdet_L: float, r2: float, n: int) -> float:
    """Profiled deviance ``d(theta) = log|L|^2 + n (1 + log(2 pi r^2 / n))`` (ML).

    >>> round(profiled_deviance(0.0, 180.0, 180), 6)  # no random effects, r^2 = n
    510.817872
    """
    return float(logdet_L + n * (1.0 + LOG_2PI + np.log(r2 / n)))


def profiled_reml_criterion(logdet_L: float, logdet_RX: float, r2: float, n: int, p: int) -> float:
    """REML criterion ``log|L|^2 + log|R_X|^2 + (n-p)(1 + log(2 pi r^2/(n-p)))``.

    >>> round(profiled_reml_criterion(0.0, 0.0, 178.0, 180, 2), 6)  # r^2 = n - p
    505.142118
    """
    return float(logdet_L + logdet_RX + (n - p) * (1.0 + LOG_2PI + np.log(r2 / (n - p))))


@dataclass
class BlockedCholesky:
    """The blocks of L(theta), computed from the scaled columns (see the module docstring).

    ``L11`` (levels1, p1, p1): Cholesky factors of the first term's diagonal blocks ``M_j``;
    ``L11_inv`` their inverses; ``N`` (levels1, p1, p1) the blocks ``T_1 M_j^{-1} T_1'``;
    ``L_rest`` the dense Cholesky factor of the Schur complement of [other terms, X, y];
    ``templates`` the T_k of the scaled columns (lme4 order); ``q_rest`` the number of other
    random effects; ``x_scale`` the divisors of the columns of X and ``gamma`` the
    least-squares coefficients removed from y.  :attr:`RX`, :attr:`beta`, the log-determinants
    and ``r2`` are in the units of the data.
    """

    templates: list[np.ndarray]
    L11: np.ndarray
    L11_inv: np.ndarray
    N: np.ndarray
    L_rest: np.ndarray
    q_rest: int
    p: int
    x_scale: np.ndarray
    gamma: np.ndarray

    @property
    def logdet_L(self) -> float:
        """``log|L_ZZ|^2 = log det(Lambda'Z'Z Lambda + I)``."""
        d1 = np.log(self.L11.reshape(len(self.L11), -1)[:, :: self.L11.shape[1] + 1]).sum()
        d2 = np.log(self.L_rest.diagonal()[: self.q_rest]).sum()
        return 2.0 * float(d1 + d2)

    @property
    def logdet_RX(self) -> float:
        """``log|R_X|^2``, the log-determinant of the fixed-effects block (REML term).

        With X's columns divided by ``s``, ``R_X = R_X(scaled) diag(s)``, which adds
        ``2 sum(log s)``.
        """
        q = self.q_rest
        d = np.log(self.L_rest.diagonal()[q : q + self.p]).sum() + np.log(self.x_scale).sum()
        return 2.0 * float(d)

    @property
    def r2(self) -> float:
        """Penalized residual sum of squares ``r^2``: the square of L's last diagonal element."""
        return float(self.L_rest[-1, -1] ** 2)

    @property
    def RX(self) -> np.ndarray:
        """The upper-triangular p x p ``R_X`` with ``R_X'R_X = X'X - X'Z Lambda (Lambda'Z'Z
        Lambda + I)^{-1} Lambda'Z'X``; ``sigma^2 (R_X'R_X)^{-1}`` is the covariance of beta."""
        q, p = self.q_rest, self.p
        return self.L_rest[q : q + p, q : q + p].T * self.x_scale

    @property
    def beta(self) -> np.ndarray:
        """The fixed effects at this theta, ``beta(theta) = R_X^{-1} l_yX + gamma``, where
        ``l_yX`` is the X part of L's last row (the conditional estimate given theta)."""
        q, p = self.q_rest, self.p
        RXt = self.L_rest[q : q + p, q : q + p]  # R_X' of the scaled columns
        l_yX = self.L_rest[-1, q : q + p]
        shift = la.solve_triangular(RXt, l_yX, lower=True, trans="T", check_finite=False)
        return shift / self.x_scale + self.gamma


@dataclass
class PLSSolution:
    """The solution of the penalized least-squares problem at one theta.

    ``beta`` fixed effects; ``u`` and ``b = Lambda u`` are lists (one (levels, p) array per term,
    lme4 order); ``RX`` the upper-triangular p x p factor with ``R_X'R_X`` = the Schur
    complement of X; ``r2``, ``logdet_L``, ``logdet_RX`` as in :class:`BlockedCholesky`.
    """

    theta: np.ndarray
    beta: np.ndarray
    u: list[np.ndarray]
    b: list[np.ndarray]
    RX: np.ndarray
    r2: float
    logdet_L: float
    logdet_RX: float
    n: int
    p: int

    def deviance(self) -> float:
        """ML profiled deviance at this theta."""
        return profiled_deviance(self.logdet_L, self.r2, self.n)

    def reml_criterion(self) -> float:
        """Profiled REML criterion at this theta."""
        return profiled_reml_criterion(self.logdet_L, self.logdet_RX, self.r2, self.n, self.p)

    def sigma(self, reml: bool) -> float:
        """``sigma = sqrt(r^2/(n-p))`` (REML) or ``sqrt(r^2/n)`` (ML)."""
        return float(np.sqrt(self.r2 / (self.n - self.p if reml else self.n)))

    def vcov(self, reml: bool) -> np.ndarray:
        """``sigma^2 (R_X'R_X)^{-1}``, the covariance matrix of the fixed effects."""
        RX_inv = la.solve_triangular(self.RX, np.eye(self.p), lower=False)
        return self.sigma(reml) ** 2 * (RX_inv @ RX_inv.T)


#: The first term's blocks are factored entry by entry (:func:`small_block_factors`) when they
#: are at most this size and there are at least ``ENTRYWISE_MIN_LEVELS`` of them; otherwise by
#: numpy's batched LAPACK calls, whose cost per block is larger but whose fixed cost is smaller.
ENTRYWISE_MAX_P = 3
ENTRYWISE_MIN_LEVELS = 200
#: A model with one random-effects term and at most this many random effects is factored as one
#: dense matrix (one LAPACK call: for small models the fixed cost of each call dominates).
#: one-term models use the lean criterion only for |theta| (scaled) up to this
LEAN_THETA_MAX = 1e4
ONE_SHOT_MAX_ORDER = 120


def small_block_factors(A_flat_t: np.ndarray, T: np.ndarray):
    """Cholesky factors of many small blocks ``M_j = T'A_j T + I``, computed entry by entry.

    ``A_flat_t`` (p*p, l) holds the blocks ``A_j`` row-major, one column per block; ``T`` is the
    p x p template.  Since ``vec(T'A T) = (T kron T)' vec(A)`` (row-major vec), all the ``M_j``
    are one matrix product, and the Cholesky factor ``L_j``, its inverse and
    ``N_j = T M_j^{-1} T' = (L_j^{-1} T')'(L_j^{-1} T')`` follow from the textbook recurrences
    (Golub and Van Loan 2013, Matrix Computations, section 4.2), each step one operation on a
    vector of l entries.  For p <= 3 and thousands of blocks this is many times faster than a LAPACK call
    per block.  Returns ``(L, L_inv, N)``, each (l, p, p).

    >>> A = np.array([[[2.0, 1.0], [1.0, 3.0]]])
    >>> L, L_inv, N = small_block_factors(A.reshape(1, 4).T.copy(), np.eye(2))
    >>> bool(np.allclose(L[0] @ L[0].T, A[0] + np.eye(2)))
    True
    """
    p = T.shape[0]
    M = np.kron(T, T).T @ A_flat_t  # row a*p + b holds entry (a, b) of every M_j - I
    L = [[None] * p for _ in range(p)]
    for j in range(p):
        d = M[j * p + j] + 1.0
        for k in range(j):
            d = d - L[j][k] ** 2
        if not np.all(d > 0):
            raise np.linalg.LinAlgError("a block of the first term is not positive definite")
        L[j][j] = np.sqrt(d)
        for i in range(j + 1, p):
            v = M[i * p + j]
            for k in range(j):
                v = v - L[i][k] * L[j][k]
            L[i][j] = v / L[j][j]
    Li = [[None] * p for _ in range(p)]  # L^{-1}, lower triangular, by forward substitution
    for j in range(p):
        Li[j][j] = 1.0 / L[j][j]
        for i in range(j + 1, p):
            v = L[i][j] * Li[j][j]
            for k in range(j + 1, i):
                v = v + L[i][k] * Li[k][j]
            Li[i][j] = -v / L[i][i]
    # LT = L^{-1} T' : LT[i][a] = sum_{k <= i} Li[i][k] T[a, k]
    LT = [[sum(Li[i][k] * T[a, k] for k in range(i + 1)) for a in range(p)] for i in range(p)]
    zero = np.zeros_like(M[0])
    out_L = np.empty((M.shape[1], p, p))
    out_Li = np.empty_like(out_L)
    out_N = np.empty_like(out_L)
    for a in range(p):
        for b in range(p):
            out_L[:, a, b] = L[a][b] if b <= a else zero
            out_Li[:, a, b] = Li[a][b] if b <= a else zero
            if b <= a:
                out_N[:, a, b] = sum(LT[i][a] * LT[i][b] for i in range(p))
                out_N[:, b, a] = out_N[:, a, b]
    return out_L, out_Li, out_N


def _block_diagonal(blocks: np.ndarray) -> sp.csr_matrix:
    """The sparse block-diagonal matrix of a stack of square blocks (nblocks, size, size)."""
    nblocks, size, _ = blocks.shape
    cols = np.arange(nblocks)[:, None, None] * size + np.arange(size)[None, None, :]
    indices = np.broadcast_to(cols, blocks.shape).reshape(-1)
    indptr = np.arange(0, nblocks * size * size + 1, size)
    return sp.csr_matrix((blocks.reshape(-1), indices, indptr), shape=(nblocks * size,) * 2)


class BlockSandwich:
    """``A N A'`` for a fixed sparse A (m x lb) and a block-diagonal N (l blocks b x b).

    Entry (r, s) of ``A N A'`` is ``sum_j sum_{a,c} A[r, (j,a)] N_j[a, c] A[s, (j,c)]``: linear
    in the entries of N with coefficients fixed by A.  Those coefficients are collected once in
    a sparse matrix K with one row per entry (r, s), r >= s, of an m x m matrix and one column
    per entry of N; every product is then one sparse matrix-vector product ``K vec(N)``.
    When K would have more than ``max_pairs`` entries, scipy.sparse products are used instead.
    """

    def __init__(self, A: sp.spmatrix, block: int, max_pairs: float = 2e7):
        A = sp.csc_matrix(A)
        A.sort_indices()
        self.A, self.block, self.m = sp.csr_matrix(A), block, A.shape[0]
        starts = A.indptr[::block]  # first entry of each column block
        counts = np.diff(starts)
        self.K = None
        if float(np.sum(counts.astype(float) ** 2)) > max_pairs:
            return
        entry_block = np.repeat(np.arange(len(counts)), counts)
        entry_col = np.repeat(np.arange(A.shape[1]), np.diff(A.indptr))
        reps = counts[entry_block]  # each entry pairs with every entry of its block
        offsets = np.cumsum(reps) - reps
        first = np.repeat(np.arange(A.nnz), reps)
        second = np.repeat(starts[entry_block] - offsets, reps) + np.arange(int(reps.sum()))
        r, s = A.indices[first].astype(np.int64), A.indices[second].astype(np.int64)
        keep = r >= s
        first, second, r, s = first[keep], second[keep], r[keep], s[keep]
        a = entry_col[first] - entry_block[first] * block
        c = entry_col[second] - entry_block[second] * block
        column = (entry_block[first] * block + a) * block + c
        self.K = sp.csr_matrix(
            (A.data[first] * A.data[second], (r * self.m + s, column)),
            shape=(self.m * self.m, len(counts) * block * block),
        )

    def dense(self, N: np.ndarray) -> np.ndarray:
        """The dense symmetric m x m matrix ``A blockdiag(N) A'``."""
        if self.K is None:
            return (self.A @ _block_diagonal(N) @ self.A.T).toarray()
        lower = (self.K @ N.reshape(-1)).reshape(self.m, self.m)
        out = lower + lower.T
        out[np.diag_indices(self.m)] = np.diag(lower)
        return out


class PenalizedLeastSquares:
    """Cross-products of [Z X y] and the blocked Cholesky factor ``L(theta)``.

    Parameters
    ----------
    X : array (n, p)
        Fixed-effects model matrix (full column rank).
    y : array (n,)
        Response.
    terms : sequence
        Random-effects terms in lme4's order (see :mod:`lmmlib.remat`): objects with
        ``codes``, ``X``, ``levels``, ``names``, ``group``.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> g = SimpleNamespace(codes=np.repeat([0, 1, 2], 2), X=np.ones((6, 1)),
    ...                     levels=[0, 1, 2], names=("(Intercept)",), group="g")
    >>> pls = PenalizedLeastSquares(np.ones((6, 1)), np.array([1., 2, 4, 5, 7, 9]), [g])
    >>> round(pls.objective(np.array([1.0]), reml=False), 4)
    26.6109
    """

    def __init__(self, X: np.ndarray, y: np.ndarray, terms: Sequence):
        X = np.asarray(X, dtype=float)
        self.n, self.p = X.shape
        self.terms = list(terms)
        self.layout = ThetaLayout(self.terms)
        # columns divided by powers of two near their root mean square (module docstring)
        self.x_scale = column_scales(X)
        self.X_scaled = X / self.x_scale
        self.scaled_terms = [ScaledTerm.of(t) for t in self.terms]
        #: theta times this is theta of the scaled columns (entry (r, c) of T_k times s_kr)
        self.theta_scale = self.layout.row_values([t.scale for t in self.scaled_terms])

        # Computational order: the term with most random effects first, others in lme4 order.
        nre = [len(t.levels) * len(t.names) for t in self.terms]
        self.first = int(np.argmax(nre))
        self.rest = [k for k in range(len(self.terms)) if k != self.first]
        t1 = self.scaled_terms[self.first]
        self.levels1, self.p1 = len(t1.levels), len(t1.names)
        self._eye1 = np.eye(self.p1)
        self.A11 = block_crossprod(t1)  # diagonal blocks of Z_1'Z_1
        self._entrywise = self.p1 <= ENTRYWISE_MAX_P and self.levels1 >= ENTRYWISE_MIN_LEVELS
        self._A11_flat = self.A11.reshape(self.levels1, -1)
        rows, cols = theta_indices(self.p1)
        self._template_flat = rows * self.p1 + cols  # where theta goes in T_1 (row-major)
        self._log_x_scale = float(np.log(self.x_scale).sum())
        if self.levels1 * self.p1 <= ONE_SHOT_MAX_ORDER:
            # positions of the blocks M_j in the first q1 x q1 corner (small one-term models)
            j, a, b = np.indices((self.levels1, self.p1, self.p1)).reshape(3, -1)
            self._blocks_index = (j * self.p1 + a, j * self.p1 + b)
            self._diag_index = np.diag_indices(self.levels1 * self.p1)
        if self._entrywise:
            self._A11_flat_t = np.ascontiguousarray(self.A11.reshape(self.levels1, -1).T)
        sizes = [nre[k] for k in self.rest]
        self.rest_offsets = dict(zip(self.rest, np.cumsum([0, *sizes])[:-1].tolist()))
        self.q_rest = int(sum(sizes))
        #: the sparse form of the second block, when it pays (:mod:`lmmlib.sparse_schur`)
        self.sparse_rest: SparseSchurComplement | None = None
        if self.rest:
            rest_terms = [self.scaled_terms[k] for k in self.rest]
            self.A_r1 = sp.vstack([term_crossprod(t, t1) for t in rest_terms]).tocsr()
            blocks = [[term_crossprod(s, t) for t in rest_terms] for s in rest_terms]
            A_rr = sp.bmat(blocks)
            self.A_rr = A_rr.toarray()  # Z_r'Z_r, dense
            self.sandwich = BlockSandwich(self.A_r1, self.p1)
            self._lambda_rest_pattern()
            self.sparse_rest = self._sparse_schur(A_rr)
        self._set_response(y)

    def _sparse_schur(self, A_rr) -> SparseSchurComplement | None:
        """The sparse form of the second block (:mod:`lmmlib.sparse_schur`) when it is large and
        sparse enough (:func:`lmmlib.sparse_schur.sparse_is_worthwhile`), else None."""
        K = self.sandwich.K
        if K is None or self.q_rest < sparse_schur.MIN_ORDER:
            return None
        schur = SparseSchurComplement(A_rr, self.sandwich)
        return schur if sparse_is_worthwhile(self.q_rest, schur.nnz_lower) else None

    def _set_response(self, y: np.ndarray) -> None:
        """The cross-products that involve y: ``[X y]'[X y]``, ``Z_1'[X y]``, ``Z_r'[X y]``.

        y - X gamma leaves theta, u and r^2 unchanged and shifts beta by gamma.
        """
        y = np.asarray(y, dtype=float)
        Xs = self.X_scaled
        gamma = np.linalg.lstsq(Xs, y, rcond=None)[0] if self.p else np.zeros(0)
        self.gamma = gamma / self.x_scale  # least-squares coefficients in the units of X
        XY = np.column_stack([Xs, y - Xs @ gamma])
        self.XYtXY = XY.T @ XY
        self.D1 = dense_crossprod(self.scaled_terms[self.first], XY)  # (levels1, p1, p+1)
        if self.rest:
            self.D_r = np.vstack(
                [dense_crossprod(self.scaled_terms[k], XY).reshape(-1, self.p + 1)
                 for k in self.rest]
            )

    def with_response(self, y: np.ndarray) -> PenalizedLeastSquares:
        """The same X and Z with another response y (of the same length).

        The cross-products of X and Z, which do not involve y, are shared with this object;
        only those of y are formed, which makes refitting a simulated response cheap.
        """
        y = np.asarray(y, dtype=float)
        if y.shape != (self.n,):
            raise ValueError(f"the response must have shape ({self.n},), got {y.shape}")
        new = copy.copy(self)
        new._set_response(y)
        return new

    def _lambda_rest_pattern(self) -> None:
        """lme4's ``Lind``: the sparse pattern of Lambda_rest and which theta fills each entry."""
        rows, cols, which = [], [], []
        for k in self.rest:
            term, offset = self.terms[k], self.rest_offsets[k]
            p, nlev = len(term.names), len(term.levels)
            r, c = theta_indices(p)
            base = offset + np.arange(nlev)[:, None] * p
            rows.append((base + r).ravel())
            cols.append((base + c).ravel())
            start = self.layout.slices[k].start
            which.append(np.broadcast_to(start + np.arange(len(r)), (nlev, len(r))).ravel())
        rows, cols, which = map(np.concatenate, (rows, cols, which))
        order = np.lexsort((cols, rows))
        self._lind = which[order]
        shape = (self.q_rest, self.q_rest)
        pattern = sp.csr_matrix((np.ones(len(order)), (rows[order], cols[order])), shape=shape)
        pattern.sort_indices()
        self._lambda_shape = shape
        self._lambda_indices, self._lambda_indptr = pattern.indices, pattern.indptr

    def lambda_rest(self, theta: np.ndarray) -> sp.csr_matrix:
        """Lambda of the scaled columns of the terms after the first: ``Lambda.data =
        (theta * theta_scale)[Lind]``."""
        data = (np.asarray(theta, dtype=float) * self.theta_scale)[self._lind]
        return sp.csr_matrix(
            (data, self._lambda_indices, self._lambda_indptr), shape=self._lambda_shape
        )

    def _first_block(self, theta: np.ndarray):
        """The first term's part of L(theta), level by level, and what it leaves for the rest:
        ``(T, L11, L11_inv, N, ND1, S_xx)`` with ``ND1 = N Z_1'[X y]`` and ``S_xx = [X y]'[X y]
        - [X y]'Z_1 N Z_1'[X y]``."""
        T = self.layout.templates(np.asarray(theta, dtype=float) * self.theta_scale)
        T1 = T[self.first]
        if self._entrywise:
            L11, L11_inv, N = small_block_factors(self._A11_flat_t, T1)
        else:
            M = T1.T @ self.A11 @ T1
            M += self._eye1  # M_j = T_1'A_j T_1 + I
            L11 = np.linalg.cholesky(M)
            L11_inv = np.linalg.inv(L11)
            LT = L11_inv @ T1.T  # L_11j^{-1} T_1'
            N = np.swapaxes(LT, 1, 2) @ LT  # T_1 M_j^{-1} T_1'
        ND1 = (N @ self.D1).reshape(-1, self.p + 1)  # N Z_1'[X y]
        S_xx = self.XYtXY - self.D1.reshape(-1, self.p + 1).T @ ND1
        return T, L11, L11_inv, N, ND1, S_xx

    def factorize(self, theta: np.ndarray) -> BlockedCholesky:
        """Blocked Cholesky factor ``L(theta)`` of [Lambda'Z'Z Lambda + I, ...; X ...; y ...]."""
        T, L11, L11_inv, N, ND1, S_xx = self._first_block(theta)
        q = self.q_rest
        S = np.zeros((q + self.p + 1, q + self.p + 1))
        S[q:, q:] = S_xx
        if q:
            Lam = self.lambda_rest(theta)
            S[:q, :q] = Lam.T @ (Lam.T @ (self.A_rr - self.sandwich.dense(N))).T
            S[np.diag_indices(q)] += 1.0
            S[q:, :q] = (Lam.T @ (self.D_r - self.A_r1 @ ND1)).T
        L_rest, info = la.lapack.dpotrf(S, lower=True, clean=True, overwrite_a=True)
        if info != 0:
            raise np.linalg.LinAlgError(f"Schur complement not positive definite (order {info})")
        return BlockedCholesky(T, L11, L11_inv, N, L_rest, q, self.p, self.x_scale, self.gamma)

    def criterion_terms(self, theta: np.ndarray, sparse: bool | None = None):
        """``(log|L|^2, log|R_X|^2, r^2)`` at theta: what the profiled criteria need.

        With a large, sparse second block (``self.sparse_rest``, :mod:`lmmlib.sparse_schur`) they
        come from its sparse factorization, otherwise from :meth:`factorize`; ``sparse=False``
        forces the dense path, ``sparse=True`` the sparse one (if the model has one).
        """
        theta = np.asarray(theta, dtype=float)
        if not self.q_rest:
            # The lean path is for theta in the usual range. At extreme theta (a start of 1e8,
            # or a degenerate bootstrap replicate whose subjects' lines fit their few points
            # exactly) the two factorizations lose precision differently, and the block-wise
            # one, which fails there, is the reference the optimiser is built around.
            if np.max(np.abs(theta * self.theta_scale), initial=0.0) <= LEAN_THETA_MAX:
                try:
                    return self._criterion_terms_one_term(theta)
                except np.linalg.LinAlgError:
                    pass
            f = self.factorize(theta)
            return f.logdet_L, f.logdet_RX, f.r2
        schur = self.sparse_rest if sparse is not False else None
        if schur is not None:
            T, L11, L11_inv, N, ND1, S_xx = self._first_block(theta)
            lam = self.lambda_rest(theta)
            S_xr = (lam.T @ (self.D_r - self.A_r1 @ ND1)).T
            try:
                logdet_rr, G = schur.criterion_terms(N, lam, S_xr, S_xx)
            except OffDiagonalPivot:
                return self.criterion_terms(theta, sparse=False)
            p = self.p
            logdet_11 = np.log(L11.reshape(len(L11), -1)[:, :: self.p1 + 1]).sum()
            logdet_RX = 2.0 * float(np.log(G.diagonal()[:p]).sum() + np.log(self.x_scale).sum())
            return 2.0 * float(logdet_11) + logdet_rr, logdet_RX, float(G[-1, -1] ** 2)
        f = self.factorize(theta)
        return f.logdet_L, f.logdet_RX, f.r2

    def _criterion_terms_one_term(self, theta: np.ndarray):
        """:meth:`criterion_terms` for one random-effects term, with as few steps as possible
        (for small models the fixed cost of each numpy call is most of an evaluation).

        With at most ``ONE_SHOT_MAX_ORDER`` random effects, the whole matrix of the module
        docstring is assembled (its first block is block diagonal, ``M_j = T'A_j T + I``, all
        levels in one product since ``vec(T'A T) = (T kron T)'vec(A)``) and factored by one
        LAPACK call.  Otherwise ``M_j = L_j L_j'`` level by level, ``W_j = L_j^{-1} T'Z_j'[X y]``
        and ``G = chol([X y]'[X y] - W'W)``, which holds ``R_X'`` and r.
        """
        p1, p = self.p1, self.p
        T1 = np.zeros(p1 * p1)
        T1[self._template_flat] = theta * self.theta_scale
        T1 = T1.reshape(p1, p1)
        q1 = self.levels1 * p1
        if q1 <= ONE_SHOT_MAX_ORDER:  # all of L at once: one LAPACK call on a small matrix
            kron = np.multiply.outer(T1, T1).transpose(0, 2, 1, 3).reshape(p1 * p1, -1)
            S = np.zeros((q1 + p + 1, q1 + p + 1))
            S[self._blocks_index] = (self._A11_flat @ kron).ravel()
            S[self._diag_index] += 1.0
            S[q1:, :q1] = (T1.T @ self.D1).transpose(2, 0, 1).reshape(p + 1, q1)
            S[q1:, q1:] = self.XYtXY
            L, info = la.lapack.dpotrf(S, lower=True, overwrite_a=True)
            if info != 0:
                raise np.linalg.LinAlgError(f"not positive definite (order {info})")
            d = np.log(L.diagonal())
            return (2.0 * float(d[:q1].sum()), 2.0 * float(d[q1:-1].sum() + self._log_x_scale),
                    float(L[-1, -1] ** 2))
        if self._entrywise:
            L11, _, N = small_block_factors(self._A11_flat_t, T1)
            S_xx = self.XYtXY - self.D1.reshape(-1, p + 1).T @ (N @ self.D1).reshape(-1, p + 1)
        else:
            kron = np.multiply.outer(T1, T1).transpose(0, 2, 1, 3).reshape(p1 * p1, -1)
            M = (self._A11_flat @ kron).reshape(-1, p1, p1)
            M += self._eye1
            L11 = np.linalg.cholesky(M)
            W = np.linalg.solve(L11, T1.T @ self.D1).reshape(-1, p + 1)
            S_xx = self.XYtXY - W.T @ W
        G = np.linalg.cholesky(S_xx)
        logdet_L = 2.0 * float(np.log(L11.reshape(len(L11), -1)[:, :: p1 + 1]).sum())
        g = np.log(G.diagonal())
        logdet_RX = 2.0 * float(g[:p].sum() + self._log_x_scale)
        return logdet_L, logdet_RX, float(G[-1, -1] ** 2)

    def objective(self, theta: np.ndarray, reml: bool) -> float:
        """The profiled REML criterion (``reml=True``) or deviance (``reml=False``) at theta,
        from the three numbers read off the Cholesky factor L(theta) (:meth:`factorize`, or a
        faster route to the same numbers, :meth:`criterion_terms`)."""
        logdet_L, logdet_RX, r2 = self.criterion_terms(theta)
        if reml:
            return profiled_reml_criterion(logdet_L, logdet_RX, r2, self.n, self.p)
        return profiled_deviance(logdet_L, r2, self.n)

    def _first_block_column(self, f: BlockedCholesky, theta: np.ndarray):
        """The block of L below ``L_11``: ``C = [Lambda_r'Z_r'; X'; y'] Z_1 Lambda_1 L_11^{-T}``.

        Returned as ``C_Z`` (sparse, q_rest x q1, or None) and ``C_XY`` (p+1 x q1).
        """
        W = f.templates[self.first] @ np.swapaxes(f.L11_inv, 1, 2)  # T_1 L_11j^{-T}
        C_XY = (np.swapaxes(self.D1, 1, 2) @ W).transpose(1, 0, 2).reshape(self.p + 1, -1)
        if not self.q_rest:
            return None, C_XY
        C_Z = self.lambda_rest(theta).T @ (self.A_r1 @ _block_diagonal(W))
        return sp.csr_matrix(C_Z), C_XY

    def solve(self, theta: np.ndarray) -> PLSSolution:
        """Conditional modes u, b = Lambda u and fixed effects beta at theta, by back-substitution.

        With the last row of L written ``[l_y1', l_yr', l_yX', r]``, the trailing factor gives
        ``[u_rest; beta]`` from ``L_rest0' [u_rest; beta] = [l_yr; l_yX]``, then for each level j
        of the first term ``L_11j' u_1j = l_y1j - (C_Z' u_rest + C_X' beta)_j``.
        """
        theta = np.asarray(theta, dtype=float)
        f = self.factorize(theta)
        C_Z, C_XY = self._first_block_column(f, theta)
        q, p = self.q_rest, self.p
        L0, l_y = f.L_rest[:-1, :-1], f.L_rest[-1, :-1]
        ub = la.solve_triangular(L0, l_y, lower=True, trans="T", check_finite=False)
        u_rest, beta_tilde = ub[:q], ub[q:]  # beta_tilde: of the scaled columns of X, less gamma
        rhs = C_XY[-1] - C_XY[:p].T @ beta_tilde
        if q:
            rhs = rhs - C_Z.T @ u_rest
        rhs = rhs.reshape(self.levels1, self.p1)
        u = [np.empty(0)] * len(self.terms)
        u[self.first] = np.einsum("jba,jb->ja", f.L11_inv, rhs)  # L_11j^{-T} rhs_j
        for k in self.rest:
            size = len(self.terms[k].levels) * len(self.terms[k].names)
            off = self.rest_offsets[k]
            u[k] = u_rest[off : off + size].reshape(len(self.terms[k].levels), -1)
        b = [uk @ Tk.T for uk, Tk in zip(u, self.layout.templates(theta))]
        return PLSSolution(
            theta=theta.copy(),
            beta=beta_tilde / self.x_scale + self.gamma,
            u=u,
            b=b,
            RX=f.RX,
            r2=f.r2,
            logdet_L=f.logdet_L,
            logdet_RX=f.logdet_RX,
            n=self.n,
            p=p,
        )

    def conditional_covariances(
        self, theta: np.ndarray, groups: Sequence[Sequence[int]], max_block: float = 2e7
    ) -> list[np.ndarray]:
        """Diagonal blocks of ``Lambda (L_ZZ L_ZZ')^{-1} Lambda'`` for each grouping factor.

        ``groups`` lists, per grouping factor, the indices (lme4 order) of its terms.  The result
        per factor is an array (levels, P, P), P the factor's total number of columns; times
        sigma^2 it is lme4's ``ranef(condVar = TRUE)``: the conditional covariance of the random
        effects given y at the estimates (beta treated as known).

        With ``L_ZZ = [[L_11, 0], [C_Z, L_rr]]`` the columns of ``L_ZZ^{-1}`` are
        ``[L_11^{-1} e; -L_rr^{-1} C_Z L_11^{-1} e]`` (first term) and ``[0; L_rr^{-1} e]`` (the
        rest), and ``(L L')^{-1} = L^{-T} L^{-1}`` has blocks that are inner products of these.
        """
        theta = np.asarray(theta, dtype=float)
        f = self.factorize(theta)
        templates = self.layout.templates(theta)
        q = self.q_rest
        L_rr = f.L_rest[:q, :q]
        M_inv = np.einsum("jka,jkb->jab", f.L11_inv, f.L11_inv)  # (L_11j L_11j')^{-1}
        if q:
            C_Z, _ = self._first_block_column(f, theta)
            K = sp.csc_matrix(C_Z @ _block_diagonal(f.L11_inv))  # C_Z L_11^{-1}
        out = []
        for group in groups:
            widths = [len(self.terms[k].names) for k in group]
            P, nlev = sum(widths), len(self.terms[group[0]].levels)
            V = np.zeros((nlev, P, P))
            starts = np.cumsum([0, *widths])
            chunk = max(1, int(max_block // max(1, q * P)))
            for j0 in range(0, nlev, chunk):
                js = np.arange(j0, min(nlev, j0 + chunk))
                if q:
                    bottoms = []
                    for k, w in zip(group, widths):
                        cols = (js[:, None] * w + np.arange(w)).ravel()
                        if k == self.first:
                            rhs = -K[:, cols].toarray()
                        else:
                            rhs = np.zeros((q, len(cols)))
                            rhs[self.rest_offsets[k] + cols, np.arange(len(cols))] = 1.0
                        B = la.solve_triangular(L_rr, rhs, lower=True, check_finite=False)
                        bottoms.append(B.reshape(q, len(js), w))
                    Bcat = np.concatenate(bottoms, axis=2)
                    V[js] = np.einsum("rja,rjb->jab", Bcat, Bcat)
                if self.first in group:
                    pos = list(group).index(self.first)
                    s = slice(starts[pos], starts[pos + 1])
                    V[js, s, s] += M_inv[js]
            Tf = la.block_diag(*[templates[k] for k in group])
            out.append(Tf @ V @ Tf.T)
        return out
