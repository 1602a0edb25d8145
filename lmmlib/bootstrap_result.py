"""The result of :func:`lmmlib.bootstrap`: the replicates, intervals and bands.

:class:`BootstrapResult` holds the replicate table and computes from it the bootstrap standard
errors, the bias, the percentile, basic, normal and BCa intervals (Davison and Hinkley 1997,
chapter 5; Efron and Tibshirani 1993, chapter 14), and the bands of the population line and of
each subject's line.  The schemes that produce the replicates are in :mod:`lmmlib.bootstrap`.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import stats

from lmmlib.errors import ConvergenceWarning, LmmInputError, SingularFitWarning
from lmmlib.remat import theta_indices
from lmmlib.summary import percent_label

if TYPE_CHECKING:
    from lmmlib.bootstrap import _Replicates

__all__ = ["BootstrapResult", "BootstrapWarning", "METHODS"]

METHODS = ("percentile", "basic", "normal", "bca")


class BootstrapWarning(UserWarning):
    """Some replicates failed, did not converge or were singular (see ``result.counts``)."""


# ====================================================================== the result
@dataclasses.dataclass(repr=False, eq=False)
class BootstrapResult:
    """The replicates of a bootstrap and what is computed from them.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per replicate (index ``replicate`` = 1..n), one column per value of the
        statistic; a failed replicate's row is NaN (it is counted, never dropped).
    t0 : pandas.Series
        The statistic on the original fit.
    estimates : pandas.DataFrame
        The default statistic (SDs, correlations, sigma, fixed effects) of every replicate,
        whatever ``statistic`` was; the band helpers use it.
    theta : numpy.ndarray (n, k)
        Each replicate's theta.
    status : pandas.DataFrame
        Per replicate: ``converged``, ``singular``, ``failed``, ``path`` ("batched", "refit",
        or the error of a failed replicate) and ``criterion`` (the replicate's REML criterion
        or deviance at its estimates).
    kind, n, seed, level, group, m
        The arguments of :func:`bootstrap` (``seed`` as used).
    """

    fit: object
    kind: str
    n: int
    seed: int
    level: float
    t0: pd.Series
    table: pd.DataFrame
    estimates: pd.DataFrame
    theta: np.ndarray
    status: pd.DataFrame
    statistic: Callable
    group: str | None
    m: int | None
    _replicates: _Replicates

    # -------------------------------------------------------------- counts
    @property
    def counts(self) -> dict[str, int]:
        """Replicates that failed, did not converge (among those fitted) or were singular."""
        s = self.status
        return {"replicates": int(self.n), "failed": int(s["failed"].sum()),
                "not_converged": int((~s["converged"] & ~s["failed"]).sum()),
                "singular": int(s["singular"].sum())}

    @property
    def n_failed(self) -> int:
        return self.counts["failed"]

    @property
    def n_not_converged(self) -> int:
        return self.counts["not_converged"]

    @property
    def n_singular(self) -> int:
        return self.counts["singular"]

    def _valid(self) -> pd.DataFrame:
        if self.n_failed:
            warnings.warn(
                f"{self.n_failed} of {self.n} replicates failed and are left out of the "
                "intervals (see result.status)", BootstrapWarning, stacklevel=3)
        return self.table[~self.status["failed"].to_numpy()]

    # -------------------------------------------------------------- summaries
    @property
    def std(self) -> pd.Series:
        """Bootstrap standard errors: the SD of each column over the replicates (ddof 1)."""
        return self._valid().std(ddof=1).rename("std. error")

    @property
    def bias(self) -> pd.Series:
        """Bootstrap estimate of bias: mean of the replicates minus ``t0``."""
        return (self._valid().mean() - self.t0).rename("bias")

    def summary(self) -> pd.DataFrame:
        """Original value, bias, bootstrap standard error, like R's ``print(bootMer(...))``."""
        return pd.DataFrame({"original": self.t0, "bias": self.bias,
                             "std. error": self.std})

    def confint(self, method: str = "percentile", level: float | None = None) -> pd.DataFrame:
        """Bootstrap confidence intervals, columns named as ``fit.confint()`` (``2.5 %``).

        With ``t*`` the replicates, ``t0`` the estimate, ``a = (1 - level)/2`` and ``q_p`` the
        p-quantile of ``t*`` (Davison and Hinkley 1997, section 5.2-5.3):

        - ``"percentile"``: ``(q_a, q_{1-a})``;
        - ``"basic"``: ``(2 t0 - q_{1-a}, 2 t0 - q_a)``;
        - ``"normal"``: ``t0 - bias -+ z_{1-a} sd(t*)`` (bias = mean(t*) - t0);
        - ``"bca"`` (cluster bootstrap only): the percentile interval at adjusted levels
          ``Phi(z0 + (z0 + z_a)/(1 - acc (z0 + z_a)))`` with ``z0 = Phi^{-1}(#{t* < t0}/n)``
          and the acceleration ``acc`` from the jackknife over the groups, leaving each out
          in turn (Efron and Tibshirani 1993, chapter 14).  Implemented for the cluster
          bootstrap only; the acceleration belongs to the estimator and the data and could be
          computed the same way for a parametric bootstrap (Davison and Hinkley 1997, section
          5.3), but lmmlib does not offer that.

        >>> from lmmlib import bootstrap, datasets, lmer
        >>> fit = lmer("Reaction ~ Days + (Days | Subject)", datasets.sleepstudy())
        >>> bootstrap(fit, n=100, seed=2).confint("normal").shape
        (6, 2)
        """
        level = self.level if level is None else level
        if not 0 < level < 1:
            raise LmmInputError(f"level must be between 0 and 1, got {level!r}")
        if method not in METHODS:
            raise LmmInputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        a = (1 - level) / 2
        t = self._valid()
        t0 = self.t0.to_numpy()
        if method == "percentile":
            lo, hi = t.quantile(a).to_numpy(), t.quantile(1 - a).to_numpy()
        elif method == "basic":
            lo, hi = 2 * t0 - t.quantile(1 - a).to_numpy(), 2 * t0 - t.quantile(a).to_numpy()
        elif method == "normal":
            z, sd = stats.norm.ppf(1 - a), t.std(ddof=1).to_numpy()
            centre = 2 * t0 - t.mean().to_numpy()
            lo, hi = centre - z * sd, centre + z * sd
        else:
            lo, hi = self._bca(t, t0, a)
        return pd.DataFrame({percent_label(a): lo, percent_label(1 - a): hi},
                            index=self.table.columns)

    def _bca(self, t: pd.DataFrame, t0: np.ndarray, a: float):
        if self.kind != "cluster":
            raise LmmInputError(
                f"BCa intervals are offered for the cluster bootstrap only (its jackknife "
                f"leaves out one group at a time); this is a {self.kind} bootstrap: use "
                "'percentile', 'basic' or 'normal'")
        jack = self.jackknife()
        centred = jack.mean().to_numpy() - jack.to_numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            acc = (centred**3).sum(0) / (6 * ((centred**2).sum(0)) ** 1.5)
        acc = np.nan_to_num(acc)
        values = t.to_numpy()
        prop = (values < t0).mean(axis=0) + 0.5 * (values == t0).mean(axis=0)
        z0 = stats.norm.ppf(np.clip(prop, 1 / (2 * len(values)), 1 - 1 / (2 * len(values))))
        out = []
        for alpha in (a, 1 - a):
            z = z0 + stats.norm.ppf(alpha)
            adjusted = stats.norm.cdf(z0 + z / (1 - acc * z))
            out.append(np.array([np.nanquantile(values[:, i], adjusted[i])
                                 for i in range(values.shape[1])]))
        return out

    def jackknife(self) -> pd.DataFrame:
        """The statistic with each level of the cluster factor left out in turn (one row per
        left-out level); used for BCa's acceleration."""
        if "_jackknife" not in self.__dict__:
            from lmmlib.bootstrap import _as_series, _call, _subset_design
            from lmmlib.lmm import LinearMixedModel

            fit, rep = self.fit, self._replicates
            rows = {}
            for j, label in enumerate(rep.cluster_levels):
                keep = np.flatnonzero(rep.cluster_codes != j)
                design = _subset_design(fit.design, keep, [None] * len(fit.terms))
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    warnings.simplefilter("ignore", SingularFitWarning)
                    loo = LinearMixedModel(design, reml=fit.reml).fit(start=fit.theta)
                rows[label] = _as_series(_call(self.statistic, loo, f"leaving out {label}"),
                                         len(self.t0), f"leaving out {label}").to_numpy()
            self.__dict__["_jackknife"] = pd.DataFrame.from_dict(
                rows, orient="index", columns=self.table.columns)
        return self.__dict__["_jackknife"]

    # -------------------------------------------------------------- bands
    def population_band(self, newdata: pd.DataFrame, level: float | None = None,
                        method: str = "percentile") -> pd.DataFrame:
        """The band of the population line ``x'beta`` at the rows of ``newdata``.

        For each replicate, ``x'beta*`` at each row; returns ``newdata`` with columns
        ``fit`` (``x'beta`` of the fit, as ``OLS.predict``), ``median``, ``lower``,
        ``upper`` (``method``:
        percentile, basic or normal over the replicates).
        """
        X = self.fit.design.new_fixed_matrix(newdata)
        beta = self.estimates[self.fit.fixef_names].to_numpy()
        lines = beta @ X.T  # (n, rows)
        return self._band(newdata, X @ self.fit.fixef.to_numpy(), lines, level, method)

    def subject_band(self, newdata: pd.DataFrame, level: float | None = None,
                     draw: bool = True) -> pd.DataFrame:
        """The band of each subject's line ``x'(beta + b_j)`` at the rows of ``newdata``.

        For every replicate, subject j's line is computed from subject j's *original* data
        with that replicate's estimates (beta*, theta*, sigma*): its random effects have the
        conditional distribution ``b_j | y_j ~ N(T u_j, sigma*^2 T M_j^{-1} T')``, ``M_j =
        T'Z_j'Z_j T + I``, ``u_j = M_j^{-1} T'Z_j'(y_j - X_j beta*)`` (T the template at
        theta*).  With ``draw`` (default) one value of ``b_j`` is drawn from it per replicate,
        so the band covers the subject's line given its data, with the uncertainty of the
        parameters propagated; without, ``b_j`` is the conditional mode and the band shows the
        parameters' part only.  This definition is the same for every scheme, and it is why a
        subject that a cluster replicate did not draw still has a line in that replicate.
        One random-effects term only.
        """
        fit = self.fit
        if len(fit.terms) != 1:
            raise LmmInputError("subject_band is implemented for models with one random-effects "
                                "term")
        term = fit.terms[0]
        X_new = fit.design.new_fixed_matrix(newdata)
        [(codes_new, Z_new)] = fit.design.new_random_terms(newdata)
        if np.any(codes_new < 0):
            raise LmmInputError(f"newdata has levels of {term.group!r} that are not in the fit")
        ok = ~self.status["failed"].to_numpy()
        beta = self.estimates[fit.fixef_names].to_numpy()[ok]
        sigma = self.estimates["sigma"].to_numpy()[ok]
        theta = self.theta[ok]
        q, J = len(term.names), term.nlevels
        T = np.zeros((len(theta), q, q))
        T[:, *theta_indices(q)] = theta
        Z, codes = np.asarray(term.X, dtype=float), np.asarray(term.codes)
        A = np.zeros((J, q, q))
        np.add.at(A, codes, np.einsum("ia,ib->iab", Z, Z))
        resid = fit.design.y[None, :] - beta @ fit.design.X.T  # (n, rows)
        Zr = np.zeros((len(theta), J, q))
        for a in range(q):
            Zr[:, :, a] = np.apply_along_axis(
                lambda r: np.bincount(codes, weights=Z[:, a] * r, minlength=J), 1, resid)
        Tt = np.swapaxes(T, 1, 2)[:, None]
        M = Tt @ A[None] @ T[:, None] + np.eye(q)
        u = np.linalg.solve(M, Tt @ Zr[..., None])[..., 0]  # (n, J, q)
        if draw:
            rng = np.random.default_rng([self.seed, 1])
            L = np.linalg.cholesky(np.linalg.inv(M))
            u = u + sigma[:, None, None] * (L @ rng.standard_normal(u.shape)[..., None])[..., 0]
        b = np.einsum("rab,rjb->rja", T, u)  # (n, J, q)
        lines = beta @ X_new.T + np.einsum("ia,ria->ri", Z_new, b[:, codes_new, :])
        b_hat = fit.ranef[term.group].to_numpy()[codes_new]
        estimate = X_new @ fit.fixef.to_numpy() + np.einsum("ia,ia->i", Z_new, b_hat)
        return self._band(newdata, estimate, lines, level, "percentile")

    def _band(self, newdata, estimate, lines, level, method) -> pd.DataFrame:
        level = self.level if level is None else level
        a = (1 - level) / 2
        lines = lines[np.isfinite(lines).all(axis=1)]
        lo, med, hi = np.quantile(lines, [a, 0.5, 1 - a], axis=0)
        if method == "basic":
            lo, hi = 2 * estimate - hi, 2 * estimate - lo
        elif method == "normal":
            z, sd = stats.norm.ppf(1 - a), lines.std(axis=0, ddof=1)
            centre = 2 * estimate - lines.mean(axis=0)
            lo, hi = centre - z * sd, centre + z * sd
        elif method != "percentile":
            raise LmmInputError(f"band method must be percentile, basic or normal, not {method!r}")
        out = newdata.copy()
        out["fit"], out["median"], out["lower"], out["upper"] = estimate, med, lo, hi
        return out

    def __repr__(self) -> str:
        c = self.counts
        return (f"<BootstrapResult {self.kind}, {self.n} replicates (failed {c['failed']}, "
                f"not converged {c['not_converged']}, singular {c['singular']}), "
                f"seed {self.seed}>")
