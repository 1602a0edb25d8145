"""Fitting linear mixed models: ``lmer`` and the fitted-model object.

``lmer(formula, data)`` builds the model matrices (:mod:`lmmlib.design`), forms the
cross-products once (:mod:`lmmlib.pls`), and minimises the profiled REML criterion or deviance
over theta (:mod:`lmmlib.optimizer`).  Everything else (beta, sigma, the random effects,
standard errors) follows from the penalized least-squares solution at the optimum (Bates,
Maechler, Bolker and Walker 2015, JSS 67(1), section 3); it is computed when first asked for.

>>> from lmmlib import datasets, lmer
>>> fit = lmer("Reaction ~ Days + (Days | Subject)", datasets.sleepstudy())
>>> round(fit.deviance, 4), fit.fixef.round(3).tolist()
(1743.6283, [251.405, 10.467])
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from functools import cache, cached_property

import numpy as np
import pandas as pd
from scipy import stats

from lmmlib.errors import ConvergenceWarning, LmmInputError, SingularFitWarning
from lmmlib.formula import group_components
from lmmlib.gradient import value_and_gradient
from lmmlib.optimizer import gradient_and_hessian, optimize_theta
from lmmlib.pls import PenalizedLeastSquares, profiled_deviance, profiled_reml_criterion
from lmmlib.priorweights import log_det_weights, working_response, working_system
from lmmlib.remat import (
    group_labels,
    random_effects_product,
    sdcor_names,
    sdcor_values,
    varcorr_frame,
)
from lmmlib.summary import percent_label, singular_message

__all__ = ["lmer", "LinearMixedModel", "optimize_theta"]

#: lme4's ``isSingular`` tolerance on theta
SINGULAR_TOL = 1e-4
#: predictors whose root mean square is outside this range are on "very different scales" in
#: lme4's sense (``lmerControl(check.scaleX)``); see :attr:`LinearMixedModel.singular`
WELL_SCALED = (1e-3, 1e3)


def lmer(formula: str, data: pd.DataFrame, reml: bool = True, *, weights=None,
         offset=None) -> LinearMixedModel:
    """Fit a linear mixed model given in lme4's formula syntax; returns the fitted model.

    Parameters
    ----------
    formula : str
        e.g. ``"Reaction ~ Days + (Days | Subject)"``.
    data : pandas.DataFrame
    reml : bool
        Maximise the REML criterion (default, as lme4) or the likelihood (``reml=False``).
    weights, offset : str or array-like, optional
        Prior weights (residual variance ``sigma^2 / w_i``) and an offset added to the linear
        predictor, as lme4's ``weights=`` and ``offset=``: a column of ``data`` or one value
        per row (see :mod:`lmmlib.priorweights`).  ``offset(x)`` terms in the formula work too.
    """
    from lmmlib.design import build_design

    design = build_design(formula, data, weights=weights, offset=offset)
    return LinearMixedModel(design, reml=reml).fit()


@cache
def _threadpool_controller():
    """threadpoolctl's view of the BLAS libraries loaded by numpy and scipy (created once, at
    the first fit, when both are loaded); None if threadpoolctl is missing."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # a dependency of lmmlib; without it fits run, with BLAS's own threads
        return None
    return ThreadpoolController()


def _single_blas_thread():
    """Context manager: BLAS limited to one thread for the duration of one fit.

    Why: an evaluation of the criterion is a long chain of small operations (batched 2 x 2
    Cholesky factors, sparse products, L-BFGS-B's own bookkeeping) with only a few calls large
    enough for OpenBLAS to split over threads; its worker threads then spin between calls and
    take the cores away from the one doing the work.  Measured on the project's 2-core machine
    (numpy 2.5 / scipy 1.18 with OpenBLAS 0.3.31 and 0.3.34, median of repeated fits): the
    sleepstudy fit took 7.5 ms with one BLAS thread against 12.9 ms with two while another
    process kept one core busy (no difference on an idle machine), and a crossed design with
    7,342 rows 107 against 327 ms (86 against 116 ms idle).  Entering and leaving the limit
    costs about 13 microseconds, so it is applied once per fit (:meth:`LinearMixedModel.fit`,
    also for each :meth:`~LinearMixedModel.refit`), not per evaluation; the previous settings
    are restored afterwards.
    """
    controller = _threadpool_controller()
    if controller is None:
        return contextlib.nullcontext()
    return controller.limit(limits=1, user_api="blas")


