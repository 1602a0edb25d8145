"""Likelihood profiles and profile-likelihood confidence intervals, as lme4's ``confint``.

Bates, Maechler, Bolker and Walker (2015, JSS 67(1), section 5.1) profile the deviance of a
linear mixed model one parameter at a time.  The parameters are the standard deviations and
correlations of the random effects, the residual standard deviation ``sigma`` (together the
*sdcor* scale) and the fixed effects ``beta``.  For a parameter ``phi`` with maximum-likelihood
estimate ``phi_hat`` the *profiled deviance* ``d_phi(x)`` is the smallest deviance (-2
log-likelihood) over all the other parameters with ``phi = x`` held fixed, and the *signed
square root*

    zeta(x) = sign(x - phi_hat) sqrt(d_phi(x) - d(phi_hat))

is close to a straight line in x when the sampling distribution of ``phi_hat`` is close to
normal.  The likelihood-ratio test of ``phi = x`` accepts at level ``alpha`` when
``zeta(x)^2 <= chi^2_{1, 1-alpha}``, so the profile interval at ``level`` is::

    { x : |zeta(x)| <= sqrt(qchisq(level, 1)) = z_{(1 + level)/2} }.

As in lme4, the profile is always of the *likelihood*: a model fitted by REML is refitted by
maximum likelihood first, and the fixed effects are profiled with the covariance parameters and
sigma re-optimised.  lme4 evaluates zeta on a grid and interpolates splines; here the two ends
are found directly with a root finder, which gives the exact ends of the interval.  When the
profile of a standard deviation does not reach the cut before 0, the lower end is 0; a
correlation whose profile does not reach the cut before -1 or 1 gets that bound (both as lme4).

>>> from lmmlib import datasets
>>> from lmmlib.lmm import lmer
>>> fit = lmer("Reaction ~ Days + (1 | Subject)", datasets.sleepstudy())
>>> profile_confint(fit).round(2)                                # doctest: +NORMALIZE_WHITESPACE
                         2.5 %  97.5 %
sd_(Intercept)|Subject   26.01   52.94
sigma                    27.81   34.59
(Intercept)             231.99  270.82
Days                      8.89   12.05
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import optimize, stats

from lmmlib.errors import ConvergenceWarning, LmmInputError, SingularFitWarning
from lmmlib.pls import LOG_2PI, profiled_deviance
from lmmlib.remat import theta_indices
from lmmlib.summary import percent_label

__all__ = [
    "DevianceProfile",
    "deviance_at",
    "fixed_effect_deviance",
    "profile",
    "profile_confint",
    "theta_from_sdcor",
]

#: deviance added per unit of ||R - R_+||_F^2 when correlations do not form a valid matrix
INVALID_PENALTY = 1e8


# --------------------------------------------------------------------- parameter scales
def _correlation_cholesky(R: np.ndarray, strict: bool = True,
                          tol: float = 1e-10) -> np.ndarray | None:
    """Lower-triangular ``C`` with ``C C' = R`` for a positive *semi*-definite correlation
    matrix (a correlation of +-1 gives a zero pivot and a zero column below it).  With
    ``strict``, ``None`` when R is not semi-definite; otherwise rounding-level defects are
    ignored."""
    p = R.shape[0]
    C = np.zeros_like(R)
    for j in range(p):
        pivot = R[j, j] - C[j, :j] @ C[j, :j]
        if strict and pivot < -tol:
            return None
        C[j, j] = np.sqrt(max(pivot, 0.0))
        resid = R[j + 1 :, j] - C[j + 1 :, :j] @ C[j, :j]
        if C[j, j] > tol:
            C[j + 1 :, j] = resid / C[j, j]
        elif strict and np.any(np.abs(resid) > 1e-8):
            return None
    return C


def _nearest_correlation(R: np.ndarray) -> np.ndarray:
    """A valid correlation matrix near R: negative eigenvalues set to 0, diagonal rescaled to 1."""
    lam, V = np.linalg.eigh(R)
    R_plus = (V * np.maximum(lam, 0.0)) @ V.T
    d = 1.0 / np.sqrt(np.maximum(np.diag(R_plus), 1e-300))
    return d[:, None] * R_plus * d[None, :]


def theta_from_sdcor(sdcor: np.ndarray, sigma: float, layout) -> tuple[np.ndarray, float]:
    """theta from standard deviations and correlations (lme4's ``Sv_to_Cv``).

    ``sdcor`` holds, term by term in theta's order, the standard deviation of each column
    (diagonal positions) and the correlation of each pair (off-diagonal positions).  The
    covariance of one level's random effects is ``Sigma_k = D R D`` with ``D = diag(sd)``; the
    template is ``T_k = D C / sigma`` with ``C`` the Cholesky factor of the correlation matrix
    ``R``, so that ``sigma^2 T_k T_k' = Sigma_k``.

    Correlations each in [-1, 1] need not make a valid (positive semi-definite) ``R`` when a
    term has three or more columns.  Then the nearest valid matrix ``R_+`` is used and the
    second value returned, ``||R - R_+||_F^2`` summed over terms, is positive (it is 0 for
    valid input); the profile adds a steep penalty in it.

    >>> from types import SimpleNamespace
    >>> from lmmlib.remat import ThetaLayout
    >>> layout = ThetaLayout([SimpleNamespace(group="g", names=("(Intercept)", "x"))])
    >>> theta, excess = theta_from_sdcor(np.array([2.0, 0.5, 1.0]), 2.0, layout)
    >>> theta.round(4).tolist(), excess
    ([1.0, 0.25, 0.433], 0.0)
    """
    sdcor = np.asarray(sdcor, dtype=float)
    theta = np.empty(layout.size)
    excess = 0.0
    for sl, p in zip(layout.slices, layout.p):
        rows, cols = theta_indices(p)
        values = sdcor[sl]
        diagonal = rows == cols
        R = np.eye(p)
        R[rows[~diagonal], cols[~diagonal]] = values[~diagonal]
        R[cols[~diagonal], rows[~diagonal]] = values[~diagonal]
        C = _correlation_cholesky(R)
        if C is None:
            R_plus = _nearest_correlation(R)
            excess += float(np.sum((R - R_plus) ** 2))
            C = _correlation_cholesky(R_plus, strict=False)
        T = (values[diagonal] / sigma)[:, None] * C
        theta[sl] = T[rows, cols]
    return theta, excess


def deviance_at(pls, theta: np.ndarray, sigma: float) -> float:
    """Deviance (-2 log-likelihood) at theta and sigma, beta at its conditional optimum.

    ``d(theta, sigma) = log|L|^2 + r^2(theta) / sigma^2 + n log(2 pi sigma^2)``
    (Bates et al. 2015, eq. 32 with beta profiled); minimising over sigma
    (``sigma^2 = r^2/n``) gives the profiled deviance ``log|L|^2 + n (1 + log(2 pi r^2/n))``.
    """
    f = pls.factorize(theta)
    return f.logdet_L + f.r2 / sigma**2 + pls.n * (LOG_2PI + np.log(sigma**2))


def fixed_effect_deviance(pls, theta: np.ndarray, j: int, value: float) -> tuple[float, float]:
    """Deviance at theta with fixed effect ``j`` held at ``value`` (other betas and sigma
    profiled); returns ``(deviance, sigma)``.

    The penalized residual sum of squares is quadratic in beta,
    ``r^2(theta, beta) = r^2(theta) + ||R_X (beta - beta_hat)||^2``; minimised over the other
    fixed effects with ``beta_j = value`` it is ``r^2 + (value - beta_hat_j)^2 / V_jj`` with
    ``V = (R_X'R_X)^{-1}``.  Then ``sigma^2 = r_j^2/n`` and the deviance is
    ``log|L|^2 + n (1 + log(2 pi r_j^2 / n))``.  (lme4 refits with ``x_j value`` as an offset,
    which gives the same number.)  ``beta_hat`` and ``R_X`` are those of the factor of L at
    theta (:class:`lmmlib.pls.BlockedCholesky`).
    """
    f = pls.factorize(theta)
    RX_inv = np.linalg.inv(f.RX)
    r2 = f.r2 + (value - f.beta[j]) ** 2 / (RX_inv[j] @ RX_inv[j])
    return profiled_deviance(f.logdet_L, r2, pls.n), float(np.sqrt(r2 / pls.n))


def _minimize(f, x0: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, float]:
    """Minimise ``f`` over the box ``lower <= x <= upper``.

    SLSQP (a quasi-Newton method that honours bounds) with forward-difference gradients; the
    deviance is wanted to about 1e-8, since an error e in it moves zeta by about e / (2 zeta).
    """
    x0 = np.clip(np.asarray(x0, dtype=float), lower, upper)
    res = optimize.minimize(
        f, x0, method="SLSQP", bounds=optimize.Bounds(lower, upper),
        options={"ftol": 1e-10, "maxiter": 500},
    )
    return np.clip(res.x, lower, upper), float(res.fun)


# --------------------------------------------------------------------- the profile
class DevianceProfile:
    """The profiled deviance of a fitted model, one parameter at a time.

    Parameters
    ----------
    fit : lmmlib.lmm.LinearMixedModel
        A fitted model; a REML fit is refitted by maximum likelihood (as lme4's ``profile``).

    Attributes
    ----------
    ml_fit : the maximum-likelihood fit whose deviance is profiled.
    names : list[str]
        lme4's parameter names: ``sd_<term>|<group>``, ``cor_<term2>.<term1>|<group>``,
        ``sigma``, then the fixed effects.
    estimates : pandas.Series
        Maximum-likelihood estimates of the parameters (where zeta = 0).
    lower, upper : pandas.Series
        Bounds of each parameter: [0, inf) for SDs and sigma, [-1, 1] for correlations,
        (-inf, inf) for fixed effects.
    deviance : float
        The minimum deviance ``d(phi_hat)``.

    :meth:`zeta` evaluates the signed square root at one value.  Every evaluation is kept
    (:meth:`points` lists them) with the other parameters at their conditional optimum; the
    nearest one starts the next optimisation of the same profile.
    """

    def __init__(self, fit):
        if not hasattr(fit, "theta") or not hasattr(fit, "pls"):
            raise LmmInputError(
                "profile needs a fitted linear mixed model (from lmmlib.lmer), "
                f"got {type(fit).__name__}"
            )
        if fit.reml:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SingularFitWarning)  # already reported by the fit
                fit = fit.refit(reml=False)
        self.ml_fit = fit
        self.pls = fit.pls
        self.layout = fit.layout
        self.n = fit.nobs
        n_var = len(fit.sdcor)
        self.n_var = n_var
        self.names = [*fit.sdcor.index, *fit.fixef_names]
        self.estimates = pd.Series([*fit.sdcor.to_numpy(), *fit.fixef.to_numpy()], index=self.names)
        # a correlation with a zero SD is undefined (NaN); its profile is centred at 0
        self._centre = self.estimates.fillna(0.0)
        self._var_start = self._centre.to_numpy()[:n_var]
        lower = np.r_[np.where(self.layout.lower == 0, 0.0, -1.0), 0.0, np.full(fit.p, -np.inf)]
        upper = np.r_[np.where(self.layout.lower == 0, np.inf, 1.0), np.inf, np.full(fit.p, np.inf)]
        self.lower = pd.Series(lower, index=self.names)
        self.upper = pd.Series(upper, index=self.names)
        self.deviance = deviance_at(self.pls, fit.theta, fit.sigma)
        self._scale = self._step_scales(fit)
        # each profile starts with its estimate: zeta = 0 there, the other parameters at the fit
        #: parameters whose inner fits start from several points (see :meth:`end`)
        self._multistart: set[str] = set()
        self._points: dict[str, list[tuple[float, float, np.ndarray]]] = {
            name: [(self._centre[name], 0.0, self._var_start if i < n_var else fit.theta)]
            for i, name in enumerate(self.names)
        }

    def _step_scales(self, fit) -> pd.Series:
        """A first step away from the estimate for each parameter when seeking the cut."""
        sigma = fit.sigma
        steps = []
        for name, value, lo in zip(self.names[: self.n_var], self.estimates, self.lower):
            if name == "sigma":
                steps.append(0.1 * sigma)
            elif lo == 0:  # an SD
                steps.append(0.25 * value if value > 0 else 0.1 * sigma)
            else:  # a correlation
                steps.append(0.25)
        steps += list(1.96 * fit.se.to_numpy())  # ML standard errors: Wald half-width
        return pd.Series(steps, index=self.names)

    # ---------------------------------------------------------------- one profile value
    def _profiled_deviance(self, i: int, value: float, start: np.ndarray,
                           multistart: bool | None = None) -> tuple[float, np.ndarray]:
        """Minimum deviance with parameter ``i`` held at ``value``; returns it and the optimum
        of all parameters (sdcor + sigma for a variance parameter, theta for a fixed effect)."""
        if i < self.n_var:
            free = np.arange(self.n_var) != i
            lower = self.lower.to_numpy()[: self.n_var].copy()
            lower[self.n_var - 1] = 1e-4 * self.ml_fit.sigma  # keeps theta = sd / sigma finite
            upper = self.upper.to_numpy()[: self.n_var]

            def dev(x):
                pars = np.empty(self.n_var)
                pars[free], pars[i] = x, value
                theta, excess = theta_from_sdcor(pars[:-1], pars[-1], self.layout)
                return deviance_at(self.pls, theta, pars[-1]) + INVALID_PENALTY * excess

            best_x, best_d = None, np.inf
            if multistart is None:
                multistart = self.names[i] in self._multistart
            starts = self._inner_starts(i, value, start) if multistart else [start]
            for x0 in starts:
                x, d = _minimize(dev, x0[free], lower[free], upper[free])
                if d < best_d - 1e-9:
                    best_x, best_d = x, d
            pars = np.empty(self.n_var)
            pars[free], pars[i] = best_x, value
            return best_d, pars
        j = i - self.n_var
        theta, d = _minimize(
            lambda th: fixed_effect_deviance(self.pls, th, j, value)[0],
            start, self.layout.lower, np.full(self.layout.size, np.inf),
        )
        return d, theta

    def _inner_starts(self, i: int, value: float, start: np.ndarray) -> list[np.ndarray]:
        """Starting points of the inner minimisation with parameter i held at ``value``.

        The profiled deviance can have several local minima in the other parameters, some on
        the boundary: a standard deviation of 0 (then the correlations of that term no longer
        matter) or a correlation of +-1.  A single start (the neighbouring point's optimum)
        then misses the better one: the sigma interval came out too short and a correlation
        interval short of [-1, 1] (issue 7).  So the inner fit starts from that neighbour and
        from the estimates, each as it is, with one standard deviation (other than the one
        held) set to 0, and with one correlation set to -0.95 or 0.95; the best optimum is
        kept (:meth:`_profiled_deviance`).
        """
        estimates = self._var_start.copy()
        estimates[i] = value
        bases = [np.asarray(start, dtype=float), estimates]
        lower = self.lower.to_numpy()[: self.n_var - 1]
        starts = list(bases)
        for j in range(self.n_var - 1):
            if j == i:
                continue
            for base in bases:
                for new in ((0.0,) if lower[j] == 0 else (-0.95, 0.95)):
                    varied = base.copy()
                    varied[j] = new
                    starts.append(varied)
        unique = []
        for x0 in starts:
            if not any(np.array_equal(x0, u) for u in unique):
                unique.append(x0)
        return unique

    def zeta(self, name: str, value: float) -> float:
        """Signed square root ``sign(value - estimate) sqrt(d_phi(value) - d(phi_hat))``."""
        i = self._index(name)
        value = float(value)
        if not self.lower.iloc[i] <= value <= self.upper.iloc[i]:
            raise LmmInputError(
                f"{name} = {value} is outside its range "
                f"[{self.lower.iloc[i]}, {self.upper.iloc[i]}]"
            )
        points = self._points[name]
        for v, z, _ in points:
            if v == value:
                return z
        start = min(points, key=lambda pt: abs(pt[0] - value))[2]
        d, opt = self._profiled_deviance(i, value, start)
        diff = d - self.deviance
        if diff < -1e-3:
            warnings.warn(
                f"profiling {name} found a deviance {-diff:.3g} below the fit's: the fit may not "
                "have converged to the maximum-likelihood estimates",
                ConvergenceWarning,
                stacklevel=2,
            )
        z = float(np.sign(value - self._centre.iloc[i]) * np.sqrt(max(diff, 0.0)))
        points.append((value, z, opt))
        return z

    def _index(self, name: str) -> int:
        if name not in self.names:
            raise LmmInputError(f"unknown parameter {name!r}; the parameters are {self.names}")
        return self.names.index(name)

    def points(self, name: str) -> pd.DataFrame:
        """The evaluated points of one profile: columns value, zeta, sorted by value."""
        pts = sorted(self._points[name], key=lambda pt: pt[0])
        return pd.DataFrame({"value": [p[0] for p in pts], "zeta": [p[1] for p in pts]})

    # ---------------------------------------------------------------- interval ends
    def end(self, name: str, cut: float, side: int) -> float:
        """The value where zeta crosses ``side * cut`` (side = -1 lower end, +1 upper end).

        The search runs with one start per inner fit (the neighbouring point's optimum),
        which is fast; the end it finds is then checked with the inner fit started from
        several points, boundaries included (:meth:`_inner_starts`).  If that finds a lower
        deviance there, the single start had missed the inner optimum (issue 7: a sigma
        interval too short, a correlation interval short of [-1, 1]), and the search is
        repeated with several starts for every point of this parameter.
        """
        x = self._search_end(name, cut, side)
        i = self._index(name)
        if i >= self.n_var or name in self._multistart or not np.isfinite(x):
            return x
        value, z, opt = min(self._points[name], key=lambda pt: abs(pt[0] - x))
        d_single = self.deviance + z**2
        d_multi, _ = self._profiled_deviance(i, x, opt, multistart=True)
        if d_multi < d_single - 1e-7:
            self._multistart.add(name)
            self._points[name] = self._points[name][:1]  # keep only the estimate
            x = self._search_end(name, cut, side)
        return x

    def _search_end(self, name: str, cut: float, side: int) -> float:
        """:meth:`end`'s search with the current inner fits.

        Steps away from the estimate, extrapolating zeta linearly, until ``|zeta| >= cut``,
        then solves ``zeta(x) = side * cut`` with Brent's method.  Returns the parameter's bound
        (0 for an SD, -1 or 1 for a correlation) when the profile stays below the cut there.
        """
        i = self._index(name)
        estimate = self._centre.iloc[i]
        bound = self.upper.iloc[i] if side > 0 else self.lower.iloc[i]
        if estimate == bound:
            return float(bound)
        inside, distance = estimate, self._scale.iloc[i]
        for _ in range(100):
            x = float(np.clip(estimate + side * distance, self.lower.iloc[i], self.upper.iloc[i]))
            z = abs(self.zeta(name, x))
            if z >= cut:
                break
            if x == bound:
                return float(bound)
            inside = x
            # zeta is near linear in x: aim a little beyond the predicted crossing
            distance = abs(x - estimate) * (10.0 if z == 0 else min(10.0, 1.2 * cut / z))
        else:
            warnings.warn(f"the profile of {name} did not reach the cut; returning NaN",
                          stacklevel=2)
            return np.nan
        a, b = sorted((inside, x))
        tol = 1e-9 * max(abs(estimate), self._scale.iloc[i])
        return optimize.brentq(lambda v: self.zeta(name, v) - side * cut, a, b,
                               xtol=tol, rtol=1e-12)

    def interval(self, name: str, level: float = 0.95) -> tuple[float, float]:
        """Profile-likelihood interval ``{x : |zeta(x)| <= sqrt(qchisq(level, 1))}``."""
        cut = float(np.sqrt(stats.chi2.ppf(level, 1)))
        return self.end(name, cut, -1), self.end(name, cut, +1)


def _check_level(level: float) -> float:
    if not isinstance(level, (int, float, np.floating)) or not 0 < level < 1:
        raise LmmInputError(f"level must be a number between 0 and 1, got {level!r}")
    return float(level)


def _which(prof: DevianceProfile, which) -> list[str]:
    if which is None:
        return list(prof.names)
    which = [which] if isinstance(which, str) else list(which)
    unknown = [w for w in which if w not in prof.names]
    if unknown:
        raise LmmInputError(f"unknown parameter(s) {unknown}; the parameters are {prof.names}")
    return which


def profile_confint(fit, level: float = 0.95, which: Sequence[str] | None = None) -> pd.DataFrame:
    """Profile-likelihood confidence intervals, as lme4's ``confint(fit, method = "profile")``.

    For each parameter phi (SDs and correlations of the random effects, sigma, fixed effects)
    the interval is ``{x : zeta(x)^2 <= qchisq(level, 1)}`` where
    ``zeta(x) = sign(x - phi_hat) sqrt(d_phi(x) - d(phi_hat))`` and ``d_phi`` is the ML deviance
    minimised over the other parameters (Bates et al. 2015, JSS 67(1), section 5.1).  A REML
    fit is profiled through its ML refit, as lme4 does.

    Returns a DataFrame indexed by lme4's parameter names (``sd_(Intercept)|Subject``,
    ``cor_Days.(Intercept)|Subject``, ``sigma``, ``(Intercept)``, ...) with R's column names
    (``"2.5 %"``, ``"97.5 %"`` for level 0.95).
    """
    level = _check_level(level)
    prof = DevianceProfile(fit)
    names = _which(prof, which)
    ends = [prof.interval(name, level) for name in names]
    a = (1 - level) / 2
    return pd.DataFrame(ends, index=names, columns=[percent_label(a), percent_label(1 - a)])


def profile(fit, which: Sequence[str] | None = None,
            grid: int | Mapping[str, Sequence[float]] = 15, level: float = 0.99) -> pd.DataFrame:
    """The zeta profiles of a fitted model, for lme4-style profile plots.

    Parameters
    ----------
    fit : a fitted model from ``lmer``.
    which : parameter names to profile (default: all, lme4's names).
    grid : int or mapping
        With an int, each parameter is evaluated at this many equally spaced values spanning its
        profile interval at ``level`` (clipped to the parameter's range), plus the estimate;
        with a mapping ``name -> values``, at those values.
    level : float
        Confidence level whose interval the automatic grid spans.

    Returns
    -------
    DataFrame with columns ``parameter``, ``value``, ``zeta`` (one row per evaluated value, sorted
    by value within parameter); ``zeta = sign(x - phi_hat) sqrt(d_phi(x) - d(phi_hat))``
    (Bates et al. 2015, section 5.1), so ``|zeta| = sqrt(qchisq(0.95, 1)) = 1.96`` marks the
    ends of the 95% interval.
    """
    level = _check_level(level)
    prof = DevianceProfile(fit)
    if isinstance(grid, Mapping):
        names = _which(prof, which if which is not None else list(grid))
        missing = [nm for nm in names if nm not in grid]
        if missing:
            raise LmmInputError(f"grid gives no values for {missing}")
    else:
        if not isinstance(grid, (int, np.integer)) or grid < 2:
            raise LmmInputError(
                f"grid must be an int >= 2 or a mapping name -> values, got {grid!r}"
            )
        names = _which(prof, which)
    frames = []
    for name in names:
        centre = prof._centre[name]
        if isinstance(grid, Mapping):
            values = np.asarray(grid[name], dtype=float)
        else:
            lo, hi = prof.interval(name, level)
            values = np.linspace(lo, hi, int(grid))
        # the estimate (zeta = 0) joins the grid, replacing a grid value within rounding of it
        near = np.isclose(values, centre, rtol=1e-9, atol=1e-12)
        values = np.unique(np.append(values[~near], centre))
        # evaluate outward from the estimate so that each optimisation starts next to its answer
        zeta = {v: prof.zeta(name, v) for v in values[np.argsort(np.abs(values - centre))]}
        frames.append(pd.DataFrame(
            {"parameter": name, "value": values, "zeta": [zeta[v] for v in values]}
        ))
    return pd.concat(frames, ignore_index=True)
