"""The bootstrap of a linear mixed model: parametric, cluster, residual and subsample schemes.

A bootstrap estimates the sampling distribution of an estimate by computing it again on many
data sets drawn so as to mimic how the data arose (Efron and Tibshirani 1993; Davison and
Hinkley 1997).  For clustered data the question is what to redraw:

``"parametric"``
    Simulate new responses from the fitted model, random effects included
    (``y* = X beta + Z b* + e*``, :meth:`~lmmlib.lmm.LinearMixedModel.simulate`), and refit:
    lme4's ``bootMer(type = "parametric", use.u = FALSE)``.  It trusts the model's normal
    distributions and its covariance structure.
``"cluster"``
    Draw whole groups (subjects) with replacement and refit: the groups are the independent
    units, so their within-group dependence is kept as it is (Field and Welsh 2007).  A group
    drawn twice becomes two groups (its copies get the labels ``"308"``, ``"308#2"``, ...).
``"residual"``
    lme4's semiparametric ``bootMer(type = "semiparametric", use.u = TRUE)``: the fitted values
    ``X beta + Z b`` (with the estimated random effects *kept fixed*) plus residuals drawn with
    replacement.  It conditions on this study's subjects and on their estimated, shrunken
    effects: it answers "what if these subjects were measured again", not "what if new subjects
    were drawn".  Its spread of the fixed effects misses the between-subject variation, and it
    is biased: the conditional residuals are deflated (their mean square is below
    ``sigma^2``), so ``sigma`` is biased low, and the effects are held at their shrunken
    modes, so the random-effect SDs are biased towards 0 (Morris 2002; Carpenter, Goldstein
    and Rasbash 2003 reflate the residuals).  Offered for comparison with lme4.
``"subsample"``
    The scheme of the article this book grew from: ``m`` rows drawn with replacement from all
    rows, whatever their subject (by default ``m = n/4``, "resampling with replacement and
    randomly removing 75% of samples").  It is an m-out-of-n bootstrap of rows (Bickel, Goetze
    and van Zwet 1997), drawn *with* replacement; it is not the subsampling of Politis and
    Romano, which draws without replacement.  It ignores the clustering: for independent rows
    its spread would be ``sqrt(n/m)`` times too wide, but for clustered data the missing
    between-subject variation offsets part of that, by a factor that depends on the data, so
    no rescaling mends it.  Kept for chapter 4's comparison.

Replicates are refitted from the original fit's theta and reuse its parsed model: only the
response (parametric, residual) or the rows (cluster, subsample) change.  For a model with one
random-effects term and the default statistic, all replicates are fitted at once
(:mod:`lmmlib.batch`); replicates that the batched Newton iterations do not settle, and every
replicate of other models, are refitted one by one by the engine.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy import stats

from lmmlib.batch import BatchedProblems, supports
from lmmlib.errors import ConvergenceWarning, LmmInputError, SingularFitWarning
from lmmlib.remat import sdcor_names, theta_indices
from lmmlib.summary import percent_label

__all__ = ["bootstrap", "bootstrap_many", "BootstrapResult", "BootstrapWarning", "KINDS", "default_statistic"]

KINDS = ("parametric", "cluster", "residual", "subsample")
METHODS = ("percentile", "basic", "normal", "bca")


class BootstrapWarning(UserWarning):
    """Some replicates failed, did not converge or were singular (see ``result.counts``)."""


def default_statistic(fit) -> pd.Series:
    """The SDs and correlations of the random effects, sigma, and the fixed effects, named as
    the rows of ``fit.confint()`` (``sd_(Intercept)|Subject``, ..., ``sigma``,
    ``(Intercept)``, ``Days``).

    >>> from lmmlib import datasets, lmer
    >>> fit = lmer("Reaction ~ Days + (Days | Subject)", datasets.sleepstudy())
    >>> default_statistic(fit).index.tolist()[-3:]
    ['sigma', '(Intercept)', 'Days']
    """
    return pd.concat([fit.sdcor, fit.fixef]).rename(None)


# ====================================================================== the function
def bootstrap(fit, n: int = 1000, kind: str = "parametric", seed=None,
              statistic: Callable | None = None, level: float = 0.95, *,
              group: str | None = None, m: int | None = None,
              batched: bool = True) -> BootstrapResult:
    """Bootstrap a fitted linear mixed model: ``n`` replicate data sets, each refitted.

    Parameters
    ----------
    fit : lmmlib.LinearMixedModel
        A fit from :func:`lmmlib.lmer`.
    n : int
        Number of replicates (lme4's ``nsim``).
    kind : {"parametric", "cluster", "residual", "subsample"}
        How replicates are drawn (see the module's docstring):

        - ``"parametric"``: ``y* = X beta + Z Lambda u* + e*`` with ``u*, e* ~ N(0, sigma^2 I)``
          at the estimates, as lme4's ``bootMer`` (Bates et al. 2015, section 5.2);
        - ``"cluster"``: the levels of ``group`` drawn with replacement, all their rows kept;
        - ``"residual"``: ``y* = X beta + Z b + e*``, ``b`` the conditional modes held fixed
          and ``e*`` drawn with replacement from the residuals (conditions on ``b``);
        - ``"subsample"``: ``m`` rows drawn with replacement from all rows.
    seed : int, numpy.random.Generator or None
        The same int gives the same replicates, bit for bit; ``None`` draws a fresh seed and
        records it in ``result.seed``.
    statistic : callable, optional
        ``statistic(fit)`` for a fitted replicate, returning a number, an array or a pandas
        Series (its index names the columns); it must return the same length for every
        replicate.  Default: :func:`default_statistic` (named as ``fit.confint()``'s rows).
        A statistic of predictions on a grid (``lambda f: f.predict(grid, re=False)``)
        gives bands.
    level : float
        Default confidence level of :meth:`BootstrapResult.confint`.
    group : str, optional
        ``"cluster"``: the grouping factor whose levels are drawn (default: the only one).
    m : int, optional
        ``"subsample"``: rows per replicate (default ``nobs // 4``).
    batched : bool
        Use the batched fast path where it applies (one random-effects term, default
        statistic); ``False`` refits every replicate with the engine (same estimates).

    Returns
    -------
    BootstrapResult
        ``table`` (one row per replicate), ``t0`` (the statistic on the data), ``confint``
        (percentile, basic, normal; BCa for the cluster bootstrap), ``counts`` of failed,
        non-converged and singular replicates, and band helpers.

    Examples
    --------
    >>> from lmmlib import datasets, lmer
    >>> fit = lmer("Reaction ~ Days + (Days | Subject)", datasets.sleepstudy())
    >>> boot = bootstrap(fit, n=200, seed=1)
    >>> boot.table.shape
    (200, 6)
    >>> ci = boot.confint()
    >>> list(ci.columns), bool(ci.loc["Days", "2.5 %"] < 10.47 < ci.loc["Days", "97.5 %"])
    (['2.5 %', '97.5 %'], True)
    """
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % 2**63)
    return _bootstrap([fit], [seed], n, kind, statistic, level, group, m, batched)[0]


def bootstrap_many(fits, n: int = 1000, kind: str = "parametric", seed=None,
                   level: float = 0.95, *, group: str | None = None,
                   m: int | None = None) -> list[BootstrapResult]:
    """:func:`bootstrap` of several fits of one model to data sets that differ only in the
    response (a simulation study), with all their replicates fitted in one batch.

    Result ``s`` equals ``bootstrap(fits[s], n, kind, seed=results[s].seed)`` (the default
    statistic); the per-fit seeds are drawn from ``seed``.  Fits whose rows or model differ
    are bootstrapped one after the other.

    >>> from lmmlib import datasets, lmer
    >>> fit = lmer("Reaction ~ Days + (Days | Subject)", datasets.sleepstudy())
    >>> fits = [fit.refit(y) for _, y in fit.simulate(3, seed=1).items()]
    >>> [b.n for b in bootstrap_many(fits, n=50, seed=2)]
    [50, 50, 50]
    """
    fits = list(fits)
    if not fits:
        raise LmmInputError("bootstrap_many needs at least one fit")
    children = np.random.SeedSequence(seed).spawn(len(fits))
    seeds = [int(c.generate_state(1, np.uint64)[0] % 2**63) for c in children]
    if all(_same_design(fits[0], f) for f in fits[1:]):
        return _bootstrap(fits, seeds, n, kind, None, level, group, m, True)
    return [_bootstrap([f], [s], n, kind, None, level, group, m, True)[0]
            for f, s in zip(fits, seeds)]


def _same_design(a, b) -> bool:
    """Whether two fits share X, the random-effects terms and the criterion (only y differs)."""
    if a.reml != b.reml or len(a.terms) != len(b.terms) or a.design.X.shape != b.design.X.shape:
        return False
    return np.array_equal(a.design.X, b.design.X) and all(
        np.array_equal(s.codes, t.codes) and np.array_equal(s.X, t.X)
        for s, t in zip(a.terms, b.terms))


def _bootstrap(fits, seeds, n, kind, statistic, level, group, m, batched):
    """The bootstraps of ``fits`` (same design), replicates of all fitted in one batch."""
    for fit in fits:
        n = _check_arguments(fit, n, kind, statistic, level)
    stat = default_statistic if statistic is None else statistic
    reps = [_Replicates(fit, kind, n, np.random.default_rng(seed), group=group, m=m)
            for fit, seed in zip(fits, seeds)]
    t0s = [_as_series(_call(stat, fit, "the original fit"), None, "the original fit")
           for fit in fits]
    fast = batched and statistic is None and supports(fits[0])
    out = _batch(reps) if fast else None
    results = []
    for s, (fit, seed, rep, t0) in enumerate(zip(fits, seeds, reps, t0s)):
        names = t0.index
        rows, status, estimates, thetas = {}, {}, {}, {}
        todo = np.arange(n)
        if fast:
            part = {key: value[s * n:(s + 1) * n] for key, value in out.items()}
            for b in np.flatnonzero(part["ok"]):
                rows[b] = estimates[b] = _estimates_from_batch(fit, part, b).to_numpy()
                thetas[b] = part["theta"][b]
                status[b] = (True, bool(part["singular"][b]), False, "batched",
                             float(part["criterion"][b]))
            todo = np.flatnonzero(~part["ok"])
        for b in todo:
            try:
                refit = rep.fit(b)
            except (np.linalg.LinAlgError, LmmInputError, ValueError, FloatingPointError) as exc:
                rows[b] = np.full(len(names), np.nan)
                estimates[b] = np.full(_n_default(fit), np.nan)
                thetas[b] = np.full(len(fit.theta), np.nan)
                status[b] = (False, False, True, f"failed: {exc}", np.nan)
                continue
            value = _as_series(_call(stat, refit, f"replicate {b + 1}"), len(names),
                               f"replicate {b + 1}")
            rows[b] = value.to_numpy(dtype=float)
            estimates[b] = default_statistic(refit).to_numpy(dtype=float)
            thetas[b] = refit.theta
            status[b] = (bool(refit.optinfo["converged"]), bool(refit.singular), False,
                         "refit", float(refit.deviance))
        index = pd.RangeIndex(1, n + 1, name="replicate")
        table = pd.DataFrame(np.array([rows[b] for b in range(n)]), index=index, columns=names)
        est_table = pd.DataFrame(np.array([estimates[b] for b in range(n)]), index=index,
                                 columns=default_statistic(fit).index)
        status_frame = pd.DataFrame([status[b] for b in range(n)], index=index,
                                    columns=["converged", "singular", "failed", "path",
                                             "criterion"])
        results.append(BootstrapResult(
            fit=fit, kind=kind, n=n, seed=seed, level=level, t0=t0, table=table,
            estimates=est_table, theta=np.array([thetas[b] for b in range(n)]),
            status=status_frame, statistic=stat, group=rep.group, m=rep.m, _replicates=rep))
    return results


def _batch(reps) -> dict:
    """All replicates of all fits (one design) fitted at once (lmmlib.batch)."""
    fit0, kind = reps[0].original, reps[0].kind
    parts = [rep.batch_parts() for rep in reps]
    Y = np.hstack([Y for _, Y in parts])
    if kind in ("parametric", "residual"):
        problems = BatchedProblems.responses(fit0, Y)
    elif kind == "cluster":
        problems = BatchedProblems.levels(fit0, np.vstack([d for d, _ in parts]), Y)
    else:
        problems = BatchedProblems.row_weights(fit0, np.vstack([w for w, _ in parts]), Y)
    start = np.vstack([np.tile(rep.original.theta, (rep.n, 1)) for rep in reps])
    out = problems.minimize(fit0, start)
    # replicates the engine would refuse (too few levels) are left to it, to fail as they should
    out["ok"] &= np.concatenate([rep.identifiable() for rep in reps])
    return out


def _n_default(fit) -> int:
    return len(fit.sdcor) + len(fit.fixef)


def _check_arguments(fit, n, kind, statistic, level) -> int:
    from lmmlib.lmm import LinearMixedModel

    if not isinstance(fit, LinearMixedModel):
        raise LmmInputError(
            f"bootstrap needs a fitted linear mixed model (lmmlib.lmer), got {type(fit).__name__}"
        )
    if not getattr(fit, "terms", None):
        raise LmmInputError("the fit has no random-effects terms (no groups) to bootstrap")
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 1:
        raise LmmInputError(f"n, the number of replicates, must be an integer >= 1, got {n!r}")
    if kind not in KINDS:
        raise LmmInputError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    if statistic is not None and not callable(statistic):
        raise LmmInputError(
            f"statistic must be a function of a fit, got {type(statistic).__name__}")
    if not 0 < level < 1:
        raise LmmInputError(f"level must be between 0 and 1, got {level!r}")
    return int(n)


def _call(statistic, fit, where: str):
    try:
        return statistic(fit)
    except Exception as exc:  # the user's function: name where it failed
        raise LmmInputError(f"the statistic failed on {where}: {type(exc).__name__}: {exc}") \
            from exc


def _as_series(value, length: int | None, where: str) -> pd.Series:
    if isinstance(value, pd.Series):
        series = value.astype(float)
    else:
        try:
            array = np.atleast_1d(np.asarray(value, dtype=float))
        except (TypeError, ValueError) as exc:
            raise LmmInputError(f"the statistic must return numbers; on {where}: {exc}") from exc
        if array.ndim != 1:
            raise LmmInputError(
                f"the statistic must return a number or a vector; on {where} it returned an "
                f"array of shape {array.shape}")
        series = pd.Series(array, index=[f"t{k + 1}" for k in range(len(array))])
    if length is not None and len(series) != length:
        raise LmmInputError(
            f"the statistic returned {len(series)} values on {where} but {length} on the "
            "original fit; it must return the same number of values for every replicate")
    return series


def _estimates_from_batch(fit, out: dict, b: int) -> pd.Series:
    """The default statistic of replicate b of the batched path (one term)."""
    sigma = out["sigma"][b]
    q = len(fit.terms[0].names)
    T = np.zeros((q, q))
    T[theta_indices(q)] = out["theta"][b]
    cov = sigma**2 * (T @ T.T)
    sd = np.sqrt(np.diag(cov))
    rows, cols = theta_indices(q)
    values = [sd[r] if r == c else cov[r, c] / (sd[r] * sd[c]) for r, c in zip(rows, cols)]
    return pd.Series([*values, sigma, *out["beta"][b]],
                     index=[*sdcor_names(fit.terms), "sigma", *fit.fixef_names])


# ====================================================================== drawing replicates
class _Replicates:
    """The n replicate data sets of one bootstrap: drawn once (from the seeded generator,
    in replicate order), then fitted in a batch or one by one."""

    def __init__(self, fit, kind, n, rng, *, group=None, m=None):
        self.original, self.kind, self.n = fit, kind, n
        self.group, self.m = None, None
        design = fit.design
        if kind == "parametric":
            self.Y = fit.simulate(n, seed=rng).to_numpy()
        elif kind == "residual":
            fitted = fit.fitted.to_numpy()
            resid = fit.residuals.to_numpy()
            draws = rng.integers(0, fit.nobs, size=(n, fit.nobs))
            self.Y = fitted[:, None] + resid[draws].T
        elif kind == "cluster":
            groups = list(dict.fromkeys(t.group for t in fit.terms))
            if group is None:
                if len(groups) > 1:
                    raise LmmInputError(
                        f"the model has several grouping factors ({', '.join(groups)}); "
                        "name the one to resample with group=...")
                group = groups[0]
            if group not in groups:
                raise LmmInputError(
                    f"group {group!r} is not a grouping factor of the model ({', '.join(groups)})")
            self.group = group
            term = next(t for t in fit.terms if t.group == group)
            self.cluster_codes = np.asarray(term.codes)
            self.cluster_levels = term.levels
            G = len(term.levels)
            self.draws = rng.integers(0, G, size=(n, G))
        else:  # subsample
            self.m = design.y.size // 4 if m is None else int(m)
            if not 0 < self.m:
                raise LmmInputError(f"m, the rows per subsample, must be >= 1, got {m!r}")
            self.rows = rng.integers(0, fit.nobs, size=(n, self.m))

    # -------------------------------------------------------------- all at once
    def batch_parts(self):
        """What :class:`lmmlib.batch.BatchedProblems` needs: the drawn levels (cluster) or
        row weights (subsample) or None, and the data of each replicate (nobs, n)."""
        y = self.original.design.y
        if self.kind in ("parametric", "residual"):
            return None, self.Y
        Y = np.repeat(y[:, None], self.n, axis=1)
        if self.kind == "cluster":
            return self.draws, Y
        W = np.zeros((self.n, self.original.nobs))
        np.add.at(W, (np.repeat(np.arange(self.n), self.m), self.rows.ravel()), 1.0)
        return W, Y

    def identifiable(self) -> np.ndarray:
        """Per replicate, whether the engine would accept its data (see _subset_design): only
        the subsample scheme can draw too few levels or rows."""
        if self.kind != "subsample":
            return np.ones(self.n, dtype=bool)
        term = self.original.terms[0]
        levels = np.array([len(np.unique(term.codes[r])) for r in self.rows])
        return (levels >= 2) & (levels * term.p < self.m)

    # -------------------------------------------------------------- one at a time
    def fit(self, b: int):
        """Replicate b fitted by the engine, from the original fit's theta."""
        from lmmlib.lmm import LinearMixedModel

        with warnings.catch_warnings():
            # counted in the status table (converged, singular), not printed per replicate
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", SingularFitWarning)
            if self.kind in ("parametric", "residual"):
                return self.original.refit(self.Y[:, b])
            design = self.cluster_design(b) if self.kind == "cluster" else self.row_design(b)
            model = LinearMixedModel(design, reml=self.original.reml)
            return model.fit(start=self.original.theta)

    def row_design(self, b: int):
        """The drawn rows as a data set: each term keeps the levels that occur in it."""
        rows = np.sort(self.rows[b])
        return _subset_design(self.original.design, rows, [None] * len(self.original.terms))

    def cluster_design(self, b: int):
        """The drawn levels of the cluster factor, all their rows; the k-th copy of a level
        gets the label ``"level#k"`` (k >= 2), in every term nested in that factor."""
        fit = self.original
        draws = self.draws[b]
        member = [np.flatnonzero(self.cluster_codes == j) for j in draws]
        rows = np.concatenate(member)
        copy = np.zeros(len(draws), dtype=int)
        seen: dict[int, int] = {}
        for k, j in enumerate(draws):
            seen[j] = seen.get(j, 0) + 1
            copy[k] = seen[j]
        copy_of_row = np.repeat(copy, [len(r) for r in member])
        relabel = []
        for term in fit.terms:
            nested = term.group == self.group or _nested(term.codes, self.cluster_codes)
            relabel.append(copy_of_row if nested else None)
        return _subset_design(fit.design, rows, relabel)


def _nested(codes: np.ndarray, cluster: np.ndarray) -> bool:
    """Whether each level of ``codes`` lies within one level of ``cluster``."""
    pairs = np.unique(np.column_stack([codes, cluster]), axis=0)
    return len(pairs) == len(np.unique(codes))


def _subset_design(design, rows: np.ndarray, copies: list):
    """A Design of the given rows; levels that do not occur are dropped, and where
    ``copies[k]`` is given (the copy number of each row) copies of a level are new levels."""
    terms = []
    for term, copy in zip(design.terms, copies):
        codes = np.asarray(term.codes)[rows]
        labels = np.asarray(term.levels, dtype=object)[codes].astype(str)
        if copy is not None:
            labels = np.where(copy > 1, np.char.add(np.char.add(labels, "#"), copy.astype(str)),
                              labels)
        levels, new_codes = np.unique(labels, return_inverse=True)
        terms.append(dataclasses.replace(term, levels=pd.Index(levels, dtype=object),
                                         codes=new_codes.astype(np.int64), X=term.X[rows]))
    for term in terms:
        if term.nlevels < 2 or term.nlevels * term.p >= len(rows):
            raise LmmInputError(
                f"the replicate has {term.nlevels} levels of {term.group!r} for {len(rows)} "
                "rows: too few to estimate the random effects")
    return dataclasses.replace(design, y=design.y[rows], X=design.X[rows], terms=terms,
                               row_index=pd.RangeIndex(len(rows)), n_dropped=0)


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

        >>> from lmmlib import datasets, lmer
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