class LinearMixedModel:
    """A linear mixed model ``y = X beta + Z b + e`` and, after :meth:`fit`, its estimates.

    Parameters
    ----------
    design : lmmlib.design.Design
        y, X and the random-effects terms (from :func:`lmmlib.design.build_design`).
    reml : bool
        Fit by REML (default) or maximum likelihood.
    pls : lmmlib.pls.PenalizedLeastSquares, optional
        The cross-products of this design's X, Z and y, when they are already formed (as
        :meth:`refit` does).


    Attributes after fitting (names as lme4's extractors):
    ``theta`` (array, lme4 order), ``fixef`` (Series), ``vcov`` (DataFrame), ``se`` (Series),
    ``sigma``, ``varcorr`` (DataFrame like ``as.data.frame(VarCorr())``), ``sdcor`` (Series),
    ``loglik``, ``deviance`` (REML criterion if ``reml``, else -2 loglik), ``aic``, ``bic``,
    ``nobs``, ``ngroups`` (dict), ``ranef`` (dict of DataFrames), ``condvar`` (dict of arrays
    (levels, p, p)), ``fitted`` and ``residuals`` (Series), ``singular``, ``optinfo`` (dict).
    All but theta, sigma and the criteria are computed when first used.  Methods:
    :meth:`refit` (new response or criterion), :meth:`simulate`, :meth:`predict`,
    :meth:`confint`, :meth:`summary`.
    """

    def __init__(self, design, reml: bool = True, *, pls: PenalizedLeastSquares | None = None):
        self.design = design
        self.reml = _check_reml(reml)
        #: random-effects terms, in lme4's order (build_design sorts them as lme4's mkReTrms);
        #: theta, varcorr and ranef follow this order
        self.terms = list(design.terms)
        self.pls = PenalizedLeastSquares(*working_system(design)) if pls is None else pls
        #: log|W| of the prior weights, subtracted from the criteria (lme4's ldW)
        self.log_det_w = log_det_weights(getattr(design, "weights", None))
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

    def fit(self, start=None, *, hessian=None, polish: bool = True) -> LinearMixedModel:
        """Minimise :meth:`objective` over theta; returns self.

        The search starts from ``start`` or from lme4's ``T_k = I`` for the columns scaled as in
        :mod:`lmmlib.pls` and runs on that scale (theta times ``pls.theta_scale``), where one
        step size suits every predictor whatever its units.  ``hessian``, the Hessian of the
        criterion on that scale near ``start``, starts a quasi-Newton search (as :meth:`refit`
        does; see :func:`lmmlib.optimizer.optimize_theta`), with a final Newton step unless
        ``polish=False`` (a refit to a new response, where speed matters more than 1e-7).
        """
        lower = self.layout.lower
        scale = self.pls.theta_scale
        options = {} if hessian is None else {"hessian": hessian, "polish": polish}
        gradient = self._gradient()
        if gradient is not None:
            options["gradient"] = gradient
        if start is not None:  # compared with lme4's T = I at the end (optimize_theta, step 5)
            options["fallback"] = self.layout.start
        start = self.layout.start / scale if start is None else np.asarray(start, dtype=float)
        scaled_objective = self._scaled_objective
        with _single_blas_thread():
            theta_s, self.optinfo = optimize_theta(scaled_objective, start * scale, lower,
                                                   **options)
            if not self.optinfo["converged"] and "gradient" in options:
                # A degenerate criterion (e.g. a bootstrap replicate with almost no residual
                # variance) can send the gradient search towards infinity; the search with
                # finite differences is the engine's reference path: use its answer there.
                options.pop("gradient")
                count = self.optinfo["n_evaluations"]
                theta_s, self.optinfo = optimize_theta(scaled_objective, start * scale, lower,
                                                       **options)
                self.optinfo["n_evaluations"] += count
            if self.layout.is_singular(theta_s):
                # A boundary estimate can be a local optimum with a better one inside (the
                # criteria are even in a zero diagonal element of T): look again from
                # starting points away from the boundary and keep the best optimum.
                evaluations = self.optinfo["n_evaluations"]
                for restart in self.layout.boundary_restarts(theta_s):
                    other, info = optimize_theta(scaled_objective, restart, lower,
                                                 gradient=self._gradient())
                    evaluations += info["n_evaluations"]
                    if info["objective"] < self.optinfo["objective"]:
                        theta_s, self.optinfo = other, info
                self.optinfo["n_evaluations"] = evaluations
            self._set_estimates(theta_s / scale)
        if not self.optinfo["converged"]:
            warnings.warn(
                f"the optimizer did not converge ({self.optinfo['message']}) after "
                f"{self.optinfo['n_evaluations']} evaluations; estimates may be inaccurate",
                ConvergenceWarning,
                stacklevel=2,
            )
        if self.singular:
            warnings.warn(singular_message(self.singular_groups), SingularFitWarning,
                          stacklevel=2)
        return self

    def refit(self, newresp=None, *, reml: bool | None = None) -> LinearMixedModel:
        """The same model fitted again: to a new response, or by REML or ML (lme4's ``refit``).

        Parameters
        ----------
        newresp : array-like of length ``nobs``, optional
            A new response for the same rows (e.g. one column of :meth:`simulate`); a pandas
            Series is aligned on the fit's row labels.  Only the cross-products that involve y
            are formed again, and the search starts at this fit's theta, which makes a
            parametric bootstrap fast.
        reml : bool, optional
            REML (True) or maximum likelihood (False); default: as this fit.

        >>> from lmmlib import datasets
        >>> fit = lmer("Reaction ~ Days + (Days | Subject)", datasets.sleepstudy())
        >>> round(fit.refit(reml=False).deviance, 4)
        1751.9393
        >>> again = fit.refit(fit.design.y)
        >>> bool(abs(again.deviance - fit.deviance) < 1e-8)
        True
        """
        if isinstance(newresp, (bool, np.bool_)):
            raise TypeError(
                f"refit({newresp}) is ambiguous: the first argument is a new response; "
                f"write refit(reml={newresp}) to change the criterion"
            )
        reml = self.reml if reml is None else _check_reml(reml)
        if newresp is None:
            model = LinearMixedModel(self.design, reml=reml, pls=self.pls)
        else:
            y = self._new_response(newresp)
            design = dataclasses.replace(self.design, y=y)
            model = LinearMixedModel(design, reml=reml,
                                     pls=self.pls.with_response(working_response(design)))
        return model.fit(start=self.theta, hessian=self.scaled_hessian, polish=newresp is None)

    @cached_property
    def scaled_hessian(self) -> np.ndarray:
        """Hessian of the criterion at the estimate, with respect to theta on the optimiser's
        scale (theta times ``pls.theta_scale``), by finite differences
        (:func:`lmmlib.optimizer.gradient_and_hessian`); :meth:`refit` starts from it."""
        theta_s = self.theta * self.pls.theta_scale
        with _single_blas_thread():
            return gradient_and_hessian(self._scaled_objective, theta_s, self.deviance,
                                        self.layout.lower)[1]

    def _gradient(self):
        """The analytic gradient for the optimiser, or None for finite differences: with a
        large sparse second block (:mod:`lmmlib.sparse_schur`) one criterion costs a sparse
        factorization, while the gradient needs the dense one, several times slower."""
        if self.pls.sparse_rest is not None:
            return None
        return self._scaled_value_and_gradient

    def _scaled_value_and_gradient(self, theta_s: np.ndarray):
        """:meth:`_scaled_objective` and its analytic gradient on the optimiser's scale
        (:func:`lmmlib.gradient.value_and_gradient`; the gradient is None where it has none)."""
        return value_and_gradient(self.pls, theta_s, self.reml, scaled=True)

    def _scaled_objective(self, theta_s: np.ndarray) -> float:
        """:meth:`objective` at ``theta = theta_s / pls.theta_scale``: the optimiser's scale."""
        return self.pls.objective(theta_s / self.pls.theta_scale, self.reml)

    def _new_response(self, newresp) -> np.ndarray:
        """``newresp`` as a float array in the order of the fit's rows, checked."""
        if isinstance(newresp, pd.DataFrame):
            if newresp.shape[1] != 1:
                raise LmmInputError(
                    f"newresp must be one column, got a DataFrame with {newresp.shape[1]} columns"
                )
            newresp = newresp.iloc[:, 0]
        if isinstance(newresp, pd.Series) and not newresp.index.equals(self.design.row_index):
            rows = self.design.row_index
            index = newresp.index
            if index.has_duplicates or not rows.isin(index).all():
                raise LmmInputError(
                    f"newresp is a Series of {len(newresp)} values whose index does not match "
                    f"the {len(rows)} rows of the fit; pass an array in the fit's row order"
                )
            newresp = newresp.reindex(rows)  # a full-length response loses the dropped rows
        kept = getattr(self.design, "data_rows", None)
        if (kept is not None and self.design.n_dropped and not isinstance(newresp, pd.Series)
                and np.ndim(newresp) == 1 and len(newresp) == self.nobs + self.design.n_dropped):
            newresp = np.asarray(newresp)[kept]  # lme4 takes the data's length, NAs included
        try:
            y = np.asarray(newresp, dtype=float)
        except (TypeError, ValueError) as exc:
            raise LmmInputError(f"newresp must be numeric: {exc}") from exc
        if y.shape != (self.nobs,):
            raise LmmInputError(
                f"newresp must hold one value per observation of the fit ({self.nobs}), "
                f"got shape {y.shape}"
            )
        n_bad = int(np.sum(~np.isfinite(y)))
        if n_bad:
            raise LmmInputError(f"newresp has {n_bad} missing or infinite values")
        if np.all(y == y[0]):
            raise LmmInputError("newresp is constant; a variance cannot be estimated")
        return y

    def simulate(self, nsim: int = 1, seed=None, **options) -> pd.DataFrame:
        """Responses simulated from the fitted model (lme4's ``simulate``), one column each.

        ``options`` (``use_u``, ``newdata``, ``theta``, ``beta``, ``sigma``,
        ``allow_new_levels``) are those of :func:`lmmlib.prediction.simulate`, which
        handles every call with them.

        Each column is ``y* = X beta + Z Lambda u* + e*`` with new spherical random effects
        ``u* ~ N(0, sigma^2 I)`` and residuals ``e* ~ N(0, sigma^2 I)`` at the estimates
        (beta, theta, sigma): the random effects of each level are drawn afresh, as lme4's
        default ``use.u = FALSE``.  ``seed`` is an int or a ``numpy.random.Generator``.

        Returns a DataFrame (nobs x nsim) with columns ``sim_1, ..., sim_nsim`` and the fit's
        row labels; :meth:`refit` takes a column.

        >>> from lmmlib import datasets
        >>> fit = lmer("Reaction ~ Days + (Days | Subject)", datasets.sleepstudy())
        >>> fit.simulate(3, seed=1).shape
        (180, 3)
        """
        if isinstance(nsim, bool) or not isinstance(nsim, (int, np.integer)) or nsim < 1:
            raise LmmInputError(f"nsim must be a positive integer, got {nsim!r}")
        if options or self.design.weights is not None or self.design.offset is not None:
            from lmmlib.prediction import simulate

            return simulate(self, nsim, seed, **options)
        rng = np.random.default_rng(seed)
        nsim = int(nsim)
        Y = np.repeat((self.design.X @ self.fixef.to_numpy())[:, None], nsim, axis=1)
        for term, T in zip(self.terms, self.layout.templates(self.theta)):
            u = rng.standard_normal((nsim, term.nlevels, len(term.names))) * self.sigma
            b = u @ T.T  # (nsim, levels, p)
            Y += np.einsum("ia,sia->is", term.X, b[:, term.codes, :])
        Y += rng.standard_normal(Y.shape) * self.sigma
        columns = [f"sim_{k + 1}" for k in range(nsim)]
        return pd.DataFrame(Y, index=self.design.row_index, columns=columns)

    # ----------------------------------------------------------------- estimates
    #: attributes computed on first use from the estimates (cleared by _set_estimates)
    _DERIVED = ("scaled_hessian", "solution", "fixef", "vcov", "se", "singular",
                "singular_groups", "varcorr", "sdcor", "ngroups", "ranef", "fitted", "residuals",
                "condvar")

    def _set_estimates(self, theta: np.ndarray) -> None:
        """The criterion and sigma at the estimate ``theta``; the rest follows on demand."""
        for name in self._DERIVED:
            self.__dict__.pop(name, None)
        factor = self.pls.factorize(theta)
        self._factor = factor
        self.theta = np.array(theta, dtype=float)
        self.theta_names = self.layout.names
        n, p = self.nobs, self.p
        if self.reml:
            self.deviance = profiled_reml_criterion(
                factor.logdet_L, factor.logdet_RX, factor.r2, n, p
            )
            self.sigma = float(np.sqrt(factor.r2 / (n - p)))
        else:
            self.deviance = profiled_deviance(factor.logdet_L, factor.r2, n)
            self.sigma = float(np.sqrt(factor.r2 / n))
        self.deviance -= self.log_det_w
        self.npar = self.layout.size + self.p + 1
        self.loglik = -0.5 * self.deviance
        self.aic = self.deviance + 2 * self.npar
        self.bic = float(self.deviance + np.log(self.nobs) * self.npar)

    @cached_property
    def solution(self):
        """The penalized least-squares solution at the estimates (:class:`lmmlib.pls.PLSSolution`):
        conditional modes u and b, beta, R_X."""
        return self.pls.solve(self.theta)

    @cached_property
    def fixef(self) -> pd.Series:
        """Fixed effects beta, by lme4's column name."""
        return pd.Series(self._factor.beta, index=self.fixef_names, name="Estimate")

    @cached_property
    def vcov(self) -> pd.DataFrame:
        """Covariance of the fixed effects, ``sigma^2 (R_X'R_X)^{-1}``."""
        RX_inv = np.linalg.inv(self._factor.RX)
        names = self.fixef_names
        return pd.DataFrame(self.sigma**2 * (RX_inv @ RX_inv.T), index=names, columns=names)

    @cached_property
    def se(self) -> pd.Series:
        """Standard errors of the fixed effects."""
        return pd.Series(np.sqrt(np.diag(self.vcov.to_numpy())), index=self.fixef_names,
                         name="Std. Error")

    @cached_property
    def singular(self) -> bool:
        """Whether the fit is on the boundary: some term's estimated covariance is singular.

        A random-effects covariance matrix ``sigma^2 T_k T_k'`` is singular when a standard
        deviation is (near) 0 or, for a term with several columns, a correlation is +-1 (more
        generally, when the columns' effects are linearly dependent).  The rule is lme4's
        ``isSingular``: some element of theta whose lower bound is 0 (a diagonal element of a
        template ``T_k``) is below 1e-4.  That number depends on the units of a predictor
        (with Days in seconds, theta for the Days slope is 86400 times smaller, and lme4 would
        call every such fit singular).  So for a column whose root mean square ``m`` lies
        outside [1e-3, 1e3] (the range outside which lme4 warns that predictors are on very
        different scales) theta is first multiplied by ``m / 1e3`` (or ``m / 1e-3``), as if the
        column had been rescaled to the nearest end of that range; for predictors on ordinary
        scales this is lme4's rule exactly.

        A singular fit is a legitimate estimate, but it says that the data cannot support the
        random-effects structure: look at :attr:`varcorr`, and consider a simpler term (no
        correlation, ``(x || g)``; no random slope; or no term for that factor).  Likelihood
        ratio tests and profile intervals for parameters at the boundary are conservative.
        """
        return bool(self.singular_groups)

    @cached_property
    def singular_groups(self) -> list[str]:
        """Labels (as in :attr:`varcorr`) of the terms whose covariance is singular."""
        theta = self.theta * _singularity_scale(self.terms, self.layout)
        labels = group_labels(self.terms)
        return [labels[k] for k in self.layout.singular_terms(theta, SINGULAR_TOL)]

    @cached_property
    def varcorr(self) -> pd.DataFrame:
        """Variances, covariances, SDs and correlations as R's ``as.data.frame(VarCorr())``."""
        return varcorr_frame(self.terms, self.layout.templates(self.theta), self.sigma)

    @cached_property
    def sdcor(self) -> pd.Series:
        """SDs and correlations by lme4's parameter name (``sd_Days|Subject``, ..., ``sigma``)."""
        templates = self.layout.templates(self.theta)
        return pd.Series(
            [*sdcor_values(self.terms, templates, self.sigma), self.sigma],
            index=[*sdcor_names(self.terms), "sigma"],
        )

    @cached_property
    def ngroups(self) -> dict[str, int]:
        """Number of levels of each grouping factor."""
        return {g: len(self.terms[ks[0]].levels) for g, ks in self._groups().items()}

    @cached_property
    def ranef(self) -> dict[str, pd.DataFrame]:
        """Conditional modes of the random effects: factor -> DataFrame (levels x terms)."""
        b = self.solution.b
        return {
            g: pd.DataFrame(
                np.hstack([b[k] for k in ks]),
                index=self.terms[ks[0]].levels,
                columns=[name for k in ks for name in self.terms[k].names],
            )
            for g, ks in self._groups().items()
        }

    @cached_property
    def fitted(self) -> pd.Series:
        """Fitted values ``X beta + Z b`` (conditional on the random effects)."""
        mu = self.design.X @ self.solution.beta
        if self.design.offset is not None:
            mu = mu + self.design.offset
        for term, b in zip(self.terms, self.solution.b):
            mu += random_effects_product(term.codes, term.X, b)
        return pd.Series(mu, index=self.design.row_index, name="fitted")

    @cached_property
    def residuals(self) -> pd.Series:
        """Residuals ``y - fitted``."""
        return pd.Series(self.design.y - self.fitted.to_numpy(), index=self.design.row_index,
                         name="residuals")

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
        self, newdata: pd.DataFrame | None = None, re: bool = True, allow_new_levels: bool = False,
        *, re_form=None, interval: str | None = None, level: float = 0.95, se_fit: bool = False,
    ) -> pd.Series | pd.DataFrame:
        """Predictions ``o + X beta + Z b`` (``re=True``) or the population-level ``o + X beta``.

        ``re_form`` is lme4's ``re.form``: None (all random effects), ``"~0"`` (none, as
        ``re=False``), or a formula naming some of the model's terms, e.g.
        ``"~(1 | Subject)"`` (:func:`lmmlib.prediction.linear_predictor`).  A row of
        ``newdata`` with a missing predictor gets NaN (lme4's NA).  A level of a grouping
        factor not seen in the fit raises an error naming it, unless
        ``allow_new_levels=True``, in which case its random effect is 0 (lme4's convention).
        With ``interval="confidence"`` or ``"prediction"`` (at ``level``) or ``se_fit=True``
        the result is a DataFrame (``fit``, ``se_fit``, ``lwr``, ``upr``); the formulas and
        what they ignore are in :func:`lmmlib.inference.predict_intervals`.
        """
        if interval is not None or se_fit:
            if re_form is not None:
                raise LmmInputError(
                    "predict: intervals and se_fit are computed for re=True (all random effects) "
                    "or re=False (none); re_form with a subset of terms is not supported there"
                )
            from lmmlib.inference import predict_intervals

            return predict_intervals(self, newdata, re, allow_new_levels, interval, level,
                                     se_fit)
        from lmmlib.prediction import linear_predictor

        return linear_predictor(self, newdata, "~0" if not re else re_form, allow_new_levels)

    @staticmethod
    def _raise_new_level(newdata: pd.DataFrame, group: str, codes: np.ndarray):
        parts = group_components(group)
        missing = newdata[parts].isna().any(axis=1).to_numpy()
        if missing.any():
            rows = newdata.index[missing]
            raise LmmInputError(
                f"newdata has {len(rows)} row(s) with a missing value of grouping factor "
                f"{group!r} (first: row {rows[0]!r}); fill or drop them, or use "
                "allow_new_levels=True to predict with a random effect of 0 there"
            )
        row = int(np.flatnonzero(codes < 0)[0])
        level = ":".join(str(newdata[part].iloc[row]) for part in parts)
        count = int(np.sum(codes < 0))
        raise LmmInputError(
            f"newdata has a level of grouping factor {group!r} not seen in the fit: "
            f"{level!r} (row {newdata.index[row]!r}; {count} row(s) with new levels). "
            "Use allow_new_levels=True to predict with a random effect of 0 for new levels."
        )

    # ----------------------------------------------------------------- lme4's extractors
    def coef(self) -> dict[str, pd.DataFrame]:
        """Per-level coefficients, fixed plus random effects (lme4's ``coef()``;
        :func:`lmmlib.effects.coef`)."""
        from lmmlib.effects import coef

        return coef(self)

    def resid(self, type: str = "response", scaled: bool = False) -> pd.Series:
        """Residuals of ``type`` "response" or "pearson", optionally divided by sigma
        (lme4's ``residuals(fit, type, scaled)``; :func:`lmmlib.diagnostics.residuals`)."""
        from lmmlib.diagnostics import residuals

        return residuals(self, type=type, scaled=scaled)

    def hatvalues(self) -> pd.Series:
        """Leverages, the diagonal of lme4's hat matrix (:func:`lmmlib.diagnostics.hatvalues`)."""
        from lmmlib.diagnostics import hatvalues

        return hatvalues(self)

    def cooks_distance(self) -> pd.Series:
        """Cook's distances as lme4's ``cooks.distance`` (:mod:`lmmlib.diagnostics`)."""
        from lmmlib.diagnostics import cooks_distance

        return cooks_distance(self)

    # ----------------------------------------------------------------- inference
    def confint(self, method: str = "wald", level: float = 0.95, ddf=None) -> pd.DataFrame:
        """Confidence intervals, rows named as lme4 (``sd_(Intercept)|Subject``, ``sigma``, ...).

        ``"wald"``: ``beta +- z_{1-a/2} se`` for the fixed effects, NaN for the variance
        parameters (as lme4); with ``ddf`` ("satterthwaite", "kenward-roger", "residual") the
        t quantile with those df (:func:`lmmlib.inference.confint_wald`).  ``"profile"``:
        likelihood-profile intervals from :func:`lmmlib.profile.profile_confint`.
        """
        if not 0 < level < 1:
            raise LmmInputError(f"level must be between 0 and 1, got {level}")
        if ddf is not None:
            if method != "wald":
                raise LmmInputError(f"ddf applies to method='wald' only, not {method!r}")
            from lmmlib.inference import confint_wald

            return confint_wald(self, level, ddf)
        if method == "profile":
            from lmmlib.profile import profile_confint

            return profile_confint(self, level)
        if method != "wald":
            raise LmmInputError(f"method must be 'wald' or 'profile', got {method!r}")
        z = stats.norm.ppf(0.5 + level / 2)
        lo = np.r_[np.full(len(self.sdcor), np.nan), self.fixef - z * self.se]
        hi = np.r_[np.full(len(self.sdcor), np.nan), self.fixef + z * self.se]
        return pd.DataFrame(
            {percent_label(0.5 - level / 2): lo, percent_label(0.5 + level / 2): hi},
            index=[*self.sdcor.index, *self.fixef_names],
        )

    def coef_table(self, ddf=None) -> pd.DataFrame:
        """Fixed effects with Std. Error, df, t value and Pr(>|t|) for ``ddf`` one of None
        (lme4's table, no p-values), "satterthwaite", "kenward-roger", "residual"
        (:func:`lmmlib.inference.coef_table`)."""
        from lmmlib.inference import coef_table

        return coef_table(self, ddf)

    def summary(self, ddf=None):
        """A printable summary laid out like lme4's ``print(summary(fit))``
        (:class:`lmmlib.summary.LmmSummary`).

        The default, ``ddf=None``, is lme4's: t values without df or p-values, because the
        null distribution of t is not exactly known.  ``ddf="satterthwaite"`` (lmerTest's
        default; any size, REML or ML) or ``"kenward-roger"`` (pbkrtest's; REML, better for
        few groups, cost cubic in the number of random effects) adds df and Pr(>|t|), as
        lmerTest's summary; see :mod:`lmmlib.inference`.
        """
        from lmmlib.summary import LmmSummary

        return LmmSummary(self, ddf=ddf)

    def __repr__(self) -> str:
        crit = "REML criterion" if self.reml else "deviance"
        value = getattr(self, "deviance", None)
        shown = "unfitted" if value is None else f"{crit} {value:.4f}"
        return f"<LinearMixedModel {self.design.formula!r}, {shown}>"


def _check_reml(reml) -> bool:
    """``reml`` must be a bool (``reml="yes"`` or ``reml=0.5`` is a mistake, not a choice)."""
    if not isinstance(reml, (bool, np.bool_)):
        raise LmmInputError(f"reml must be True or False, got {reml!r}")
    return bool(reml)


def _singularity_scale(terms, layout) -> np.ndarray:
    """Per theta entry, the factor that puts the columns of each term on lme4's ordinary
    scales before its isSingular rule: ``m / clip(m, 1e-3, 1e3)`` for a column of root mean
    square ``m`` (1 for columns in that range and for zero columns)."""
    factors = []
    for term in terms:
        rms = np.sqrt(np.mean(np.asarray(term.X, dtype=float) ** 2, axis=0))
        clipped = np.clip(rms, *WELL_SCALED)
        factors.append(np.where(rms > 0, rms / np.where(rms > 0, clipped, 1.0), 1.0))
    return layout.row_values(factors)
