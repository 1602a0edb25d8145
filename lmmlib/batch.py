"""Many refits of a one-term linear mixed model at once: the bootstrap's fast path.

A bootstrap refits the same model hundreds of times.  When the model has a single
random-effects term ``(x_1 + ... + x_q | g)`` (sleepstudy's ``(Days | Subject)``), every
refit is a small problem: with ``A_j = Z_j'Z_j`` (q x q), ``Z_j'[X y]`` and ``[X y]'[X y]``
for each level j of g, the profiled criterion of :mod:`lmmlib.pls` at theta is

    M_j = T'A_j T + I = L_j L_j',           C_j = L_j^{-1} T' Z_j'[X y],
    S = [X y]'[X y] - sum_j C_j'C_j = R R',  R = [[R_X', 0], [l_yX', r]],
    log|L|^2 = 2 sum_j log det L_j,  log|R_X|^2 = 2 log det R_X,  r^2 = r * r,

(Bates, Maechler, Bolker and Walker 2015, JSS 67(1), section 3: the blocked Cholesky factor
of ``[Lambda'Z'Z Lambda + I, Lambda'Z'[X y]; ...]`` when Lambda is block diagonal), then
``d(theta)`` or ``d_R(theta)`` from :func:`lmmlib.pls.profiled_deviance` or
:func:`lmmlib.pls.profiled_reml_criterion`.  Everything here is an array with one leading
axis per replicate, so numpy evaluates the criterion of a thousand replicates in one call.

:class:`BatchedProblems` holds those cross-products for B replicates: new responses for the
same rows (parametric and residual bootstrap), weighted rows (the subsample scheme) or whole
levels drawn with replacement (the cluster bootstrap; a level drawn twice is two levels).
:meth:`BatchedProblems.minimize` runs Newton's method on all replicates in lockstep from the
original fit's theta, with the gradient and Hessian of each by finite differences evaluated
in the same batched call.  The search is unconstrained (the criterion depends on theta only
through ``T T'``), so a boundary fit (a variance at 0, a correlation at +-1) is an ordinary
minimum and is found as such.  A replicate that does not converge to a point with a positive
definite Hessian is flagged, and the caller refits it with the engine
(:meth:`lmmlib.lmm.LinearMixedModel.fit`); so the fast path never returns an estimate that
``refit`` would not.

Columns are scaled by powers of two as in :mod:`lmmlib.pls` (``pls.X_scaled``, the scaled
term, ``pls.theta_scale``), and y is replaced by its least-squares residual before its
cross-products are formed; the results are in the units of the data.

>>> from lmmlib import datasets, lmer
>>> fit = lmer("Reaction ~ Days + (Days | Subject)", datasets.sleepstudy())
>>> problems = BatchedProblems.responses(fit, fit.simulate(3, seed=1).to_numpy())
>>> out = problems.minimize(fit)
>>> out["ok"].tolist()
[True, True, True]
>>> bool(abs(out["beta"][0, 0] - fit.refit(fit.simulate(3, seed=1)["sim_1"]).fixef.iloc[0])
...      < 1e-6)
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from lmmlib.pls import LOG_2PI
from lmmlib.remat import theta_indices

__all__ = ["BatchedProblems", "supports"]

#: Newton stops when the predicted further decrease ``g'H^{-1}g / 2`` is below this (the
#: engine accepts 1e-8; a tighter test costs one more iteration at most)
DECREMENT_TOL = 1e-10
#: finite-difference step for theta on the scaled axis (where theta is of order 1)
STEP = 1e-4
#: lme4's isSingular tolerance (as lmmlib.lmm.SINGULAR_TOL)
SINGULAR_TOL = 1e-4
MAX_ITER = 30


def supports(fit) -> bool:
    """Whether the batched path covers this fit: exactly one random-effects term."""
    return len(fit.terms) == 1


@dataclass
class BatchedProblems:
    """Cross-products of B replicate data sets of one one-term model (scaled columns).

    Leading axis: replicates (or 1 when shared by all).  ``A`` (B|1, J, q, q) the blocks
    ``Z_j'Z_j``; ``ZX`` (B|1, J, q, p) and ``Zy`` (B, J, q) the blocks of ``Z_j'[X y]``;
    ``XYXY`` (B, p+1, p+1); ``nobs`` (B,); ``gamma`` (B, p) the least-squares coefficients
    removed from y (scaled columns).
    """

    A: np.ndarray
    ZX: np.ndarray
    Zy: np.ndarray
    XYXY: np.ndarray
    nobs: np.ndarray
    gamma: np.ndarray
    q: int
    p: int
    log_x_scale: float = 0.0

    def __post_init__(self):
        # entry by entry, each a contiguous (B|1, J) array (see evaluate)
        self._A = [[np.ascontiguousarray(self.A[:, :, r, c]) for c in range(self.q)]
                   for r in range(self.q)]
        self._ZXY = [[np.ascontiguousarray(self.ZX[:, :, r, c]) for c in range(self.p)]
                     + [np.ascontiguousarray(self.Zy[:, :, r])] for r in range(self.q)]

    # ------------------------------------------------------------------ construction
    @classmethod
    def responses(cls, fit, Y: np.ndarray) -> BatchedProblems:
        """B new responses for the fit's rows: ``Y`` (nobs, B), one column per replicate."""
        pls, term = fit.pls, fit.pls.scaled_terms[0]
        Xs = pls.X_scaled
        Y = np.asarray(Y, dtype=float)
        gamma = np.linalg.lstsq(Xs, Y, rcond=None)[0]  # (p, B)
        R = Y - Xs @ gamma
        E = _indicator(term.codes, len(term.levels))  # (J, n)
        B = Y.shape[1]
        J, q, p = len(term.levels), term.X.shape[1], Xs.shape[1]
        Zy = np.stack([E @ (term.X[:, [a]] * R) for a in range(q)], axis=-1)  # (J, B, q)
        ZX = np.stack([E @ (term.X[:, [a]] * Xs) for a in range(q)], axis=1)  # (J, q, p)
        XYXY = np.empty((B, p + 1, p + 1))
        XYXY[:, :p, :p] = Xs.T @ Xs
        XYXY[:, :p, p] = XYXY[:, p, :p] = (Xs.T @ R).T
        XYXY[:, p, p] = np.einsum("ib,ib->b", R, R)
        A = pls.A11[None]
        return cls(A, ZX[None], Zy.transpose(1, 0, 2), XYXY, np.full(B, fit.nobs, dtype=float),
                   gamma.T, q, p,
                   _log_scale(pls))

    @classmethod
    def row_weights(cls, fit, W: np.ndarray, Y: np.ndarray | None = None) -> BatchedProblems:
        """Rows drawn with replacement: ``W`` (B, nobs), how often each row is drawn, from the
        data ``Y`` (nobs, B; default the fit's response for every replicate).

        A row drawn twice counts twice in its own level (as when the drawn rows are fitted
        as a data set); a level with no rows adds nothing to the criterion.
        """
        pls, term = fit.pls, fit.pls.scaled_terms[0]
        Xs, Z, codes = pls.X_scaled, term.X, term.codes
        W = np.asarray(W, dtype=float)
        B, n = W.shape
        gamma, R = _residuals(Xs, fit.design.y, Y, B)
        J, q, p = len(term.levels), Z.shape[1], Xs.shape[1]
        E = _indicator(codes, J)

        def per_level(values):  # (n, k) row values -> (B, J, k) weighted sums over each level
            k = values.shape[1]
            spread = sp.csr_matrix(
                (values.ravel(), (np.repeat(np.arange(n), k),
                                  (codes[:, None] * k + np.arange(k)).ravel())),
                shape=(n, J * k))
            return np.asarray((spread.T @ W.T).T).reshape(B, J, k)

        A = per_level(np.einsum("ia,ib->iab", Z, Z).reshape(n, -1)).reshape(B, J, q, q)
        ZX = per_level(np.einsum("ia,ib->iab", Z, Xs).reshape(n, -1)).reshape(B, J, q, p)
        WR = W * R.T  # (B, n)
        Zy = np.stack([np.asarray((E @ (WR * Z[:, a]).T).T) for a in range(q)], axis=-1)
        XYXY = np.empty((B, p + 1, p + 1))
        XYXY[:, :p, :p] = (W @ np.einsum("ia,ib->iab", Xs, Xs).reshape(n, -1)).reshape(B, p, p)
        XYXY[:, :p, p] = XYXY[:, p, :p] = WR @ Xs
        XYXY[:, p, p] = (WR * R.T).sum(axis=1)
        return cls(A, ZX, Zy, XYXY, W.sum(axis=1), gamma, q, p, _log_scale(pls))

    @classmethod
    def levels(cls, fit, draws: np.ndarray, Y: np.ndarray | None = None) -> BatchedProblems:
        """Whole levels drawn with replacement: ``draws`` (B, G) level codes per replicate,
        from the data ``Y`` (nobs, B; default the fit's response for every replicate).
        Each drawn level is a level of its own, also when it is drawn more than once."""
        pls, term = fit.pls, fit.pls.scaled_terms[0]
        Xs, Z = pls.X_scaled, term.X
        draws = np.asarray(draws)
        B = len(draws)
        gamma, R = _residuals(Xs, fit.design.y, Y, B)
        J, q, p = len(term.levels), Z.shape[1], Xs.shape[1]
        E = _indicator(term.codes, J)
        n_j = np.asarray(E.sum(axis=1)).ravel()
        ZX = np.stack([E @ (Z[:, [a]] * Xs) for a in range(q)], axis=1)  # (J, q, p)
        XX_j = (E @ np.einsum("ia,ib->iab", Xs, Xs).reshape(len(Xs), -1)).reshape(J, p, p)
        cols = np.arange(B)[:, None]

        def drawn(per_level):  # (J, B) sums of each level for each replicate's data
            return per_level[draws, cols]  # (B, G)

        Zy = np.stack([drawn(E @ (Z[:, [a]] * R)) for a in range(q)], axis=-1)
        XYXY = np.empty((B, p + 1, p + 1))
        XYXY[:, :p, :p] = XX_j[draws].sum(axis=1)
        for c in range(p):
            XYXY[:, c, p] = XYXY[:, p, c] = drawn(E @ (Xs[:, [c]] * R)).sum(axis=1)
        XYXY[:, p, p] = drawn(E @ (R * R)).sum(axis=1)
        return cls(pls.A11[draws], ZX[draws], Zy, XYXY, n_j[draws].sum(axis=1), gamma, q, p,
                   _log_scale(pls))

    # ------------------------------------------------------------------ the criterion
    def evaluate(self, theta_s: np.ndarray, rep: np.ndarray, reml: bool, details=False):
        """The criterion at ``theta_s`` (P, k: theta on the scaled axis) for replicates
        ``rep`` (P,); inf where a factor is not positive definite.  With ``details``, also
        ``(beta_tilde, r2)`` (beta of the scaled columns, less gamma).

        The q x q algebra of every level is written out entry by entry on arrays of shape
        (P, J): numpy is slow on stacks of tiny matrices and fast on long vectors.
        """
        q, p = self.q, self.p
        rows, cols = theta_indices(q)
        T = [[None] * q for _ in range(q)]  # T[r][c], (P, 1); None above the diagonal
        for i, (r, c) in enumerate(zip(rows, cols)):
            T[r][c] = theta_s[:, i, None]

        def take(x):  # the rows of replicates rep, or the one row that all share
            return x if len(x) == 1 else x[rep]

        A = [[take(x) for x in row] for row in self._A]
        ZXY = [[take(x) for x in row] for row in self._ZXY]
        # T'A T + I and T'Z'[X y], entry by entry
        AT = [[sum(A[r][s] * T[s][b] for s in range(b, q)) for b in range(q)]
              for r in range(q)]
        M = [[sum(T[r][a] * AT[r][b] for r in range(a, q)) + (a == b) for b in range(a + 1)]
             for a in range(q)]
        G = [[sum(T[r][a] * ZXY[r][c] for r in range(a, q)) for c in range(p + 1)]
             for a in range(q)]
        # Cholesky factor L of M (lower) and C = L^{-1} G, by substitution
        L = [[None] * q for _ in range(q)]
        for a in range(q):
            for b in range(a + 1):
                v = M[a][b] - sum(L[a][r] * L[b][r] for r in range(b))
                L[a][b] = np.sqrt(v) if a == b else v / L[b][b]
        C = [[None] * (p + 1) for _ in range(q)]
        for a in range(q):
            for c in range(p + 1):
                C[a][c] = (G[a][c] - sum(L[a][r] * C[r][c] for r in range(a))) / L[a][a]
        logdet_L = 2.0 * sum(np.log(L[a][a]).sum(axis=1) for a in range(q))
        S = self.XYXY[rep].copy()
        for c in range(p + 1):
            for d in range(c + 1):
                S[:, c, d] -= sum((C[a][c] * C[a][d]).sum(axis=1) for a in range(q))
                S[:, d, c] = S[:, c, d]
        R, good = _cholesky(S)
        n = self.nobs[rep]
        diag = np.diagonal(R, axis1=1, axis2=2)
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = diag[:, p] ** 2
            if reml:
                logdet_RX = 2.0 * (np.log(diag[:, :p]).sum(axis=1) + self.log_x_scale)
                value = logdet_L + logdet_RX + (n - p) * (1.0 + LOG_2PI + np.log(r2 / (n - p)))
            else:
                value = logdet_L + n * (1.0 + LOG_2PI + np.log(r2 / n))
        value = np.where(good & np.isfinite(value), value, np.inf)
        if not details:
            return value
        # R_X' beta_tilde = l_yX: the upper-triangular system of R_X (R's leading block is R_X')
        beta = np.linalg.solve(np.swapaxes(R[:, :p, :p], 1, 2), R[:, p, :p, None])[..., 0]
        return value, beta, r2

    # ------------------------------------------------------------------ Newton in lockstep
    def minimize(self, fit, start: np.ndarray | None = None) -> dict:
        """Minimise each replicate's criterion by Newton's method from ``fit.theta`` (or from
        ``start``, (B, k), theta in the units of the data, one row per replicate).

        Per iteration and replicate, one batched call evaluates the criterion at theta and at
        the ``2k + k(k-1)/2`` points of the finite-difference gradient (central) and Hessian;
        the step ``-H^{-1}g`` is halved until the criterion decreases (Armijo).  A replicate
        stops when the predicted decrease ``g'H^{-1}g/2`` is below ``DECREMENT_TOL``.

        The search is unconstrained: the criterion depends on theta only through ``T T'``,
        which is the same for T and for T with a column negated, so a negative diagonal
        element is as good as its absolute value, and a variance at 0 (a singular fit) is an
        interior minimum in theta's space.  At the end, columns with a negative diagonal
        element are negated (lme4's convention: diagonal >= 0).  A replicate is converged when
        its Hessian is positive definite and the decrement small; the others (a flat ridge, as
        when an SD is 0 and the correlation undefined) go to the engine.

        Returns a dict of arrays, one row per replicate: ``ok`` (converged; the others are for
        the engine), ``theta`` (units of the data), ``beta``, ``sigma``, ``criterion``,
        ``singular`` (lme4's rule, as :attr:`lmmlib.lmm.LinearMixedModel.singular`),
        ``iterations``.
        """
        reml, scale = fit.reml, fit.pls.theta_scale
        k, B = len(fit.theta), len(self.XYXY)
        theta = np.tile(fit.theta, (B, 1)) if start is None else np.array(start, dtype=float)
        theta = theta * scale
        diagonal = fit.layout.lower == 0
        active = np.ones(B, dtype=bool)
        ok = np.zeros(B, dtype=bool)
        iterations = np.zeros(B, dtype=int)
        offsets = _offsets(k)  # (P, k) in units of STEP
        for _ in range(MAX_ITER):
            idx = np.flatnonzero(active)
            if not len(idx):
                break
            iterations[idx] += 1
            points = theta[idx, None, :] + STEP * offsets[None]  # (m, P, k)
            f = self.evaluate(points.reshape(-1, k), np.repeat(idx, len(offsets)), reml)
            g, H, f0 = _derivatives(f.reshape(len(idx), -1), k)
            bad = ~np.isfinite(f).reshape(len(idx), -1).all(axis=1)
            step, decrement, pd = _newton_step(g, H)
            done = pd & ~bad & (decrement < DECREMENT_TOL)
            ok[idx[done]] = True
            failed = bad
            move = ~done & ~failed
            active[idx[done | failed]] = False
            m_idx, m_step, m_f0, m_dec = idx[move], step[move], f0[move], decrement[move]
            t = np.ones(len(m_idx))
            pending = np.ones(len(m_idx), dtype=bool)
            for _ in range(12):
                if not pending.any():
                    break
                j = np.flatnonzero(pending)
                trial = theta[m_idx[j]] + t[j, None] * m_step[j]
                f_trial = self.evaluate(trial, m_idx[j], reml)
                better = f_trial < m_f0[j] - 1e-4 * t[j] * 2 * m_dec[j]
                theta[m_idx[j[better]]] = trial[better]
                pending[j[better]] = False
                t[j[~better]] *= 0.5
            active[m_idx[pending]] = False  # no decrease along the Newton direction
        theta = _positive_diagonal(theta, len(fit.terms[0].names))
        value, beta_tilde, r2 = self.evaluate(theta, np.arange(B), reml, details=True)
        theta = theta / scale
        factor = _singularity_factor(fit)
        singular = (diagonal[None] & (theta * factor < SINGULAR_TOL)).any(axis=1)
        denom = self.nobs - self.p if reml else self.nobs
        x_scale = fit.pls.x_scale
        return {
            "ok": ok & np.isfinite(value),
            "theta": theta,
            "singular": singular,
            "beta": (beta_tilde + self.gamma) / x_scale,
            "sigma": np.sqrt(r2 / denom),
            "criterion": value,
            "iterations": iterations,
        }


