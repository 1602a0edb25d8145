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

from lmmlib.batch import BatchedProblems, supports
from lmmlib.errors import ConvergenceWarning, LmmInputError, SingularFitWarning
from lmmlib.remat import sdcor_names, theta_indices
from lmmlib.bootstrap_result import METHODS, BootstrapResult, BootstrapWarning

__all__ = ["bootstrap", "bootstrap_many", "BootstrapResult", "BootstrapWarning", "KINDS",
           "METHODS", "default_statistic"]

KINDS = ("parametric", "cluster", "residual", "subsample")


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
    fit : lmmlib.lmm.LinearMixedModel
        A fit from :func:`lmmlib.lmm.lmer`.
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
