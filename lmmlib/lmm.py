"""Fitting linear mixed models: ``lmer`` and the fitted-model object.

``lmer(formula, data)`` builds the model matrices (:mod:`lmmlib.design`), forms the
cross-products once (:mod:`lmmlib.pls`), and minimises the profiled REML criterion or deviance
over theta with a bounded quasi-Newton optimiser.  Everything else (beta, sigma, the random
effects, standard errors) follows from the penalized least-squares solution at the optimum
(Bates, Maechler, Bolker and Walker 2015, JSS 67(1), section 3).

>>> from lmmlib import datasets, lmer
>>> fit = lmer("Reaction ~ Days + (Days | Subject)", datasets.sleepstudy())
>>> round(fit.deviance, 4), fit.fixef.round(3).tolist()
(1743.6283, [251.405, 10.467])
"""

from __future__ import annotations

import contextlib
import warnings
from functools import cache, cached_property

import numpy as np
import pandas as pd
from scipy import optimize, stats

from lmmlib.errors import ConvergenceWarning, LmmInputError, SingularFitWarning
from lmmlib.pls import PenalizedLeastSquares
from lmmlib.remat import (
    random_effects_product,
    sdcor_names,
    sdcor_values,
    varcorr_frame,
)

__all__ = ["lmer", "LinearMixedModel", "optimize_theta"]

SINGULAR_MESSAGE = "boundary (singular) fit: see help('isSingular')"


def lmer(formula: str, data: pd.DataFrame, reml: bool = True) -> LinearMixedModel:
    """Fit a linear mixed model given in lme4's formula syntax; returns the fitted model.

    Parameters
    ----------
    formula : str
        e.g. ``"Reaction ~ Days + (Days | Subject)"``.
    data : pandas.DataFrame
    reml : bool
        Maximise the REML criterion (default, as lme4) or the likelihood (``reml=False``).
    """
    from lmmlib.design import build_design

    return LinearMixedModel(build_design(formula, data), reml=reml).fit()


def finite_difference_gradient(f, x, fx, lower, central=True):
    """Gradient of ``f`` at ``x`` by finite differences, never stepping below ``lower``.

    Forward differences ``(f(x + h e_i) - f(x)) / h`` with ``h = 1e-7 max(1, |x_i|)`` cost one
    evaluation per parameter; central differences ``(f(x + h e_i) - f(x - h e_i)) / 2h`` with
    ``h = 4e-6 max(1, |x_i|)`` are accurate to O(h^2), and at a bound the one-sided
    ``(-3 f(x) + 4 f(x + h e_i) - f(x + 2h e_i)) / 2h`` is used instead.
    """
    g = np.empty_like(x)
    for i in range(len(x)):
        h = (4e-6 if central else 1e-7) * max(1.0, abs(x[i]))
        e = np.zeros_like(x)
        e[i] = h
        if not central:
            g[i] = (f(x + e) - fx) / h
        elif x[i] - h >= lower[i]:
            g[i] = (f(x + e) - f(x - e)) / (2 * h)
        else:
            g[i] = (-3 * fx + 4 * f(x + e) - f(x + 2 * e)) / (2 * h)
    return g


def _descent_from_boundary(f, theta, ftheta, lower, step=1e-3):
    """A point just inside the bounds with a lower objective than ``theta``, or None.

    The profiled criteria are even functions of a diagonal template element that is 0 (the
    sign of a column of T does not change T T'), so their derivative there is 0 whatever the
    curvature, and a gradient method can stop at such a point even when it is a maximum in
    that direction; near 0 the derivative is nearly 0 for the same reason.  Moving such an
    element to ``step`` tells whether the objective decreases away from the boundary.
    """
    for i in np.flatnonzero((lower == 0) & (theta < step)):
        trial = theta.copy()
        trial[i] = step
        if f(trial) < ftheta:
            return trial
    return None