def _positive_diagonal(theta: np.ndarray, q: int) -> np.ndarray:
    """theta with every template column whose diagonal element is negative negated."""
    rows, cols = theta_indices(q)
    out = theta.copy()
    for c in range(q):
        negative = theta[:, np.flatnonzero((rows == c) & (cols == c))[0]] < 0
        out[np.ix_(negative, cols == c)] *= -1
    return out


def _singularity_factor(fit) -> np.ndarray:
    """Per theta entry, ``m / clip(m, 1e-3, 1e3)`` for a term column of root mean square m:
    the engine's adjustment of lme4's isSingular rule for badly scaled predictors (see
    :attr:`lmmlib.lmm.LinearMixedModel.singular`); 1 for ordinary scales."""
    factors = []
    for term in fit.terms:
        rms = np.sqrt(np.mean(np.asarray(term.X, dtype=float) ** 2, axis=0))
        clipped = np.clip(rms, 1e-3, 1e3)
        factors.append(np.where(rms > 0, rms / np.where(rms > 0, clipped, 1.0), 1.0))
    return fit.layout.row_values(factors)


def _residuals(Xs: np.ndarray, y: np.ndarray, Y: np.ndarray | None, B: int):
    """The least-squares coefficients (B, p) of each replicate's data on the scaled X, and the
    residuals (n, B): y is replaced by them before cross-products (see lmmlib.pls)."""
    if Y is None:
        gamma = np.linalg.lstsq(Xs, y, rcond=None)[0]
        r = y - Xs @ gamma
        return np.tile(gamma, (B, 1)), np.repeat(r[:, None], B, axis=1)
    Y = np.asarray(Y, dtype=float)
    if Y.shape != (len(Xs), B):
        raise ValueError(f"Y must have shape ({len(Xs)}, {B}), got {Y.shape}")
    gamma = np.linalg.lstsq(Xs, Y, rcond=None)[0]
    return gamma.T, Y - Xs @ gamma


