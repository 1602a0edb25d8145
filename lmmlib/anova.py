"""Likelihood-ratio tests between nested linear mixed models, as lme4's ``anova``.

For nested models fitted by maximum likelihood to the same data, twice the difference of their
log-likelihoods, ``Chisq = deviance_0 - deviance_1``, is compared with a chi-squared
distribution whose degrees of freedom are the difference in the number of parameters
(fixed effects, theta and sigma).  REML criteria of models with different fixed effects are
not comparable, so -- like lme4 -- models fitted by REML are refitted by maximum likelihood
first, with the message ``refitting model(s) with ML (instead of REML)``.

The chi-squared reference distribution is conservative when the smaller model sets a variance
to zero, its boundary (Self and Liang 1987; Pinheiro and Bates 2000, section 2.4.1); lme4 does
not correct for this and neither do we.  A linear model without random effects
(:class:`lmmlib.ols.OLS`) may be one of the models, as an ``lm`` fit in lme4's ``anova``; its
log-likelihood is the ML one, ``-n/2 (log(2 pi RSS/n) + 1)``, with p + 1 parameters, and the
boundary caveat is printed (:data:`BOUNDARY_MESSAGE`).

:func:`drop1` refits the model by ML without each fixed-effect term in turn (lme4's
``drop1``), keeping the other columns of X exactly as they are.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pandas as pd
from scipy import stats

from lmmlib.errors import LmmInputError
from lmmlib.lmm import LinearMixedModel
from lmmlib.ols import OLS
from lmmlib.pls import LOG_2PI

__all__ = ["anova", "drop1", "REFIT_MESSAGE", "BOUNDARY_MESSAGE"]

REFIT_MESSAGE = "refitting model(s) with ML (instead of REML)"
BOUNDARY_MESSAGE = (
    "Note: the test of a random effect puts its variance on the boundary of the parameter "
    "space (0), where the chi-squared p-value is conservative; for one variance the null "
    "distribution is a 50:50 mixture of chi2_0 and chi2_1, which halves the p-value "
    "(Self and Liang 1987)."
)


class _LinearModelLikelihood:
    """An OLS fit seen as a model in a likelihood-ratio test: ML log-likelihood
    ``-n/2 (log(2 pi RSS/n) + 1)``, ``npar = p + 1`` (lme4's view of an ``lm`` fit)."""

    reml = False

    def __init__(self, fit: OLS):
        n, p = fit.nobs, len(fit.coef)
        self.nobs, self.npar = n, p + 1
        self.loglik = float(-0.5 * n * (LOG_2PI + np.log(fit.rss / n) + 1))
        self.aic = -2 * self.loglik + 2 * self.npar
        self.bic = float(-2 * self.loglik + np.log(n) * self.npar)
        self.design = SimpleNamespace(y=fit.y.to_numpy(), row_index=fit.y.index,
                                      response=fit.y.name)


def anova(
    *models: LinearMixedModel, names: list[str] | None = None, refit: bool = True,
    ddf: str = "satterthwaite",
) -> pd.DataFrame:
    """Likelihood-ratio tests of a sequence of nested models (lme4's ``anova(m0, m1, ...)``);
    with one model, lmerTest's type III F tests of its fixed terms.

    With a single model the table is :func:`lmmlib.inference.anova_type3` (columns ``Sum Sq,
    Mean Sq, NumDF, DenDF, F value, Pr(>F)``) with denominator df by ``ddf``
    ("satterthwaite", lmerTest's default, "kenward-roger" or "residual").

    Parameters
    ----------
    *models
        Two or more fitted models of the same observations.
    names
        Row labels (default ``model1``, ``model2``, ... in the order given).
    refit
        Refit REML fits by maximum likelihood (lme4's default); the message
        ``refitting model(s) with ML (instead of REML)`` is printed and stored in
        ``table.attrs["note"]``.

    Returns
    -------
    pandas.DataFrame
        Rows ordered by number of parameters; columns ``npar, AIC, BIC, logLik, deviance,
        Chisq, Df, Pr(>Chisq)``, where row i is tested against row i-1:
        ``Chisq = deviance_{i-1} - deviance_i`` (0 if negative, as lme4) and
        ``Df = npar_i - npar_{i-1}``.

    Examples
    --------
    >>> from lmmlib import datasets, lmer
    >>> sleep = datasets.sleepstudy()
    >>> m0 = lmer("Reaction ~ Days + (1 | Subject)", sleep, reml=False)
    >>> m1 = lmer("Reaction ~ Days + (Days | Subject)", sleep, reml=False)
    >>> round(float(anova(m0, m1).loc["model2", "Chisq"]), 3)
    42.139
    """
    if len(models) == 1 and isinstance(models[0], LinearMixedModel) and models[0].optinfo:
        from lmmlib.inference import anova_type3

        return anova_type3(models[0], ddf)
    if len(models) < 2:
        raise LmmInputError(
            f"anova needs one fitted model (F tests) or two or more to compare, got {len(models)}"
        )
    models = tuple(_LinearModelLikelihood(m) if isinstance(m, OLS) else m for m in models)
    boundary = any(isinstance(m, _LinearModelLikelihood) for m in models)
    for i, m in enumerate(models):
        if isinstance(m, _LinearModelLikelihood):
            continue
        if not isinstance(m, LinearMixedModel) or m.optinfo is None:
            raise LmmInputError(
                f"argument {i + 1} of anova is not a fitted LinearMixedModel or OLS fit")
    names = list(names) if names is not None else [f"model{i + 1}" for i in range(len(models))]
    if len(names) != len(models):
        raise LmmInputError(f"{len(names)} names given for {len(models)} models")
    _check_same_data(models, names)
    note = ""
    if refit and any(m.reml for m in models):
        note = REFIT_MESSAGE
        print(note)
        models = tuple(m.refit(reml=False) if m.reml else m for m in models)
    order = sorted(range(len(models)), key=lambda i: models[i].npar)
    models = [models[i] for i in order]
    names = [names[i] for i in order]
    npar = np.array([m.npar for m in models], dtype=float)
    deviance = np.array([-2 * m.loglik for m in models])
    chisq = np.r_[np.nan, np.maximum(0.0, -np.diff(deviance))]
    df = np.r_[np.nan, np.diff(npar)]
    with np.errstate(invalid="ignore"):
        pvalue = np.where(df > 0, stats.chi2.sf(chisq, np.where(df > 0, df, 1)), np.nan)
    pvalue[0] = np.nan
    table = pd.DataFrame(
        {
            "npar": npar.astype(int),
            "AIC": [m.aic for m in models],
            "BIC": [m.bic for m in models],
            "logLik": [m.loglik for m in models],
            "deviance": deviance,
            "Chisq": chisq,
            "Df": df,
            "Pr(>Chisq)": pvalue,
        },
        index=names,
    )
    if boundary:
        print(BOUNDARY_MESSAGE)
        note = "\n".join(filter(None, [note, BOUNDARY_MESSAGE]))
    table.attrs["note"] = note
    return table


def drop1(fit: LinearMixedModel, test: str = "none") -> pd.DataFrame:
    """Single-term deletions of the fixed effects (lme4's ``drop1(fit, test)``).

    Each term that no other term contains (R's ``drop.scope``: ``x`` and ``g`` stay while
    ``x:g`` is in the model) is removed in turn, its columns taken out of X, and the model is
    refitted by maximum likelihood, as lme4's ``extractAIC`` does.  Rows ``<none>`` (the full
    model, refitted by ML if it was fitted by REML) and one per term; columns ``npar`` (the
    number of parameters removed), ``AIC``, and with ``test="Chisq"`` ``LRT`` (the increase
    of the deviance) and ``Pr(Chi)`` (its chi-squared p-value on ``npar`` df).

    >>> from lmmlib import datasets, lmer
    >>> fit = lmer("Reaction ~ Days + (1 | Subject)", datasets.sleepstudy())
    >>> round(float(drop1(fit, test="Chisq").loc["Days", "LRT"]), 2)
    116.46
    """
    if test not in ("none", "Chisq"):
        raise LmmInputError(f"test must be 'none' or 'Chisq', got {test!r}")
    if not isinstance(fit, LinearMixedModel) or fit.optinfo is None:
        raise LmmInputError("drop1 needs a fitted LinearMixedModel")
    full = fit.refit(reml=False) if fit.reml else fit
    design = fit.design
    columns = _term_columns(design)
    rows = {"<none>": full}
    for label, cols in columns.items():
        keep = [j for j in range(design.X.shape[1]) if j not in cols]
        reduced = dataclasses.replace(
            design, X=design.X[:, keep], fixef_names=[design.fixef_names[j] for j in keep],
            all_fixef_names=None)
        rows[label] = LinearMixedModel(reduced, reml=False).fit()
    npar = np.array([m.npar for m in rows.values()], dtype=float)
    deviance = np.array([-2 * m.loglik for m in rows.values()])
    table = pd.DataFrame({"npar": np.r_[np.nan, npar[0] - npar[1:]],
                          "AIC": deviance + 2 * npar}, index=list(rows))
    if test == "Chisq":
        lrt = np.r_[np.nan, deviance[1:] - deviance[0]]
        table["LRT"] = lrt
        with np.errstate(invalid="ignore"):
            table["Pr(Chi)"] = stats.chi2.sf(lrt, table["npar"])
    return table


def _term_columns(design) -> dict[str, list[int]]:
    """Droppable fixed-effect terms (R's ``drop.scope``) and their columns of X."""
    recipe = design._recipe()
    spec = recipe.fixed_spec
    position = {name: k for k, name in enumerate(spec.column_names)}
    kept = {full: j for j, full in enumerate(recipe.kept)}
    structure = [(st.term, st.columns) for st in spec.structure if str(st.term) != "1"]
    factors = {str(t): {f.expr for f in t.factors} for t, _ in structure}
    out = {}
    for term, cols in structure:
        label = str(term)
        if any(factors[label] < other for other in factors.values()):
            continue  # marginal to a higher-order term in the model
        js = [kept[position[c]] for c in cols if position[c] in kept]
        if js:
            out[label] = js
    return out


def _check_same_data(models, names) -> None:
    """Likelihoods are comparable only for the same observations of the same response."""
    first, name0 = models[0], names[0]
    reference = pd.Series(first.design.y, index=first.design.row_index)
    for m, name in zip(models[1:], names[1:]):
        if m.nobs != first.nobs:
            counts = ", ".join(f"{nm}: {mm.nobs}" for nm, mm in zip(names, models))
            raise LmmInputError(
                "models were not all fitted to the same number of observations "
                f"({counts}); a likelihood-ratio test needs the same data"
            )
        y = pd.Series(m.design.y, index=m.design.row_index)
        if not y.index.equals(reference.index):
            if y.index.has_duplicates or set(y.index) != set(reference.index):
                raise LmmInputError(
                    f"{name} and {name0} were fitted to different rows of the data (the same "
                    "number of observations, different row labels); a likelihood-ratio test "
                    "needs the same observations"
                )
            y = y.reindex(reference.index)
        if not np.array_equal(y.to_numpy(), reference.to_numpy()):
            raise LmmInputError(
                f"{name} and {name0} were fitted to different values of the response "
                f"({m.design.response!r} and {first.design.response!r}); a likelihood-ratio "
                "test needs the same observations"
            )
