"""Satterthwaite's degrees of freedom for fixed-effect contrasts, as lmerTest computes them.

For a contrast ``l'beta`` the t statistic ``t = l'beta_hat / sqrt(l'V l)`` uses the estimated
covariance ``V = V(tau_hat)`` of beta_hat, a function of the variance parameters
``tau = (theta, sigma)``.  Satterthwaite (1946) matches the variance of ``l'V(tau_hat)l`` to that
of a scaled chi-square and so gets the degrees of freedom of t (Kuznetsova, Brockhoff and
Christensen 2017, JSS 82(13), eq. 6; Giesbrecht and Burns 1985):

    nu = 2 (l'V l)^2 / (g' A g),    g_i = l' (dV / dtau_i) l,    A = Cov(tau_hat) = 2 H^{-1},

where ``H`` is the Hessian of the deviance (-2 log-likelihood; the REML criterion for a REML
fit) at the estimate, as a function of ``tau`` with beta profiled out:

    d(theta, sigma) = log|L|^2 + log|R_X|^2 + r^2(theta)/sigma^2 + (n - p) log(2 pi sigma^2)

(REML; drop ``log|R_X|^2`` and use n for ML), and ``V(theta, sigma) = sigma^2 (R_X'R_X)^{-1}``.
Both use lmerTest's parameters ``(theta, sigma)``; nu does not depend on that choice.  A
q-dimensional hypothesis ``L beta = 0`` is split into q independent t statistics along the
eigenvectors of ``L V L'``, each with its nu_m, and the F statistic gets
``2E / (E - q)`` denominator degrees of freedom, ``E = sum nu_m / (nu_m - 2)`` (lmerTest's
``contestMD``; Fai and Cornelius 1996).

**How the derivatives are computed.**  The derivatives with respect to sigma are analytic.
Those with respect to theta are central finite differences of the blocked Cholesky factor
(:meth:`lmmlib.pls.PenalizedLeastSquares.factorize`), improved by one Richardson
extrapolation: with ``D(h)`` a central difference of step h, ``(4 D(h/2) - D(h)) / 3`` has an
error of order ``h^4``.  The steps are ``h = 2e-3 max(|theta_i|, 0.1)`` on the optimiser's
scale of theta (columns scaled to a root mean square near 1, :mod:`lmmlib.pls`); the same
evaluations give the Hessian and the Jacobian of V.  On an unbalanced sleepstudy subset they
agree with the analytic REML derivatives of the dense-V formulation to 1e-6 relative
(``tests/test_inference.py``), far inside the 1e-3 asked of the df.  A model with k theta
parameters costs ``4 k^2 + 1`` factorizations (37 for sleepstudy's slopes model).

>>> from lmmlib import datasets, lmer
>>> fit = lmer("Reaction ~ Days + (Days | Subject)", datasets.sleepstudy())
>>> sat = Satterthwaite(fit)
>>> [round(float(d), 3) for d in sat.df_coefficients()]
[17.0, 17.0]
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats

from lmmlib.errors import ConvergenceWarning

__all__ = ["Satterthwaite", "satterthwaite_ddf_F", "EIGEN_TOL"]

#: eigenvalues of H below this (in absolute value) are treated as 0, as lmerTest's ``tol``
EIGEN_TOL = 1e-8
#: relative finite-difference step for theta on the optimiser's scale
STEP = 2e-3


class Satterthwaite:
    """Cov(tau_hat) and the Jacobian of V(tau) at a fit's estimates, and the df they give.

    Parameters
    ----------
    fit : lmmlib.lmm.LinearMixedModel
        A fitted model (REML or ML; the criterion differentiated is the fit's).

    Attributes
    ----------
    hessian : array (k+1, k+1)
        Hessian of the deviance (or REML criterion) in ``tau = (theta, sigma)``.
    vcov_varpar : array (k+1, k+1)
        ``A = 2 H^+``, the Moore-Penrose inverse over eigenvalues above ``EIGEN_TOL`` (lmerTest).
    jacobian : array (k+1, p, p)
        ``dV/dtau_i`` for each variance parameter.
    vcov : array (p, p)
        ``V`` at the estimates (the fit's ``vcov``).
    """

    def __init__(self, fit):
        self.fit = fit
        pls = fit.pls
        scale = pls.theta_scale
        theta_s = fit.theta * scale
        sigma = fit.sigma
        k = len(theta_s)
        n, p = fit.nobs, fit.p
        dof = n - p if fit.reml else n

        def parts(ts):
            """(log|L|^2 + [log|R_X|^2], r^2, (R_X'R_X)^{-1}) at theta = ts / scale."""
            f = pls.factorize(ts / scale)
            RX_inv = np.linalg.inv(f.RX)
            logdet = f.logdet_L + (f.logdet_RX if fit.reml else 0.0)
            return logdet, f.r2, RX_inv @ RX_inv.T

        base_logdet, base_r2, U = parts(theta_s)
        steps = STEP * np.maximum(np.abs(theta_s), 0.1)
        grad_r2 = np.zeros(k)
        hess_f = np.zeros((k, k))  # Hessian in theta of f = logdet + r^2 / sigma^2
        jac_U = np.zeros((k, p, p))

        def f_of(logdet, r2):
            return logdet + r2 / sigma**2

        f0 = f_of(base_logdet, base_r2)
        estimates = {}
        for factor in (1.0, 0.5):
            h = steps * factor
            g_r2 = np.zeros(k)
            H = np.zeros((k, k))
            J = np.zeros((k, p, p))
            plus, minus = [], []
            for i in range(k):
                e = np.zeros(k)
                e[i] = h[i]
                plus.append(parts(theta_s + e))
                minus.append(parts(theta_s - e))
                g_r2[i] = (plus[i][1] - minus[i][1]) / (2 * h[i])
                J[i] = (plus[i][2] - minus[i][2]) / (2 * h[i])
                H[i, i] = (f_of(*plus[i][:2]) - 2 * f0 + f_of(*minus[i][:2])) / h[i] ** 2
            for i in range(k):
                for j in range(i):
                    vals = []
                    for si, sj in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
                        e = np.zeros(k)
                        e[i], e[j] = si * h[i], sj * h[j]
                        vals.append(f_of(*parts(theta_s + e)[:2]))
                    H[i, j] = H[j, i] = (vals[0] - vals[1] - vals[2] + vals[3]) / (4 * h[i] * h[j])
            estimates[factor] = (g_r2, H, J)
        for out, index in ((grad_r2, 0), (hess_f, 1), (jac_U, 2)):
            out[...] = (4 * estimates[0.5][index] - estimates[1.0][index]) / 3
        # back to theta in the units of the data: d/dtheta = scale * d/dtheta_s
        grad_r2 *= scale
        hess_f *= np.outer(scale, scale)
        jac_U *= scale[:, None, None]

        H = np.zeros((k + 1, k + 1))
        H[:k, :k] = hess_f
        H[:k, k] = H[k, :k] = -2.0 / sigma**3 * grad_r2
        H[k, k] = 6.0 * base_r2 / sigma**4 - 2.0 * dof / sigma**2
        self.hessian = H
        values, vectors = np.linalg.eigh(H)
        if np.any(values < -EIGEN_TOL):
            warnings.warn(
                f"the Hessian of the {'REML criterion' if fit.reml else 'deviance'} in "
                f"(theta, sigma) has {int(np.sum(values < -EIGEN_TOL))} negative eigenvalue(s): "
                "the fit may not be at a minimum; Satterthwaite df are unreliable",
                ConvergenceWarning, stacklevel=2,
            )
        positive = values > EIGEN_TOL
        self.vcov_varpar = 2.0 * (vectors[:, positive] / values[positive]) @ vectors[:, positive].T
        self.vcov = sigma**2 * U
        self.jacobian = np.concatenate([sigma**2 * jac_U, (2.0 * sigma * U)[None]], axis=0)

    # ------------------------------------------------------------------ one contrast
    def df(self, l) -> float:
        """``nu = 2 (l'V l)^2 / (g' A g)`` for one contrast vector ``l`` (length p)."""
        l = np.asarray(l, dtype=float)
        var = float(l @ self.vcov @ l)
        g = np.einsum("a,iab,b->i", l, self.jacobian, l)
        return 2.0 * var**2 / float(g @ self.vcov_varpar @ g)

    def df_coefficients(self) -> np.ndarray:
        """nu for each fixed effect (the rows of the identity)."""
        return np.array([self.df(e) for e in np.eye(self.vcov.shape[0])])

    # ------------------------------------------------------------------ several
    def f_test(self, L, beta) -> dict:
        """F test of ``L beta = 0`` (rows of L the contrasts), lmerTest's ``contestMD``.

        ``F = sum_m t_m^2 / q`` with ``t_m = p_m' L beta / sqrt(d_m)``, ``(d_m, p_m)`` the
        eigenpairs of ``L V L'`` (those above ``1e-8 d_max``, q of them); denominator df from
        the q Satterthwaite nu_m by :func:`satterthwaite_ddf_F`.  Returns ``{"F", "NumDF",
        "DenDF", "p"}``.
        """
        L = np.atleast_2d(np.asarray(L, dtype=float))
        VL = L @ self.vcov @ L.T
        d, P = np.linalg.eigh(VL)
        order = np.argsort(d)[::-1]
        d, P = d[order], P[:, order]
        keep = d > max(np.finfo(float).eps ** 0.5 * d[0], 0.0)
        d, P = d[keep], P[:, keep]
        PtL = P.T @ L
        q = len(d)
        t2 = (PtL @ np.asarray(beta, dtype=float)) ** 2 / d
        F = float(np.sum(t2) / q)
        nu = np.array([self.df(row) for row in PtL])
        ddf = satterthwaite_ddf_F(nu)
        return {"F": F, "NumDF": q, "DenDF": ddf, "p": float(stats.f.sf(F, q, ddf))}


def satterthwaite_ddf_F(nu) -> float:
    """Denominator df of an F statistic that averages q independent t^2 with df ``nu``.

    ``E = sum nu_m / (nu_m - 2)``; ``ddf = 2E / (E - q)``, or 2 if some nu_m <= 2; the mean of
    nu when they are all equal (lmerTest's ``get_Fstat_ddf``; Fai and Cornelius 1996).

    >>> satterthwaite_ddf_F([10.0]), satterthwaite_ddf_F([10.0, 10.0])
    (10.0, 10.0)
    >>> round(satterthwaite_ddf_F([10.0, 20.0]), 4)
    13.0769
    """
    nu = np.asarray(nu, dtype=float)
    if len(nu) == 1:
        return float(nu[0])
    if np.all(np.abs(np.diff(nu)) < 1e-8):
        return float(np.mean(nu))
    if np.any(nu <= 2):
        return 2.0
    E = float(np.sum(nu / (nu - 2)))
    return 2 * E / (E - len(nu))
