"""Kenward and Roger's adjusted covariance of beta_hat and their denominator df, as pbkrtest.

The covariance of y is linear in the variance components ``gamma``:

    Sigma = sum_i gamma_i G_i,

where gamma lists, term by term, the lower triangle (column by column) of each term's
covariance ``sigma^2 T_k T_k'`` and then ``sigma^2``; ``G_i = Z_k (I ⊗ E_rc) Z_k'`` with
``E_rc`` the symmetric indicator of entry (r, c), and ``G = I`` for ``sigma^2``.  With
``Phi = (X'Sigma^{-1}X)^{-1}`` (the REML fit's vcov) Kenward and Roger (1997, Biometrics 53,
983-997, eqs. 3-5 with the second derivatives of Sigma zero, as pbkrtest's ``vcovAdj``) set

    P_i  = -X'Sigma^{-1} G_i Sigma^{-1} X,
    Q_ij =  X'Sigma^{-1} G_i Sigma^{-1} G_j Sigma^{-1} X,
    I_ij =  tr(Sigma^{-1}G_i Sigma^{-1}G_j) - 2 tr(Phi Q_ij) + tr(Phi P_i Phi P_j),
    W    =  2 I^{-1}                 (the expected REML covariance of gamma_hat),
    Phi_A = Phi + 2 Phi [sum_ij W_ij (Q_ij - P_i Phi P_j)] Phi.

For a hypothesis ``L beta = 0`` of rank q, with ``Theta = L'(L Phi L')^{-1} L``,
``A1 = sum_ij W_ij tr(Theta Phi P_i Phi) tr(Theta Phi P_j Phi)`` and
``A2 = sum_ij W_ij tr(Theta Phi P_i Phi Theta Phi P_j Phi)``, the statistic
``F = lambda (L beta)'(L Phi_A L')^{-1}(L beta) / q`` is referred to F(q, m) with

    B = (A1 + 6 A2) / (2q),  g = ((q+1) A1 - (q+4) A2) / ((q+2) A2),
    c1 = g / (3q + 2(1-g)),  c2 = (q-g) / (3q + 2(1-g)),  c3 = (q+2-g) / (3q + 2(1-g)),
    rho = ((1 - A2/q) / (1 - c2 B))^2 (1 + c1 B) / (q (1 - c3 B)),
    m = 4 + (q + 2) / (q rho - 1),   lambda = m (1 - A2/q) / (m - 2)

(Kenward and Roger 1997, section 4; pbkrtest's ``.KR_adjust`` and ``Lb_ddf``).

**Computation.**  pbkrtest forms the n x n matrix Sigma and inverts it.  Here every quantity
is reduced to the q random effects with ``Sigma^{-1} = sigma^{-2}(I - Z W Z')``,
``W = Lambda (Lambda'Z'Z Lambda + I)^{-1} Lambda'`` (Woodbury), so only q x q matrices are
formed: ``Z'Sigma^{-1}Z = sigma^{-2} C R``, ``Z'Sigma^{-1}X = sigma^{-2} R'Z'X`` with
``C = Z'Z`` and ``R = I - W C``, and likewise for the residual component's powers of
``Sigma^{-1}``.  The test suite checks every matrix against pbkrtest's dense formulas.
Everything is analytic: KR needs no numerical derivatives.  The cost grows as q^3 (dense q x q
factorizations): fine to a few thousand random effects.

>>> from lmmlib import datasets, lmer
>>> fit = lmer("Reaction ~ Days + (Days | Subject)", datasets.sleepstudy())
>>> kr = KenwardRoger(fit)
>>> [round(float(d), 3) for d in kr.df_coefficients()]  # balanced: the classical k - 1
[17.0, 17.0]
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as la
import scipy.sparse as sp
from scipy import stats

from lmmlib.errors import LmmInputError
from lmmlib.remat import theta_indices

__all__ = ["KenwardRoger", "random_effects_matrix"]

#: largest number of random effects for which the q x q matrices are formed
MAX_RANDOM_EFFECTS = 20_000


def random_effects_matrix(terms) -> tuple[sp.csr_matrix, list[slice]]:
    """Sparse ``Z = [Z_1, ..., Z_K]`` (n x q) and the column slice of each term.

    Term k's block has columns ``j p_k + a`` for level j and column a of its raw matrix.
    """
    blocks, slices, start = [], [], 0
    for term in terms:
        codes = np.asarray(term.codes, dtype=np.int64)
        Xk = np.asarray(term.X, dtype=float)
        n, p = Xk.shape
        rows = np.repeat(np.arange(n), p)
        cols = (codes[:, None] * p + np.arange(p)).ravel()
        width = len(term.levels) * p
        blocks.append(sp.csr_matrix((Xk.ravel(), (rows, cols)), shape=(n, width)))
        slices.append(slice(start, start + width))
        start += width
    return sp.hstack(blocks).tocsr(), slices


class KenwardRoger:
    """pbkrtest's ``vcovAdj`` for a REML fit, and Kenward-Roger df for contrasts.

    Attributes
    ----------
    vcov : array (p, p)       ``Phi``, the unadjusted covariance of beta_hat.
    vcov_adjusted : array     ``Phi_A``.
    P : list of (p, p)        ``P_i``, one per variance component.
    W : array                 ``2 I^{-1}``.
    gamma : array             the variance components (covariance entries, then sigma^2).
    """

    def __init__(self, fit):
        if not fit.reml:
            raise LmmInputError(
                "Kenward-Roger's method is defined for REML fits (as pbkrtest); "
                "refit with reml=True or use ddf='satterthwaite'"
            )
        Z, slices = random_effects_matrix(fit.terms)
        q = Z.shape[1]
        if q > MAX_RANDOM_EFFECTS:
            raise LmmInputError(
                f"Kenward-Roger needs dense {q} x {q} matrices ({q} random effects); "
                f"use ddf='satterthwaite' for models with more than {MAX_RANDOM_EFFECTS}"
            )
        X = np.asarray(fit.design.X, dtype=float)
        n = X.shape[0]
        sigma2 = fit.sigma**2
        templates = fit.layout.templates(fit.theta)
        Lam = la.block_diag(*[np.kron(np.eye(len(t.levels)), T)
                              for t, T in zip(fit.terms, templates)])
        C = (Z.T @ Z).toarray()
        Zx = np.asarray(Z.T @ X)
        XX = X.T @ X
        M = Lam.T @ C @ Lam + np.eye(q)
        cho = la.cho_factor(M, lower=True)
        W = Lam @ la.cho_solve(cho, Lam.T)  # Lambda M^{-1} Lambda'
        R = np.eye(q) - W @ C
        WZx = W @ Zx
        A = C @ R / sigma2                     # Z'Sigma^{-1}Z
        B = R.T @ Zx / sigma2                  # Z'Sigma^{-1}X
        A2 = R.T @ C @ R / sigma2**2           # Z'Sigma^{-2}Z
        B2 = R.T @ (R.T @ Zx) / sigma2**2      # Z'Sigma^{-2}X
        vv = XX - 2 * Zx.T @ WZx + WZx.T @ C @ WZx  # (X - Z W Z'X)'(X - Z W Z'X)
        RtZx = R.T @ Zx
        X_S2_X = vv / sigma2**2                          # X'Sigma^{-2}X
        X_S3_X = (vv - RtZx.T @ W @ RtZx) / sigma2**3    # X'Sigma^{-3}X
        WC = W @ C
        tr_S2 = (n - 2 * np.trace(WC) + np.sum(WC * WC.T)) / sigma2**2

        # the variance components and their D_i (q x q, sparse): G_i = Z D_i Z'
        D, gamma = [], []
        for term, T, s in zip(fit.terms, templates, slices):
            p = len(term.names)
            cov = sigma2 * T @ T.T
            nlev = len(term.levels)
            for r, c in zip(*theta_indices(p)):
                E = np.zeros((p, p))
                E[r, c] = E[c, r] = 1.0
                block = sp.coo_matrix(sp.kron(sp.identity(nlev), sp.csr_matrix(E)))
                D.append(sp.csr_matrix((block.data, (block.row + s.start, block.col + s.start)),
                                       shape=(q, q)))
                gamma.append(cov[r, c])
        gamma.append(sigma2)
        m = len(gamma)
        self.gamma = np.array(gamma)

        DA = [Di @ A for Di in D]   # D_i Z'Sigma^{-1}Z
        DB = [Di @ B for Di in D]   # D_i Z'Sigma^{-1}X
        P = [-(B.T @ DBi) for DBi in DB] + [-X_S2_X]
        Q = np.empty((m, m), dtype=object)
        K = np.empty((m, m))
        for i in range(m - 1):
            for j in range(m - 1):
                Q[i, j] = B.T @ (D[i] @ (A @ DB[j]))  # B'D_i A D_j B
                K[i, j] = np.sum(DA[i] * DA[j].T)
            Q[i, m - 1] = B.T @ (D[i] @ B2)
            Q[m - 1, i] = Q[i, m - 1].T
            K[i, m - 1] = K[m - 1, i] = float(D[i].multiply(A2).sum())
        Q[m - 1, m - 1] = X_S3_X
        K[m - 1, m - 1] = tr_S2

        Phi = np.asarray(fit.vcov, dtype=float)
        info = np.empty((m, m))
        for i in range(m):
            for j in range(m):
                info[i, j] = (K[i, j] - 2 * np.sum(Phi * Q[i, j])
                              + np.sum((Phi @ P[i]) * (P[j] @ Phi)))
        values = np.linalg.eigvalsh(info)
        Wmat = 2 * (np.linalg.inv(info) if np.min(np.abs(values)) > 1e-10
                    else np.linalg.pinv(info))
        U = np.zeros_like(Phi)
        for i in range(m):
            for j in range(m):
                U += Wmat[i, j] * (Q[i, j] - P[i] @ Phi @ P[j])
        U = (U + U.T) / 2
        self.vcov = Phi
        self.vcov_adjusted = Phi + 2 * Phi @ U @ Phi
        self.P = P
        self.W = Wmat
        self.information = info

    # ------------------------------------------------------------------ df and F
    def _a1_a2(self, L: np.ndarray) -> tuple[float, float]:
        Phi = self.vcov
        Theta = L.T @ np.linalg.solve(L @ Phi @ L.T, L)
        u = [Theta @ Phi @ Pi @ Phi for Pi in self.P]
        tr = np.array([np.trace(ui) for ui in u])
        A1 = float(tr @ self.W @ tr)
        A2 = float(sum(self.W[i, j] * np.sum(u[i] * u[j].T)
                       for i in range(len(u)) for j in range(len(u))))
        return A1, A2

    def ddf_and_scaling(self, L) -> tuple[float, float]:
        """Kenward-Roger's denominator df m and F scaling lambda for ``L beta = 0``
        (q = number of rows of L, full rank)."""
        L = np.atleast_2d(np.asarray(L, dtype=float))
        q = L.shape[0]
        A1, A2 = self._a1_a2(L)
        B = (A1 + 6 * A2) / (2 * q)
        g = ((q + 1) * A1 - (q + 4) * A2) / ((q + 2) * A2)
        denom = 3 * q + 2 * (1 - g)
        c1, c2, c3 = g / denom, (q - g) / denom, (q + 2 - g) / denom
        V0, V1, V2 = 1 + c1 * B, 1 - c2 * B, 1 - c3 * B
        V0 = 0.0 if abs(V0) < 1e-10 else V0
        ratio = 1.0 if abs(1 - A2 / q) < 1e-14 and abs(V1) < 1e-14 else (1 - A2 / q) / V1
        rho = ratio**2 * V0 / (q * V2)
        ddf = 4 + (q + 2) / (q * rho - 1)
        scaling = 1.0 if abs(ddf - 2) < 1e-2 else ddf * (1 - A2 / q) / (ddf - 2)
        return float(ddf), float(scaling)

    def df(self, l) -> float:
        """Kenward-Roger df for one contrast (pbkrtest's ``Lb_ddf``)."""
        return self.ddf_and_scaling(l)[0]

    def df_coefficients(self) -> np.ndarray:
        """Kenward-Roger df for each fixed effect."""
        return np.array([self.df(e) for e in np.eye(self.vcov.shape[0])])

    def f_test(self, L, beta) -> dict:
        """Kenward-Roger F test of ``L beta = 0`` (pbkrtest's ``KRmodcomp``):
        ``F = lambda (L beta)'(L Phi_A L')^{-1}(L beta) / q`` on (q, m) df."""
        L = np.atleast_2d(np.asarray(L, dtype=float))
        q = int(np.linalg.matrix_rank(L))
        Lb = L @ np.asarray(beta, dtype=float)
        wald = float(Lb @ np.linalg.solve(L @ self.vcov_adjusted @ L.T, Lb))
        ddf, scaling = self.ddf_and_scaling(L)
        F = scaling * wald / q
        return {"F": F, "NumDF": q, "DenDF": ddf, "p": float(stats.f.sf(F, q, ddf)),
                "F.scaling": scaling}