def _log_scale(pls) -> float:
    """``sum(log s)`` of X's column divisors: ``log|R_X|^2`` gains twice this (lmmlib.pls)."""
    return float(np.log(pls.x_scale).sum())


def _indicator(codes: np.ndarray, levels: int) -> sp.csr_matrix:
    """The sparse J x n indicator matrix of the levels (``Z`` of a random intercept, transposed)."""
    n = len(codes)
    return sp.csr_matrix((np.ones(n), (codes, np.arange(n))), shape=(levels, n))


def _cholesky(S: np.ndarray):
    """Batched lower Cholesky factors and a mask of the matrices that are positive definite
    (the others get an identity factor and are reported as such)."""
    try:
        return np.linalg.cholesky(S), np.ones(len(S), dtype=bool)
    except np.linalg.LinAlgError:
        out = np.empty_like(S)
        good = np.ones(len(S), dtype=bool)
        for i, Si in enumerate(S):
            try:
                out[i] = np.linalg.cholesky(Si)
            except np.linalg.LinAlgError:
                out[i], good[i] = np.eye(len(Si)), False
        return out, good


def _offsets(k: int) -> np.ndarray:
    """Points of the finite differences, in units of the step: 0, +-e_i, e_i + e_j (i < j)."""
    eye = np.eye(k)
    pairs = [eye[i] + eye[j] for i in range(k) for j in range(i + 1, k)]
    return np.vstack([np.zeros(k), eye, -eye, *pairs]) if pairs else np.vstack(
        [np.zeros(k), eye, -eye])