def optimize_theta(
    objective, start: np.ndarray, lower: np.ndarray, max_passes: int = 4
) -> tuple[np.ndarray, dict]:
    """Minimise ``objective(theta)`` subject to ``theta >= lower`` with L-BFGS-B.

    L-BFGS-B (a bounded quasi-Newton method) runs with forward-difference gradients, then,
    as long as the result is not accepted, again from where it stopped with central
    differences (a fresh start also discards a poor quasi-Newton memory, which can make
    L-BFGS-B stop early).  A point with a variance at 0 that is not a minimum along that
    variance (see :func:`_descent_from_boundary`) is left for the interior; a point is
    accepted when, with ``g`` the projected
    central-difference gradient and ``H^-1`` L-BFGS-B's inverse-Hessian approximation, the
    predicted further decrease ``g' H^-1 g / 2`` is below ``1e-9 max(1, |objective| / 1000)``.

    Returns the minimiser and ``optinfo``: ``{"optimizer", "n_evaluations", "converged",
    "message", "objective", "passes"}``.
    """
    count = [0]
    best = {"objective": np.inf, "theta": np.asarray(start, dtype=float)}

    def f(theta):
        count[0] += 1
        try:
            value = objective(theta)
        except np.linalg.LinAlgError:  # numerically not positive definite at an extreme theta
            return np.inf
        if value < best["objective"]:  # L-BFGS-B's result after an abnormal stop can be an
            best["objective"], best["theta"] = value, theta.copy()  # earlier iterate
        return value

    bounds = optimize.Bounds(lower, np.full_like(lower, np.inf))
    options = {"ftol": 1e-12, "gtol": 1e-7, "maxiter": 1000, "maxcor": 20}
    theta = np.asarray(start, dtype=float)
    converged = False
    for attempt in range(max_passes):
        central = attempt > 0
        res = optimize.minimize(
            lambda t: (ft := f(t), finite_difference_gradient(f, t, ft, lower, central)),
            theta,
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options=options,
        )
        theta, value = best["theta"], best["objective"]  # the best point evaluated
        inside = _descent_from_boundary(f, theta, value, lower)
        if inside is not None:  # a stationary point on the boundary that is not a minimum
            theta = inside
            continue
        g = finite_difference_gradient(f, theta, value, lower, central=True)
        g = np.where((theta <= lower) & (g > 0), 0.0, g)  # projected gradient
        decrease = 0.5 * float(g @ res.hess_inv.matvec(g))
        if abs(decrease) < 1e-9 * max(1.0, abs(value) / 1e3):
            converged = True
            break
    theta, value = best["theta"], best["objective"]
    info = {
        "optimizer": "L-BFGS-B (scipy.optimize.minimize), finite-difference gradient",
        "n_evaluations": count[0],
        "converged": converged,
        "message": str(res.message),
        "objective": float(value),
        "passes": attempt + 1,
    }
    return theta, info


