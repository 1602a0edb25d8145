"""GREML (``lmmlib.greml``): heritability from a relationship matrix, by (RE)ML with the spectral rotation.

The model (Yang et al. 2010, 2011; GCTA) is

    y = X beta + g + e,   g ~ N(0, sigma_g^2 K),   e ~ N(0, sigma_e^2 I),

so that ``V = Var(y) = sigma_g^2 K + sigma_e^2 I``, and the (SNP) heritability is
``h2 = sigma_g^2 / (sigma_g^2 + sigma_e^2)``. Write ``sigma^2 = sigma_g^2 + sigma_e^2``; then
``V = sigma^2 (h2 K + (1 - h2) I)``.

The spectral trick (Kang et al. 2008, EMMA; Lippert et al. 2011, FaST-LMM, added the low-rank
case): with ``K = U diag(s) U'`` computed once,
the rotated data ``U'y`` and ``U'X`` have the *diagonal* covariance
``sigma^2 diag(h2 s_i + 1 - h2)``. After the rotation (O(n^2) per response, O(n^3) once for
the eigendecomposition) every evaluation of the likelihood costs O(n p^2): it is a weighted
least-squares fit. ``sigma^2`` and ``beta`` are profiled out in closed form, leaving a function
of ``h2`` alone on ``[0, 1)``.

Relation to ``lmmlib.lmer``: this is the linear mixed model of chapter 3 with one random
effect ``g = Z u``, ``u ~ N(0, sigma_g^2 I)``, where ``Z`` is any square root of ``K``
(``Z Z' = K``). The criteria are lme4's: the REML criterion ``-2 log L_R`` without the constant
``log|X'X|``, and the deviance ``-2 log L``. For ``K = Z Z'`` with ``Z`` the indicator matrix of
a grouping factor, ``greml`` and ``lmer("y ~ ... + (1 | group)")`` fit the same model and give
the same estimates and criterion (``tests/test_greml.py`` checks it on sleepstudy).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import linalg, optimize, stats

import warnings

from lmmlib.errors import LmmInputError, SingularFitWarning

__all__ = ["greml", "GremlFit", "RelationshipEigen", "eigen_relationship", "H2_MAX"]

LOG_2PI = np.log(2 * np.pi)
#: upper end of the search for h2: at h2 = 1 the residual variance is 0 and V can be singular
H2_MAX = 1 - 1e-8
#: relative tolerances of the checks of K: asymmetry and negative eigenvalues, relative to the
#: largest absolute element and eigenvalue of K
SYMMETRY_TOL = 1e-8
PSD_TOL = 1e-8


@dataclass(frozen=True)
class RelationshipEigen:
    """The eigendecomposition ``K = U diag(s) U'`` of a checked relationship matrix.

    ``values`` (s, ascending, tiny negative rounding errors set to 0) and ``vectors`` (U).
    Compute it once with :func:`eigen_relationship` and pass it to :func:`greml` in place of
    ``K`` to fit many phenotypes on the same individuals.
    """

    values: np.ndarray
    vectors: np.ndarray

    @property
    def n(self) -> int:
        return self.values.size

    def rotate(self, a) -> np.ndarray:
        """``U' a``: data in the coordinates in which ``V`` is diagonal."""
        return self.vectors.T @ a


def _check_matrix(K) -> np.ndarray:
    try:
        K = np.asarray(K, dtype=float)
    except (TypeError, ValueError) as err:
        raise LmmInputError(f"K must be a numeric matrix: {err}") from None
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise LmmInputError(f"K must be a square matrix, got shape {K.shape}")
    if K.shape[0] < 2:
        raise LmmInputError("K must be at least 2 x 2")
    bad = ~np.isfinite(K)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise LmmInputError(f"K has {int(bad.sum())} non-finite entries (NaN or inf), the "
                            f"first at row {i}, column {j}")
    scale = np.abs(K).max()
    asym = np.abs(K - K.T).max()
    if asym > SYMMETRY_TOL * max(scale, 1e-300):
        i, j = np.unravel_index(np.abs(K - K.T).argmax(), K.shape)
        raise LmmInputError(f"K is not symmetric: |K[{i},{j}] - K[{j},{i}]| = {asym:.3g} "
                            f"(largest |K| is {scale:.3g})")
    return (K + K.T) / 2


