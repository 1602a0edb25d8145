"""The fitting tools being compared, behind one small interface.

For each tool, ``fit(spec, data)`` goes from a formula and a DataFrame to a fitted object (the
part that is timed) and ``estimates(fitted)`` returns what the benchmarks compare, named as
lmmlib and lme4 name them:

``fixef``      fixed effects, in the model matrix's column order (names as the tool gives them;
               tools are compared position by position),
``sdcor``      ``sd_<term>|<group>``, ``cor_<term2>.<term1>|<group>`` and ``sigma``,
``criterion``  the REML criterion (-2 x REML log-likelihood) at the estimates,
``n_evaluations`` how many times the tool evaluated its objective (None if it does not say),
``converged``  the tool's own convergence flag.

``spec`` is a case's model: ``formula`` (lme4 syntax, for lmmlib and mixedlm) and, for
statsmodels, ``sm_formula``, ``sm_groups``, ``sm_re_formula``.
"""

from __future__ import annotations

import warnings
from importlib.metadata import PackageNotFoundError, version

import numpy as np

TOOLS = ("lmmlib", "mixedlm", "statsmodels")


def tool_version(tool: str) -> str | None:
    """Installed version of the tool's distribution, or None if it is not installed."""
    try:
        return version(tool)
    except PackageNotFoundError:
        return None


# ------------------------------------------------------------------------------ lmmlib
def fit_lmmlib(spec: dict, data):
    from lmmlib import lmer

    return lmer(spec["formula"], data, reml=True)


def estimates_lmmlib(fit, spec: dict) -> dict:
    return {
        "fixef": {k: float(v) for k, v in fit.fixef.items()},
        "sdcor": {k: float(v) for k, v in fit.sdcor.items()},
        "criterion": float(fit.deviance),
        "n_evaluations": int(fit.optinfo["n_evaluations"]),
        "converged": bool(fit.optinfo["converged"]),
        "ngroups": {k: int(v) for k, v in fit.ngroups.items()},
    }


# ------------------------------------------------------------------------------ mixedlm
def fit_mixedlm(spec: dict, data):
    import mixedlm

    return mixedlm.lmer(spec["formula"], data, REML=True)


def estimates_mixedlm(fit, spec: dict) -> dict:
    vc = fit.VarCorr()
    sdcor = {}
    for group, g in vc.groups.items():
        names = list(g.term_names)
        for c, name_c in enumerate(names):
            sdcor[f"sd_{name_c}|{group}"] = float(g.stddev[name_c])
            for r in range(c + 1, len(names)):
                sdcor[f"cor_{names[r]}.{name_c}|{group}"] = float(np.asarray(g.corr)[r, c])
    sdcor["sigma"] = float(fit.sigma)
    return {
        "fixef": {k: float(v) for k, v in fit.fixef().items()},
        "sdcor": sdcor,
        "criterion": float(fit.deviance),
        "n_evaluations": int(fit.function_evals),
        "converged": bool(fit.converged),
    }


# ------------------------------------------------------------------------------ statsmodels
def fit_statsmodels(spec: dict, data):
    import statsmodels.formula.api as smf

    model = smf.mixedlm(spec["sm_formula"], data, groups=spec["sm_groups"],
                        re_formula=spec["sm_re_formula"])
    return model.fit(reml=True)


def estimates_statsmodels(fit, spec: dict) -> dict:
    """statsmodels names the random intercept after the group; the terms are renamed by
    position as lme4 names them (the slope keeps its own name)."""
    cov = np.asarray(fit.cov_re, dtype=float)
    names = ["(Intercept)", *list(fit.cov_re.columns[1:])]
    gname = spec["sm_groups"]
    sd = np.sqrt(np.diag(cov))
    sdcor = {}
    for c, name_c in enumerate(names):
        sdcor[f"sd_{name_c}|{gname}"] = float(sd[c])
        for r in range(c + 1, len(names)):
            sdcor[f"cor_{names[r]}.{name_c}|{gname}"] = float(cov[r, c] / (sd[r] * sd[c]))
    sdcor["sigma"] = float(np.sqrt(fit.scale))
    retvals = getattr(fit, "mle_retvals", None) or {}
    nfev = retvals.get("fcalls")
    return {
        "fixef": {k: float(v) for k, v in fit.fe_params.items()},
        "sdcor": sdcor,
        "criterion": float(-2.0 * fit.llf),
        "n_evaluations": None if nfev is None else int(nfev),
        "converged": bool(fit.converged),
    }


FIT = {"lmmlib": fit_lmmlib, "mixedlm": fit_mixedlm, "statsmodels": fit_statsmodels}
ESTIMATES = {"lmmlib": estimates_lmmlib, "mixedlm": estimates_mixedlm,
             "statsmodels": estimates_statsmodels}


def fit_quietly(tool: str, spec: dict, data) -> tuple[object, list[str]]:
    """Fit with ``tool``; warnings are recorded (their messages returned), not printed."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fitted = FIT[tool](spec, data)
    return fitted, sorted({f"{w.category.__name__}: {w.message}" for w in caught})
