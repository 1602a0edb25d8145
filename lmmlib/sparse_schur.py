"""The second block of the blocked Cholesky factor, kept sparse.

In :mod:`lmmlib.pls` the random effects of the first term (the one with most levels) are
eliminated level by level, which leaves for the other terms ("r") the Schur complement

    S_rr = Lambda_r' B Lambda_r + I,    B = Z_r'Z_r - Z_r'Z_1 N Z_1'Z_r,
    N = blockdiag_j(T_1 M_j^{-1} T_1')

(Bates, Maechler, Bolker and Walker 2015, JSS 67(1), section 3; the notation of
:mod:`lmmlib.pls`).  Its order is the number of random effects of the other terms, e.g. 1,547
in a study of the shape of STAR (1,387 teachers and 80 schools with two effects each), but most
of its entries are structurally zero: ``Z_r'Z_r`` links only the teachers and schools that
share a row, and ``Z_r'Z_1 N Z_1'Z_r`` only those that share a level of the first term (a
student).  In such designs about 1% of the entries are nonzero, so the dense matrix and its
dense Cholesky factor, which cost O(q^2) memory traffic and O(q^3/3) flops per evaluation,
do mostly useless work.

Here the lower triangle of ``B`` lives on a fixed sparsity pattern (the union of the patterns of
``Z_r'Z_r`` and of the sandwich, which do not depend on theta), its values are one sparse
matrix-vector product from the entries of N (:class:`lmmlib.pls.BlockSandwich`), and
``S_rr`` is factored by a sparse LU factorization with a symmetric fill-reducing ordering
(SuperLU's minimum degree on ``A' + A``, ``scipy.sparse.linalg.splu``) and diagonal pivots,
which for a symmetric positive definite matrix is the Cholesky factorization in another form:
``S_rr = P' L D L' P`` with ``U = D L'``, so ``log det S_rr = sum_i log U_ii``.

The fixed effects and the response are then eliminated densely.  With
``S_xr = [X'; y'](Z_r - Z_1 N Z_1'Z_r) Lambda_r`` (p + 1 rows) and
``S_xx = [X y]'[X y] - [X y]'Z_1 N Z_1'[X y]``,

    G = S_xx - S_xr S_rr^{-1} S_xr'

is the Schur complement of everything random, and its (p+1) x (p+1) Cholesky factor holds
``R_X'`` and ``r`` as the last block of L does (:class:`lmmlib.pls.BlockedCholesky`).  So

    log|L|^2 = log det(M_1 ... M_l) + log det S_rr,   log|R_X|^2, r^2 from chol(G),

which are all the profiled criteria need.  Nothing else changes: the conditional modes and the
covariances use the dense factor, once per fit.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as la
import scipy.sparse as sp
import scipy.sparse.linalg as spla

__all__ = ["SparseSchurComplement", "sparse_is_worthwhile"]

#: Below this order the dense Schur complement is as fast (LAPACK beats sparse bookkeeping).
MIN_ORDER = 400
#: The sparse form is used when at most this fraction of the lower triangle is nonzero.
MAX_DENSITY = 0.1


def sparse_is_worthwhile(order: int, nonzeros_lower: int) -> bool:
    """Whether the second block is large and sparse enough for the sparse factorization.

    >>> sparse_is_worthwhile(1547, 20_000), sparse_is_worthwhile(100, 200)
    (True, False)
    """
    lower = order * (order + 1) / 2
    return order >= MIN_ORDER and nonzeros_lower <= MAX_DENSITY * lower


class SparseSchurComplement:
    """``S_rr = Lambda_r'(A_rr - A_r1 N A_r1')Lambda_r + I`` on a fixed sparse pattern.

    Parameters
    ----------
    A_rr : sparse (q x q)
        ``Z_r'Z_r`` of the (scaled) columns of the terms after the first.
    sandwich : lmmlib.pls.BlockSandwich
        ``A_r1 N A_r1'`` for ``A_r1 = Z_r'Z_1``; its coefficient matrix ``K`` must exist.

    Examples
    --------
    >>> from lmmlib.pls import BlockSandwich
    >>> A_r1 = sp.csr_matrix(np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]))
    >>> A_rr = sp.csr_matrix(np.diag([1.0, 2.0, 1.0]))
    >>> schur = SparseSchurComplement(A_rr, BlockSandwich(A_r1, 1))
    >>> N = np.array([[[0.5]], [[0.5]]])
    >>> B = schur.matrix(N).toarray()            # A_rr - A_r1 N A_r1'
    >>> bool(np.allclose(B, A_rr.toarray() - A_r1 @ np.diag([0.5, 0.5]) @ A_r1.T))
    True
    """

    def __init__(self, A_rr: sp.spmatrix, sandwich):
        if sandwich.K is None:
            raise ValueError("the sandwich has no coefficient matrix K (too many pairs)")
        m = sandwich.m
        self.m = m
        A = sp.coo_matrix(A_rr)
        lower = A.row >= A.col
        a_keys = A.row[lower].astype(np.int64) * m + A.col[lower]
        K = sandwich.K
        k_counts = np.diff(K.indptr)
        k_keys = np.flatnonzero(k_counts)
        keys = np.union1d(a_keys, k_keys)  # lower-triangle entries r*m + s, r >= s, sorted
        self.nnz_lower = len(keys)
        self._a_values = np.zeros(len(keys))
        np.add.at(self._a_values, np.searchsorted(keys, a_keys), A.data[lower])
        # K restricted to the pattern's rows (one row per entry of the lower triangle)
        counts = np.zeros(len(keys), dtype=np.int64)
        counts[np.searchsorted(keys, k_keys)] = k_counts[k_keys]
        indptr = np.concatenate([[0], np.cumsum(counts)])
        self._K = sp.csr_matrix((K.data, K.indices, indptr), shape=(len(keys), K.shape[1]))
        # the full symmetric pattern, in CSR order, and where each entry's value comes from
        r, s = keys // m, keys % m
        off = np.flatnonzero(r != s)
        rows = np.concatenate([r, s[off]])
        cols = np.concatenate([s, r[off]])
        source = np.concatenate([np.arange(len(keys)), off])
        order = np.lexsort((cols, rows))
        self._source = source[order]
        self._indices = cols[order].astype(np.int32)
        self._indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=m))]).astype(
            np.int32)

    def matrix(self, N: np.ndarray) -> sp.csr_matrix:
        """``B = A_rr - A_r1 blockdiag(N) A_r1'`` as a sparse symmetric matrix."""
        values = self._a_values - self._K @ N.reshape(-1)
        return sp.csr_matrix((values[self._source], self._indices, self._indptr),
                             shape=(self.m, self.m))

    def factor(self, N: np.ndarray, lam: sp.csr_matrix):
        """The sparse LU factorization of ``S_rr = Lambda_r' B Lambda_r + I`` (SuperLU, minimum
        degree on ``A' + A``, diagonal pivots) and ``log det S_rr``.

        Raises ``numpy.linalg.LinAlgError`` if a pivot is not positive (S_rr numerically not
        positive definite), or ``_OffDiagonalPivot`` if SuperLU left the diagonal (then the
        caller falls back to the dense factorization).
        """
        S = lam.T @ self.matrix(N) @ lam
        S = (S + sp.identity(self.m, format="csr")).tocsc()
        lu = spla.splu(S, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                       options={"SymmetricMode": True})
        if not np.array_equal(lu.perm_r, lu.perm_c):
            raise OffDiagonalPivot
        pivots = lu.U.diagonal()
        if not np.all(pivots > 0):
            raise np.linalg.LinAlgError("Schur complement not positive definite")
        return lu, float(np.log(pivots).sum())

    def criterion_terms(self, N: np.ndarray, lam: sp.csr_matrix, S_xr: np.ndarray,
                        S_xx: np.ndarray) -> tuple[float, np.ndarray]:
        """``(log det S_rr, G)`` with ``G = chol(S_xx - S_xr S_rr^{-1} S_xr')`` (lower), the
        Cholesky factor of the Schur complement of the fixed effects and the response."""
        lu, logdet = self.factor(N, lam)
        # one right-hand side at a time: SuperLU's multi-column solve is far slower when BLAS
        # runs several threads
        W = np.column_stack([lu.solve(column) for column in S_xr])
        G = S_xx - S_xr @ W
        L, info = la.lapack.dpotrf(G, lower=True, clean=True, overwrite_a=True)
        if info != 0:
            raise np.linalg.LinAlgError(f"Schur complement not positive definite (order {info})")
        return logdet, L


class OffDiagonalPivot(Exception):
    """SuperLU chose an off-diagonal pivot: the symmetric factorization does not apply."""