def eigen_relationship(K) -> RelationshipEigen:
    """Check ``K`` (square, finite, symmetric, positive semidefinite) and decompose it,
    ``K = U diag(s) U'`` (LAPACK's symmetric eigensolver, O(n^3): the one expensive step).

    A negative eigenvalue below ``-1e-8`` times the largest is an error that says how negative
    it is; smaller ones are rounding errors and are set to 0. GRMs from other software (GCTA
    with missing genotypes, for instance) can be slightly indefinite; GCTA then "bends" them
    (raises the negative eigenvalues); do that, or recompute the GRM, before calling this.

    >>> e = eigen_relationship([[1.0, 0.5], [0.5, 1.0]])
    >>> e.values.round(6).tolist()
    [0.5, 1.5]
    """
    if isinstance(K, RelationshipEigen):
        return K
    K = _check_matrix(K)
    s, U = linalg.eigh(K, driver="evd", check_finite=False)   # divide and conquer (syevd)
    top = max(abs(s[-1]), abs(s[0]))
    if s[0] < -PSD_TOL * top:
        n_neg = int(np.sum(s < -PSD_TOL * top))
        raise LmmInputError(f"K is not positive semidefinite: its smallest eigenvalue is "
                            f"{s[0]:.4g} ({n_neg} below -{PSD_TOL:g} x the largest, {top:.4g}); "
                            "a covariance matrix cannot have negative eigenvalues (a GRM from "
                            "incomplete genotypes may need to be bent first, as GCTA does)")
    if top == 0:
        raise LmmInputError("K is zero: there is no genetic covariance to estimate")
    return RelationshipEigen(np.clip(s, 0.0, None), U)


def _check_response(y, n: int) -> np.ndarray:
    y = np.asarray(y, dtype=float)
    if y.ndim != 1:
        raise LmmInputError(f"y must be a vector, got shape {y.shape}")
    if y.size != n:
        raise LmmInputError(f"y has {y.size} entries but K is {n} x {n}")
    if not np.all(np.isfinite(y)):
        raise LmmInputError(f"y has {int(np.sum(~np.isfinite(y)))} missing or non-finite "
                            "values; drop those individuals from y, X and K first")
    if np.ptp(y) == 0:
        raise LmmInputError("y is constant: there is no variance to partition")
    return y


