"""The gradient of the profiled REML criterion and deviance with respect to theta.

The criteria of :mod:`lmmlib.pls` (Bates, Maechler, Bolker and Walker 2015, JSS 67(1),
eqs. 34 and 41) are, up to constants,

    d(theta)   = log|A| + n log r^2,                      A = Lambda'Z'Z Lambda + I,
    d_R(theta) = log|G| + (n - p) log r^2,                G = [A, Lambda'Z'X; X'Z Lambda, X'X],

since ``log|G| = log|L|^2 + log|R_X|^2``.  Lambda is linear in theta: the template entry
``T_k[a, c]`` held by ``theta_i`` appears once per level of term k, so
``dLambda/dtheta_i = E_i = I_levels (x) e_a e_c'`` on term k's columns.

**The log-determinant.**  With ``D = blockdiag(Lambda, I_p)`` and ``G = D' [Z X]'[Z X] D + J``
(J the identity on the random effects, 0 on X), ``dG = E'[..]D + D'[..]E``, so
``d log|G| / dtheta_i = 2 tr(E_i G^{-1} D'[Z X]'[Z X])``.  Because ``G^{-1} D'[..]D = I -
G^{-1} J``, the diagonal block of level j of term k of ``G^{-1} D'[..]`` is ``(I - G^{jj})
T_k^{-1}`` (``G^{jj}`` the level's diagonal block of ``G^{-1}``), and

    d log|G| / dtheta_i = 2 [(l_k I - S_k) T_k^{-1}]_{c, a},   S_k = sum_j G^{jj},

``l_k`` the number of levels.  The same holds for ML with A in place of G.  Only the diagonal
blocks of ``G^{-1}`` are needed.  With the blocked factor of :mod:`lmmlib.pls`,
``L_G = [L_11, 0; C, L_0]`` (``L_0`` the dense factor of the other terms, and of X for
REML), they are: for the other terms, blocks of ``(L_0 L_0')^{-1}`` (LAPACK ``dpotri``); for
the first term, ``M_j^{-1} + U_j' B_j' (L_0 L_0')^{-1} B_j U_j`` with ``U_j = T_1 M_j^{-1}``
and ``B = [Lambda_r'Z_r'Z_1; X'Z_1]``, whose sum over j is an inner product of
``(L_0 L_0')^{-1}`` with ``B blockdiag(U_j e_a e_b' U_j') B'``, formed as the factorization
forms its Schur complement (:class:`lmmlib.pls.BlockSandwich`).

**The residual sum of squares.**  ``r^2`` is a minimum over beta and u, so its derivative is
that of the penalized sum of squares at the minimiser (the envelope theorem):

    d r^2 / dtheta_i = -2 rhat' Z E_i uhat = -2 sum_j (Z_k' rhat)_{j, a} uhat_{j, c},

with ``rhat = y - X betahat - Z Lambda uhat`` and ``uhat = Lambda'Z' rhat`` (the normal
equations).  Hence

    dd/dtheta_i = d log|A|/dtheta_i + n (d r^2/dtheta_i) / r^2,
    dd_R/dtheta_i = d log|G|/dtheta_i + (n - p) (d r^2/dtheta_i) / r^2.

This is the gradient of lme4's profiled criterion written with its Cholesky factor; the
trace-of-inverse form of the log-determinant's derivative is the standard one for variance
components (e.g. Zhou, Hu, Zhou and Lange 2019, Statistical Science 34(4), section 2).

**Where it does not apply.**  ``T_k^{-1}`` must exist.  A scalar term with ``theta = 0`` has
derivative 0 (the criteria are even in it, and ``uhat = 0``); a vector-valued term with a
singular template (a boundary fit) has no gradient here, and :func:`value_and_gradient`
returns None for it, so the optimiser falls back to finite differences.  Near such a point
``(l_k I - S_k) T_k^{-1}`` loses about ``l_k eps / t`` to cancellation (t the smallest
diagonal entry of T_k), far less than a finite difference.

At lme4's start ``T = I`` for sleepstudy's slopes model, and at the REML estimate, where the
gradient vanishes:

>>> from lmmlib import datasets, lmer
>>> fit = lmer("Reaction ~ Days + (Days | Subject)", datasets.sleepstudy())
>>> value, g = value_and_gradient(fit.pls, np.array([1.0, 0.0, 1.0]), reml=True)
>>> round(value, 4), g.round(3).tolist()
(1773.6803, [-1.242, 0.937, 31.291])
>>> value, g = value_and_gradient(fit.pls, fit.theta, reml=True)
>>> round(value, 4), bool(np.abs(g).max() < 1e-3)
(1743.6283, True)
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as la

from lmmlib.pls import PenalizedLeastSquares, profiled_deviance, profiled_reml_criterion
from lmmlib.remat import theta_indices

__all__ = ["value_and_gradient", "criterion_gradient"]


def _symmetric_inverse(L0: np.ndarray) -> np.ndarray:
    """``(L_0 L_0')^{-1}`` from the lower-triangular factor ``L_0`` (LAPACK ``dpotri``)."""
    if L0.shape[0] == 0:
        return np.zeros((0, 0))
    inv, info = la.lapack.dpotri(L0, lower=True)  # the upper triangle of L0 is 0
    if info != 0:
        raise np.linalg.LinAlgError("factor is singular")
    return inv  # lower triangle only


def _inner(lower_inv: np.ndarray, P: np.ndarray) -> float:
    """``<G^{-1}, P>`` for symmetric P from the lower triangle of ``G^{-1}``."""
    return float(2.0 * np.sum(lower_inv * P) - np.dot(np.diag(lower_inv), np.diag(P)))


def _sandwich(pls: PenalizedLeastSquares, N: np.ndarray, lam_rest, BX: np.ndarray | None,
              n0: int) -> np.ndarray:
    """``B blockdiag(N) B'`` (n0 x n0) for ``B = [Lambda_r'Z_r'Z_1; X'Z_1]`` (X rows if BX).

    ``BX`` is ``X'Z_1`` as (levels1, p1, p): the first term's cross-products with X.
    """
    q = pls.q_rest
    P = np.zeros((n0, n0))
    if q:
        P[:q, :q] = (lam_rest.T @ (lam_rest.T @ pls.sandwich.dense(N)).T)
    if BX is not None:
        NBX = N @ BX  # (levels1, p1, p): N_j (Z_1'X)_j
        P[q:, q:] = np.einsum("jap,jaq->pq", BX, NBX)
        if q:
            cross = lam_rest.T @ (pls.A_r1 @ NBX.reshape(-1, BX.shape[2]))  # q x p
            P[:q, q:] = cross
            P[q:, :q] = cross.T
    return P


def value_and_gradient(pls: PenalizedLeastSquares, theta: np.ndarray, reml: bool,
                       scaled: bool = False):
    """The profiled criterion at theta and its gradient ``d criterion / d theta``.

    ``reml=True``: lme4's REML criterion; ``False``: the deviance (see :mod:`lmmlib.pls`).
    With ``scaled=True``, ``theta`` is on the optimiser's scale (theta times
    ``pls.theta_scale``) and the gradient is with respect to it.  Returns ``(value, gradient)``,
    or ``(value, None)`` where a vector-valued term's template is singular (see the module
    docstring), where the gradient does not exist in this form.

    Formula (module docstring): ``d log|G|/dtheta_i = 2 [(l_k I - S_k) T_k^{-1}]_{c,a}`` plus
    ``m (d r^2/dtheta_i) / r^2`` with ``d r^2/dtheta_i = -2 sum_j (Z_k'rhat)_{j,a} uhat_{j,c}``,
    ``m = n - p`` (REML) or ``n`` (ML); Bates et al. (2015), Zhou et al. (2019).

    >>> from types import SimpleNamespace
    >>> g = SimpleNamespace(codes=np.repeat([0, 1, 2], 2), X=np.ones((6, 1)),
    ...                     levels=[0, 1, 2], names=("(Intercept)",), group="g")
    >>> pls = PenalizedLeastSquares(np.ones((6, 1)), np.array([1., 2, 4, 5, 7, 9]), [g])
    >>> value, grad = value_and_gradient(pls, np.array([1.0]), reml=False)
    >>> h = 1e-6
    >>> fd = (pls.objective(np.array([1 + h]), False) - pls.objective(np.array([1 - h]), False))
    >>> bool(abs(grad[0] - fd / (2 * h)) < 1e-6)
    True
    """
    theta = np.asarray(theta, dtype=float)
    theta_data = theta / pls.theta_scale if scaled else theta
    f = pls.factorize(theta_data)
    n, p, q = pls.n, pls.p, pls.q_rest
    if reml:
        value = profiled_reml_criterion(f.logdet_L, f.logdet_RX, f.r2, n, p)
    else:
        value = profiled_deviance(f.logdet_L, f.r2, n)
    T = f.templates  # of the scaled columns
    for k, Tk in enumerate(T):
        if Tk.shape[0] > 1 and np.min(np.abs(np.diag(Tk))) <= 1e-12 * max(1.0, np.abs(Tk).max()):
            return value, None
    try:
        with np.errstate(all="ignore"):  # overflow at an extreme theta: no gradient there
            grad = _gradient(pls, f, theta_data, T, reml)
    except np.linalg.LinAlgError:
        return value, None
    if not np.all(np.isfinite(grad)):
        return value, None
    if not scaled:
        grad = grad * pls.theta_scale
    return value, grad


def _gradient(pls: PenalizedLeastSquares, f, theta_data, T, reml: bool) -> np.ndarray:
    """The gradient on the optimiser's scale from the factor ``f`` (module docstring)."""
    n, p, q = pls.n, pls.p, pls.q_rest

    # --- the diagonal blocks of G^{-1} (REML) or A^{-1} (ML), summed over levels: S_k
    n0 = q + p if reml else q
    G0_inv = _symmetric_inverse(f.L_rest[:n0, :n0])
    first, p1 = pls.first, pls.p1
    T1 = T[first]
    M_inv = np.einsum("jka,jkb->jab", f.L11_inv, f.L11_inv)  # M_j^{-1} = L_11j^{-T} L_11j^{-1}
    U = T1 @ M_inv  # U_j = T_1 M_j^{-1}
    lam_rest = pls.lambda_rest(theta_data) if q else None
    BX = pls.D1[:, :, :p] if reml and p else None
    S = [None] * len(T)
    S1 = M_inv.sum(axis=0)
    if n0:
        for a in range(p1):
            for b in range(a + 1):
                N = U[:, :, a, None] * U[:, None, :, b]  # U_j e_a e_b' U_j'
                if a != b:
                    N = 0.5 * (N + np.swapaxes(N, 1, 2))
                value_ab = _inner(G0_inv, _sandwich(pls, N, lam_rest, BX, n0))
                S1[a, b] += value_ab
                if a != b:
                    S1[b, a] += value_ab
    S[first] = S1
    diag_inv = G0_inv
    for k in pls.rest:
        pk, lk = T[k].shape[0], len(pls.terms[k].levels)
        off = pls.rest_offsets[k]
        block = np.arange(lk)[:, None] * pk + np.arange(pk)
        idx = off + block  # (levels, pk)
        lower_blocks = diag_inv[idx[:, :, None], idx[:, None, :]].sum(axis=0)  # a >= b
        S[k] = np.tril(lower_blocks) + np.tril(lower_blocks, -1).T

    # --- Z'rhat and uhat (scaled columns), from the cross-products
    u, Ztr = _residual_products(pls, f, theta_data, T)

    m = (n - p) if reml else n
    grad = np.empty(pls.layout.size)
    for k, Tk in enumerate(T):
        pk = Tk.shape[0]
        lk = len(pls.terms[k].levels)
        rows, cols = theta_indices(pk)
        s = pls.layout.slices[k]
        if pk == 1 and Tk[0, 0] == 0.0:
            grad[s] = 0.0
            continue
        W = la.solve_triangular(Tk, (lk * np.eye(pk) - S[k]).T, lower=True, trans="T",
                                check_finite=False).T
        # W = (l_k I - S_k) T_k^{-1}
        dlogdet = 2.0 * W[cols, rows]
        dr2 = -2.0 * np.einsum("ja,jc->ac", Ztr[k], u[k])[rows, cols]
        grad[s] = dlogdet + m * dr2 / f.r2
    return grad


def _residual_products(pls: PenalizedLeastSquares, f, theta_data, T):
    """``uhat_k`` and ``Z_k' rhat`` per term (scaled columns), arrays (levels, p_k).

    ``[u_rest; beta~]`` by back-substitution in the trailing factor; then with
    ``b_r = Lambda_r u_rest``, ``e = y - X beta~ - Z_r b_r`` (in cross-products),
    ``uhat_1j = M_j^{-1} T_1' (Z_1'e)_j``, and ``Z'rhat = Z'e - Z'Z_1 b_1``.
    """
    q, p = pls.q_rest, pls.p
    L0, l_y = f.L_rest[:-1, :-1], f.L_rest[-1, :-1]
    ub = la.solve_triangular(L0, l_y, lower=True, trans="T", check_finite=False)
    u_rest, beta = ub[:q], ub[q:]
    coef = np.concatenate([-beta, [1.0]])  # [X y] coef -> y - X beta~
    Z1e = pls.D1 @ coef  # (levels1, p1): Z_1'(y - X beta~)
    first, p1 = pls.first, pls.p1
    u = [None] * len(T)
    Ztr = [None] * len(T)
    if q:
        lam = pls.lambda_rest(theta_data)
        b_rest = lam @ u_rest
        Zre = pls.D_r @ coef - pls.A_rr @ b_rest  # Z_r'(y - X beta~ - Z_r b_r)
        Z1e = Z1e - (pls.A_r1.T @ b_rest).reshape(-1, p1)
    M_inv = np.einsum("jka,jkb->jab", f.L11_inv, f.L11_inv)
    u1 = np.einsum("jab,jb->ja", M_inv, Z1e @ T[first])  # M_j^{-1} T_1'(Z_1'e)_j
    b1 = u1 @ T[first].T
    u[first] = u1
    Ztr[first] = Z1e - np.einsum("jab,jb->ja", pls.A11, b1)
    if q:
        Zr_tr = Zre - pls.A_r1 @ b1.reshape(-1)
        for k in pls.rest:
            pk, lk = T[k].shape[0], len(pls.terms[k].levels)
            off = pls.rest_offsets[k]
            u[k] = u_rest[off: off + pk * lk].reshape(lk, pk)
            Ztr[k] = Zr_tr[off: off + pk * lk].reshape(lk, pk)
    return u, Ztr


def criterion_gradient(pls: PenalizedLeastSquares, theta: np.ndarray, reml: bool):
    """``d criterion / d theta`` at theta (data units), or None where it does not exist in
    closed form (a singular vector-valued template); see :func:`value_and_gradient`.

    >>> from types import SimpleNamespace
    >>> g = SimpleNamespace(codes=np.repeat([0, 1, 2], 2), X=np.ones((6, 1)),
    ...                     levels=[0, 1, 2], names=("(Intercept)",), group="g")
    >>> pls = PenalizedLeastSquares(np.ones((6, 1)), np.array([1., 2, 4, 5, 7, 9]), [g])
    >>> criterion_gradient(pls, np.array([0.0]), reml=True).tolist()  # even in theta
    [0.0]
    """
    return value_and_gradient(pls, theta, reml)[1]
