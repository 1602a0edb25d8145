"""Likelihood-ratio tests between nested linear mixed models, as lme4's ``anova``.

For nested models fitted by maximum likelihood to the same data, twice the difference of their
log-likelihoods, ``Chisq = deviance_0 - deviance_1``, is compared with a chi-squared
distribution whose degrees of freedom are the difference in the number of parameters
(fixed effects, theta and sigma).  REML criteria of models with different fixed effects are
not comparable, so -- like lme4 -- models fitted by REML are refitted by maximum likelihood
first, with the message ``refitting model(s) with ML (instead of REML)``.

The chi-squared reference distribution is conservative when the smaller model sets a variance
to zero, its boundary (Self and Liang 1987; Pinheiro and Bates 2000, section 2.4.1); lme4 does
not correct for this and neither do we.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from lmmlib.errors import LmmInputError
from lmmlib.lmm import LinearMixedModel

__all__ = ["anova", "REFIT_MESSAGE"]

REFIT_MESSAGE = "refitting model(s) with ML (instead of REML)"


def anova(
    *models: LinearMixedModel, names: list[str] | None = None, refit: bool = True
) -> pd.DataFrame:
    """Likelihood-ratio tests of a sequence of nested models (lme4's ``anova(m0, m1, ...)``).

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
    if len(models) < 2:
        raise LmmInputError(f"anova needs at least two models to compare, got {len(models)}")
    for i, m in enumerate(models):
        if not isinstance(m, LinearMixedModel) or m.optinfo is None:
            raise LmmInputError(f"argument {i + 1} of anova is not a fitted LinearMixedModel")
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
    table.attrs["note"] = note
    return table


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