def _derivatives(f: np.ndarray, k: int):
    """Gradient (central differences) and Hessian from the values at :func:`_offsets`:
    ``H_ii = (f(+e_i) - 2 f(0) + f(-e_i)) / h^2``,
    ``H_ij = (f(e_i + e_j) - f(e_i) - f(e_j) + f(0)) / h^2``."""
    f0, plus, minus = f[:, 0], f[:, 1 : k + 1], f[:, k + 1 : 2 * k + 1]
    g = (plus - minus) / (2 * STEP)
    H = np.zeros((len(f), k, k))
    H[:, np.arange(k), np.arange(k)] = (plus - 2 * f0[:, None] + minus) / STEP**2
    column = 2 * k + 1
    for i in range(k):
        for j in range(i + 1, k):
            H[:, i, j] = H[:, j, i] = (f[:, column] - plus[:, i] - plus[:, j] + f0) / STEP**2
            column += 1
    return g, H, f0


def _newton_step(g: np.ndarray, H: np.ndarray):
    """The Newton step ``-H^{-1} g``, the decrement ``g'H^{-1}g / 2`` and whether H is
    positive definite.  Where it is not (far from a minimum), H's eigenvalues are replaced by
    their absolute values (at least 1e-3 of the largest), which keeps the step downhill."""
    finite = np.isfinite(H).all(axis=(1, 2)) & np.isfinite(g).all(axis=1)
    H = np.where(finite[:, None, None], H, np.eye(H.shape[1]))
    g = np.where(finite[:, None], g, 0.0)
    values, vectors = np.linalg.eigh(H)
    pd = finite & (values > 0).all(axis=1)
    size = np.abs(values)
    values = np.maximum(size, 1e-3 * size.max(axis=1, keepdims=True) + 1e-12)
    coords = np.einsum("bji,bj->bi", vectors, g) / values
    direction = np.einsum("bij,bj->bi", vectors, coords)
    decrement = 0.5 * np.einsum("bi,bi->b", g, direction)
    return -direction, decrement, pd