@cache
def _threadpool_controller():
    """threadpoolctl's view of the loaded BLAS libraries (None without threadpoolctl)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # optional: only a speed-up
        return None
    return ThreadpoolController()


def _single_blas_thread():
    """Run BLAS single-threaded while fitting.

    An evaluation of the criterion is dominated by single-threaded work (sparse products,
    small batched factorizations, L-BFGS-B's own tiny matrices); OpenBLAS's threads waiting
    between the few multithreaded calls compete with it for the cores, which on a busy
    machine made fits 3-10x slower.
    """
    controller = _threadpool_controller()
    if controller is None:
        return contextlib.nullcontext()
    return controller.limit(limits=1, user_api="blas")


class LinearMixedModel:
    """A linear mixed model ``y = X beta + Z b + e`` and, after :meth:`fit`, its estimates.

    Attributes after fitting (names as lme4's extractors):
    ``theta`` (array, lme4 order), ``fixef`` (Series), ``vcov`` (DataFrame), ``se`` (Series),
    ``sigma``, ``varcorr`` (DataFrame like ``as.data.frame(VarCorr())``), ``loglik``,
    ``deviance`` (REML criterion if ``reml``, else -2 loglik), ``aic``, ``bic``, ``nobs``,
    ``ngroups`` (dict), ``ranef`` (dict of DataFrames), ``condvar`` (dict of arrays
    (levels, p, p)), ``fitted`` and ``residuals`` (Series), ``singular``, ``optinfo`` (dict).
    """

    def __init__(self, design, reml: bool = True):
        self.design = design
        self.reml = bool(reml)
        #: random-effects terms, in lme4's order (build_design sorts them as lme4's mkReTrms);
        #: theta, varcorr and ranef follow this order
        self.terms = list(design.terms)
        self.pls = PenalizedLeastSquares(design.X, design.y, self.terms)
        self.layout = self.pls.layout
        self.nobs, self.p = design.X.shape
        self.fixef_names = list(design.fixef_names)
        self.optinfo: dict | None = None

    # ----------------------------------------------------------------- objective and fit
    def objective(self, theta) -> float:
        """Profiled REML criterion (``reml=True``) or deviance at ``theta``.

        beta and sigma are profiled out (:mod:`lmmlib.pls`); this is what :meth:`fit` minimises.
        """
        return self.pls.objective(np.asarray(theta, dtype=float), self.reml)

    def fit(self, start=None) -> LinearMixedModel:
        """Minimise :meth:`objective` over theta (from lme4's start ``T_k = I``); returns self."""
        lower = self.layout.lower
        start = self.layout.start if start is None else np.asarray(start, dtype=float)
        with _single_blas_thread():
            theta, self.optinfo = optimize_theta(self.objective, start, lower)
            if self.layout.is_singular(theta):
                # A boundary estimate can be a local optimum with a better one inside (the
                # criteria are even in a zero diagonal element of T): look again from
                # starting points away from the boundary and keep the best optimum.
                evaluations = self.optinfo["n_evaluations"]
                for restart in self.layout.boundary_restarts(theta):
                    other, info = optimize_theta(self.objective, restart, lower)
                    evaluations += info["n_evaluations"]
                    if info["objective"] < self.optinfo["objective"]:
                        theta, self.optinfo = other, info
                self.optinfo["n_evaluations"] = evaluations
            self._set_estimates(theta)
        if not self.optinfo["converged"]:
            warnings.warn(
                f"the optimizer did not converge ({self.optinfo['message']}) after "
                f"{self.optinfo['n_evaluations']} evaluations; estimates may be inaccurate",
                ConvergenceWarning,
                stacklevel=2,
            )
        if self.singular:
            warnings.warn(SINGULAR_MESSAGE, SingularFitWarning, stacklevel=2)
        return self

    def refit(self, reml: bool) -> LinearMixedModel:
        """The same model fitted again by REML (``reml=True``) or maximum likelihood."""
        return LinearMixedModel(self.design, reml=reml).fit(start=self.theta)

    def _set_estimates(self, theta: np.ndarray) -> None:
        """Everything that follows from the PLS solution at the estimate ``theta``."""
        self.__dict__.pop("condvar", None)  # computed on demand for these estimates
        sol = self.pls.solve(theta)
        self.solution = sol
        self.theta = sol.theta
        self.theta_names = self.layout.names
        self.deviance = float(sol.reml_criterion() if self.reml else sol.deviance())
        self.sigma = sol.sigma(self.reml)
        names = self.fixef_names
        self.fixef = pd.Series(sol.beta, index=names, name="Estimate")
        self.vcov = pd.DataFrame(sol.vcov(self.reml), index=names, columns=names)
        self.se = pd.Series(np.sqrt(np.diag(self.vcov.to_numpy())), index=names, name="Std. Error")
        self.npar = self.layout.size + self.p + 1
        self.loglik = -0.5 * self.deviance
        self.aic = self.deviance + 2 * self.npar
        self.bic = float(self.deviance + np.log(self.nobs) * self.npar)
        self.singular = self.layout.is_singular(self.theta)
        templates = self.layout.templates(self.theta)
        self.varcorr = varcorr_frame(self.terms, templates, self.sigma)
        self.sdcor = pd.Series(
            [*sdcor_values(self.terms, templates, self.sigma), self.sigma],
            index=[*sdcor_names(self.terms), "sigma"],
        )
        self.ngroups = {g: len(self.terms[ks[0]].levels) for g, ks in self._groups().items()}
        self.ranef = {
            g: pd.DataFrame(
                np.hstack([sol.b[k] for k in ks]),
                index=self.terms[ks[0]].levels,
                columns=[name for k in ks for name in self.terms[k].names],
            )
            for g, ks in self._groups().items()
        }
        mu = self.design.X @ sol.beta
        for term, b in zip(self.terms, sol.b):
            mu += random_effects_product(term.codes, term.X, b)
        self.fitted = pd.Series(mu, index=self.design.row_index, name="fitted")
        self.residuals = pd.Series(
            self.design.y - mu, index=self.design.row_index, name="residuals"
        )

    def _groups(self) -> dict[str, list[int]]:
        """Grouping factor -> indices (lme4 order) of its terms."""
        groups: dict[str, list[int]] = {}
        for k, term in enumerate(self.terms):
            groups.setdefault(term.group, []).append(k)
        return groups

    # ----------------------------------------------------------------- random effects
    @cached_property
    def condvar(self) -> dict[str, np.ndarray]:
        """Conditional covariances of the random effects: factor -> array (levels, P, P).

        ``sigma^2`` times the diagonal blocks of ``Lambda (L L')^{-1} Lambda'`` -- lme4's
        ``ranef(fit, condVar = TRUE)``.
        """
        groups = self._groups()
        blocks = self.pls.conditional_covariances(self.theta, list(groups.values()))
        return {g: self.sigma**2 * v for g, v in zip(groups, blocks)}

    def ranef_frame(self) -> pd.DataFrame:
        """Long table like R's ``as.data.frame(ranef(fit, condVar = TRUE))``.

        Columns ``grpvar, term, grp, condval, condsd``; rows by factor, term, then level.
        """
        parts = []
        for g, frame in self.ranef.items():
            sd = np.sqrt(np.diagonal(self.condvar[g], axis1=1, axis2=2))
            for a, term in enumerate(frame.columns):
                parts.append(
                    pd.DataFrame(
                        {
                            "grpvar": g,
                            "term": term,
                            "grp": frame.index.astype(str),
                            "condval": frame.iloc[:, a].to_numpy(),
                            "condsd": sd[:, a],
                        }
                    )
                )
        return pd.concat(parts, ignore_index=True)

    # ----------------------------------------------------------------- prediction
    def predict(
        self, newdata: pd.DataFrame | None = None, re: bool = True, allow_new_levels: bool = False
    ) -> pd.Series:
        """Predictions ``X beta + Z b`` (``re=True``) or the population-level ``X beta``.

        A level of a grouping factor not seen in the fit raises an error naming it, unless
        ``allow_new_levels=True``, in which case its random effect is 0 (lme4's convention).
        """
        if newdata is None:
            if re:
                return self.fitted.copy()
            return pd.Series(self.design.X @ self.fixef.to_numpy(), index=self.design.row_index)
        if not isinstance(newdata, pd.DataFrame):
            raise LmmInputError(f"newdata must be a pandas DataFrame, not {type(newdata).__name__}")
        mu = self.design.new_fixed_matrix(newdata) @ self.fixef.to_numpy()
        if re:
            for i, (codes, Xk) in enumerate(self.design.new_random_terms(newdata)):
                codes = np.asarray(codes)
                if not allow_new_levels and np.any(codes < 0):
                    self._raise_new_level(newdata, self.terms[i].group, codes)
                mu = mu + random_effects_product(codes, Xk, self.solution.b[i])
        return pd.Series(mu, index=newdata.index, name="predicted")

    @staticmethod
    def _raise_new_level(newdata: pd.DataFrame, group: str, codes: np.ndarray):
        row = int(np.flatnonzero(codes < 0)[0])
        parts = group.split(":")
        if all(part in newdata.columns for part in parts):
            level = ":".join(str(newdata[part].iloc[row]) for part in parts)
        else:
            level = "?"
        count = int(np.sum(codes < 0))
        raise LmmInputError(
            f"newdata has a level of grouping factor {group!r} not seen in the fit: "
            f"{level!r} (row {newdata.index[row]!r}; {count} row(s) with new levels). "
            "Use allow_new_levels=True to predict with a random effect of 0 for new levels."
        )

    # ----------------------------------------------------------------- inference
    def confint(self, method: str = "wald", level: float = 0.95) -> pd.DataFrame:
        """Confidence intervals, rows named as lme4 (``sd_(Intercept)|Subject``, ``sigma``, ...).

        ``"wald"``: ``beta +- z_{1-a/2} se`` for the fixed effects, NaN for the variance
        parameters (as lme4).  ``"profile"``: likelihood-profile intervals from
        :func:`lmmlib.profile.profile_confint`.
        """
        if not 0 < level < 1:
            raise LmmInputError(f"level must be between 0 and 1, got {level}")
        if method == "profile":
            from lmmlib.profile import profile_confint

            return profile_confint(self, level)
        if method != "wald":
            raise LmmInputError(f"method must be 'wald' or 'profile', got {method!r}")
        z = stats.norm.ppf(0.5 + level / 2)
        lo = np.r_[np.full(len(self.sdcor), np.nan), self.fixef - z * self.se]
        hi = np.r_[np.full(len(self.sdcor), np.nan), self.fixef + z * self.se]
        return pd.DataFrame(
            {_percent(0.5 - level / 2): lo, _percent(0.5 + level / 2): hi},
            index=[*self.sdcor.index, *self.fixef_names],
        )

    def summary(self):
        """A printable summary laid out like lme4's ``print(summary(fit))``
        (:class:`lmmlib.summary.LmmSummary`)."""
        from lmmlib.summary import LmmSummary

        return LmmSummary(self)

    def __repr__(self) -> str:
        crit = "REML criterion" if self.reml else "deviance"
        value = getattr(self, "deviance", None)
        shown = "unfitted" if value is None else f"{crit} {value:.4f}"
        return f"<LinearMixedModel {self.design.formula!r}, {shown}>"


def _percent(a: float) -> str:
    """R's column names for quantiles: 0.025 -> '2.5 %'."""
    return f"{100 * a:.3g} %"