def _check_fixed(X, n: int) -> tuple[np.ndarray, list[str]]:
    if X is None:
        return np.ones((n, 1)), ["(Intercept)"]
    names = list(map(str, X.columns)) if isinstance(X, pd.DataFrame) else None
    X = np.asarray(X, dtype=float)
    X = X.reshape(-1, 1) if X.ndim == 1 else X
    if X.ndim != 2 or X.shape[0] != n:
        raise LmmInputError(f"X must have one row per individual ({n}), got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise LmmInputError("X has missing or non-finite values")
    if np.linalg.matrix_rank(X) < X.shape[1]:
        raise LmmInputError(f"X ({X.shape[1]} columns) is not of full column rank")
    if X.shape[1] >= n:
        raise LmmInputError(f"X has {X.shape[1]} columns for {n} individuals")
    return X, names or [f"x{j}" for j in range(X.shape[1])]


@dataclass
class _Rotated:
    """U'y, U'X and s: everything an evaluation needs."""

    y: np.ndarray
    X: np.ndarray
    s: np.ndarray
    reml: bool

    def evaluate(self, h2: float) -> dict:
        """The profiled criterion at ``h2`` and the GLS quantities behind it.

        With ``d_i = h2 s_i + 1 - h2``, ``beta`` is the weighted least-squares fit of the
        rotated data with weights ``1 / d_i``, ``q = sum (y_i - x_i' beta)^2 / d_i`` and
        ``sigma^2 = q / nu`` (``nu = n - p`` for REML, ``n`` for ML). Then
        ML:   ``-2 log L   = n log(2 pi sigma^2) + sum log d_i + n``,
        REML: ``-2 log L_R = nu log(2 pi sigma^2) + sum log d_i + log|X'D^-1 X| + nu``.
        """
        n, p = self.X.shape
        d = h2 * self.s + (1 - h2)
        w = 1 / d
        XtW = self.X.T * w
        XtWX = XtW @ self.X
        chol = linalg.cho_factor(XtWX, lower=True)
        beta = linalg.cho_solve(chol, XtW @ self.y)
        r = self.y - self.X @ beta
        q = float(r @ (w * r))
        nu = n - p if self.reml else n
        sigma2 = q / nu
        crit = nu * (LOG_2PI + np.log(sigma2) + 1) + np.log(d).sum()
        if self.reml:
            crit += 2 * np.log(np.diag(chol[0])).sum()
        return {"criterion": float(crit), "beta": beta, "sigma2": sigma2, "w": w, "r": r,
                "XtWX": XtWX}

    def criterion(self, h2: float) -> float:
        return self.evaluate(h2)["criterion"]


def _information(rot: _Rotated, sigma_g2: float, sigma_e2: float) -> dict[str, np.ndarray]:
    """Observed, expected and average information of (sigma_g^2, sigma_e^2), beta profiled.

    In the rotated coordinates ``V = diag(v)``, ``v = sigma_g^2 s + sigma_e^2``, ``V_g = diag(s)``
    and ``V_e = I``. With ``P = V^-1 - V^-1 X (X'V^-1 X)^-1 X'V^-1``, ``a_k = V_k V^-1 r`` and
    ``T = P`` (REML) or ``V^-1`` (ML):
    observed ``-1/2 tr(T V_k T V_l) + a_k' P a_l``, expected ``1/2 tr(T V_k T V_l)``, and the
    average information ``1/2 a_k' P a_l``, their mean (Gilmour, Thompson and Cullis 1995;
    GCTA uses it). For ML the observed information is that of the likelihood profiled over
    beta (the Schur complement of the full one), which is where ``P`` comes in.
    """
    X, s = rot.X, rot.s
    v = sigma_g2 * s + sigma_e2
    w = 1 / v
    F = X * w[:, None]                                 # V^-1 X
    M = np.linalg.inv(X.T @ F)                         # (X'V^-1 X)^-1
    beta = M @ (F.T @ rot.y)
    e = w * (rot.y - X @ beta)                         # V^-1 r = P y
    derivs = [s, np.ones_like(s)]                      # diagonals of V_g and V_e
    a = [dk * e for dk in derivs]

    def P_times(vec):
        return w * vec - F @ (M @ (F.T @ vec))

    quad = np.array([[ak @ P_times(al) for al in a] for ak in a])
    H_diag = np.einsum("ij,jk,ik->i", F, M, F)       # diag of V^-1 X M X'V^-1
    trace = np.empty((2, 2))
    for k, dk in enumerate(derivs):
        for l, dl in enumerate(derivs):
            t = np.sum(w**2 * dk * dl)
            if rot.reml:
                Bk, Bl = F.T @ (dk[:, None] * F), F.T @ (dl[:, None] * F)
                t += -2 * np.sum(w * dk * dl * H_diag) + np.trace(M @ Bk @ M @ Bl)
            trace[k, l] = t
    return {"observed": -trace / 2 + quad, "expected": trace / 2, "ai": quad / 2}


@dataclass
class GremlFit:
    """The result of :func:`greml`.

    Attributes: ``h2``, ``sigma_g2``, ``sigma_e2``, ``se_h2`` (delta method from the
    information named by ``information``), ``vcov_components`` (2 x 2 DataFrame, inverse of
    that information), ``fixef`` and ``vcov`` (of beta, GLS at the estimates), ``criterion``
    (REML criterion or deviance, lme4's conventions), ``loglik`` (``-criterion / 2``),
    ``lrt`` (likelihood-ratio test of h2 = 0), ``n``, ``reml``, and ``eigen``, ``y_rot``,
    ``X_rot`` (the rotated data, for models of one's own, such as a Bayesian one).
    Methods: :meth:`profile`, :meth:`confint`, :meth:`summary`.
    """

    h2: float
    sigma_g2: float
    sigma_e2: float
    se_h2: float
    vcov_components: pd.DataFrame
    fixef: pd.Series
    vcov: pd.DataFrame
    criterion: float
    lrt: pd.Series
    reml: bool
    information: str
    eigen: RelationshipEigen = field(repr=False)
    y_rot: np.ndarray = field(repr=False)
    X_rot: np.ndarray = field(repr=False)
    _rot: _Rotated = field(repr=False)

    @property
    def n(self) -> int:
        return self.y_rot.size

    @property
    def loglik(self) -> float:
        return -self.criterion / 2

    def profile(self, h2) -> pd.Series:
        """The profiled criterion relative to its minimum, ``c(h2) - c(h2_hat)``, at the given
        values of h2: the likelihood-ratio statistic of each value (sigma^2 and beta profiled)."""
        h2 = np.atleast_1d(np.asarray(h2, dtype=float))
        if np.any((h2 < 0) | (h2 > 1)):
            raise LmmInputError("h2 values must lie in [0, 1]")
        values = [self._rot.criterion(min(h, H2_MAX)) - self.criterion for h in h2]
        return pd.Series(values, index=pd.Index(h2, name="h2"), name="LR")

    def confint(self, method: str = "profile", level: float = 0.95) -> pd.Series:
        """Interval for h2. ``"profile"``: ``{h2 : c(h2) - c(h2_hat) <= chi2_1(level)}``, the
        values the likelihood-ratio test does not reject, cut at [0, 1] (Venzon and Moolgavkar
        1988 compute such intervals by root finding; so does this function). ``"wald"``:
        ``h2_hat +- z se_h2``, cut at [0, 1]. Near the boundary the profile interval is the more
        trustworthy; with a 50:50 mixture at h2 = 0 the profile interval's coverage there is
        above ``level``."""
        if not 0 < level < 1:
            raise LmmInputError(f"level must lie in (0, 1), got {level}")
        if method == "wald":
            z = stats.norm.ppf(0.5 + level / 2)
            lo, hi = self.h2 - z * self.se_h2, self.h2 + z * self.se_h2
            return pd.Series([max(lo, 0.0), min(hi, 1.0)], index=["lower", "upper"], name="h2")
        if method != "profile":
            raise LmmInputError(f"method must be 'profile' or 'wald', got {method!r}")
        cut = stats.chi2.ppf(level, 1)

        def excess(h):
            return self._rot.criterion(h) - self.criterion - cut

        lo = 0.0 if excess(0.0) <= 0 else optimize.brentq(excess, 0.0, self.h2, xtol=1e-10)
        hi = 1.0 if excess(H2_MAX) <= 0 else optimize.brentq(excess, self.h2, H2_MAX,
                                                              xtol=1e-10)
        return pd.Series([lo, hi], index=["lower", "upper"], name="h2")

    def summary(self) -> pd.DataFrame:
        """Variance components and h2 with standard errors, as a table."""
        se = np.sqrt(np.diag(self.vcov_components.to_numpy()))
        return pd.DataFrame({"estimate": [self.sigma_g2, self.sigma_e2, self.h2],
                             "se": [se[0], se[1], self.se_h2]},
                            index=["sigma_g^2", "sigma_e^2", "h2"])


def greml(y, K, X=None, reml: bool = True, information: str = "ai") -> GremlFit:
    """Fit ``y = X beta + g + e``, ``g ~ N(0, sigma_g^2 K)``, ``e ~ N(0, sigma_e^2 I)`` by REML
    (default) or ML, with the spectral rotation of Kang et al. (2008) (EMMA).

    Parameters
    ----------
    y : array (n,)
    K : array (n, n) or RelationshipEigen
        The relationship matrix (a GRM from :func:`lmmlib.genetics.grm`, or any covariance
        matrix); or its eigendecomposition from :func:`eigen_relationship`, to reuse it.
    X : array or DataFrame (n, p), optional
        Fixed effects; an intercept column by default (a given X should include one).
    reml : bool
    information : {"ai", "observed", "expected"}
        The information matrix of ``(sigma_g^2, sigma_e^2)`` whose inverse gives their
        covariance: the average information of GCTA's AI-REML (default), the observed or the
        expected one. The SE of ``h2 = sigma_g^2 / (sigma_g^2 + sigma_e^2)`` is the delta
        method's: ``grad' I^-1 grad`` with ``grad = (sigma_e^2, -sigma_g^2) / sigma^4``.

    Notes
    -----
    The estimate maximises the profiled (restricted) likelihood over ``h2`` in ``[0, 1)``: a
    grid of 51 points, then Brent's method on the best grid interval, then a comparison with
    the end points. The likelihood-ratio test of ``h2 = 0`` compares with the fit at ``h2 = 0``
    (ordinary least squares); its p-value uses the 50:50 mixture of chi2_0 and chi2_1 (Self and
    Liang 1987): ``p = chi2_1.sf(LR) / 2`` for ``LR > 0`` and 1 when ``h2_hat = 0``. An
    estimate at the upper end (``sigma_e^2 = 0``) comes with a ``SingularFitWarning``; with ML
    and a singular K (a centred GRM) the likelihood can be unbounded there, one more reason to
    prefer REML.

    Relation to :func:`lmmlib.lmm.lmer`: the same linear mixed model with one random effect
    ``g = Z u``, ``u ~ N(0, sigma_g^2 I)``, ``Z Z' = K``, and lme4's criteria (``criterion``
    is lmer's ``deviance``: the REML criterion, or -2 log L for ML). With ``K = Z Z'`` for the
    indicator matrix ``Z`` of a grouping factor, ``greml(y, K, X)`` and
    ``lmer("y ~ ... + (1 | group)")`` give the same estimates; lmer cannot take a dense K,
    and greml takes only one random effect.

    >>> rng = np.random.default_rng(1)
    >>> Z = np.kron(np.eye(30), np.ones((4, 1)))       # 30 groups of 4: K = Z Z'
    >>> y = Z @ rng.normal(0, 1, 30) + rng.normal(0, 1, 120)
    >>> fit = greml(y, Z @ Z.T)
    >>> bool(0 < fit.h2 < 1), fit.summary().shape
    (True, (3, 2))
    """
    if information not in ("ai", "observed", "expected"):
        raise LmmInputError(f"information must be 'ai', 'observed' or 'expected', "
                            f"got {information!r}")
    eig = eigen_relationship(K)
    y = _check_response(y, eig.n)
    X, names = _check_fixed(X, eig.n)
    rot = _Rotated(eig.rotate(y), eig.rotate(X), eig.values, bool(reml))

    grid = np.linspace(0.0, H2_MAX, 51)
    values = np.array([rot.criterion(h) for h in grid])
    k = int(values.argmin())
    lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, grid.size - 1)]
    res = optimize.minimize_scalar(rot.criterion, bounds=(lo, hi), method="bounded",
                                   options={"xatol": 1e-10})
    candidates = [(res.fun, res.x), (values[0], 0.0), (values[-1], H2_MAX)]
    _, h2 = min(candidates)
    if h2 == H2_MAX:
        warnings.warn(
            "the (restricted) likelihood is largest at h2 -> 1, sigma_e^2 -> 0"
            + (" and, with ML, can grow without bound there: K is singular, and y - X beta can "
               "lie in its column space (a GRM centred by sample allele frequencies with an "
               "intercept in X is such a case); use REML"
               if not reml and eig.values[0] == 0 else ""),
            SingularFitWarning, stacklevel=2)
    best = rot.evaluate(h2)
    sigma2 = best["sigma2"]
    sigma_g2, sigma_e2 = h2 * sigma2, (1 - h2) * sigma2

    info = _information(rot, sigma_g2, sigma_e2)[information]
    components = ["sigma_g^2", "sigma_e^2"]
    try:
        cov = np.linalg.inv(info)
    except np.linalg.LinAlgError:
        cov = np.full((2, 2), np.nan)
    grad = np.array([sigma_e2, -sigma_g2]) / sigma2**2
    var_h2 = grad @ cov @ grad
    se_h2 = float(np.sqrt(var_h2)) if var_h2 >= 0 else np.nan

    lr = max(values[0] - best["criterion"], 0.0)
    p_value = 1.0 if h2 == 0.0 else 0.5 * stats.chi2.sf(lr, 1)
    lrt = pd.Series({"statistic": lr, "p_value": p_value}, name="LRT h2 = 0")
    vcov_beta = sigma2 * np.linalg.inv(best["XtWX"])
    return GremlFit(
        h2=float(h2), sigma_g2=float(sigma_g2), sigma_e2=float(sigma_e2), se_h2=se_h2,
        vcov_components=pd.DataFrame(cov, index=components, columns=components),
        fixef=pd.Series(best["beta"], index=names),
        vcov=pd.DataFrame(vcov_beta, index=names, columns=names),
        criterion=best["criterion"], lrt=lrt, reml=bool(reml), information=information,
        eigen=eig, y_rot=rot.y, X_rot=rot.X, _rot=rot,
    )
