"""Predictions and simulations conditioned on some, all or none of the random effects.

lme4's ``predict(fit, newdata, re.form)`` is the linear predictor

    eta = o + X beta + sum_{k in K} Z_k b_k,

where K is the set of random-effects terms named by ``re.form``: all of them (``NULL``),
none (``~0`` or ``NA``) or the terms of a formula such as ``~(1 | Subject)``.
``simulate(fit, use.u, newdata, newparams)`` draws

    y* = eta_K + sigma (sum_{k not in K} Z_k Lambda_k u*_k + e* / sqrt(w)),
    u* ~ N(0, I),  e* ~ N(0, I),

with K all terms when ``use.u = TRUE`` (the random effects are held at their conditional
modes) and none otherwise (new random effects for every level), at the estimates or at new
values of theta, beta and sigma.  With a new theta, the held random effects are
``b = Lambda(theta_new) u_hat`` as in lme4 (``getME(fit, "b")`` after ``setParams``).
(lme4 ignores prior weights when it simulates an LMM; here the residual SD of row i is
``sigma / sqrt(w_i)``, as the model says.)

>>> from lmmlib import datasets, lmer
>>> fit = lmer("Reaction ~ Days + (Days | Subject)", datasets.sleepstudy())
>>> bool(abs(linear_predictor(fit, None, "~0") - fit.design.X @ fit.fixef).max() < 1e-9)
True
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lmmlib.errors import LmmInputError
from lmmlib.formula import split_formula
from lmmlib.remat import random_effects_product

__all__ = ["re_form_terms", "linear_predictor", "simulate"]


def re_form_terms(fit, re_form) -> list[int]:
    """Indices (lme4 order) of the fit's terms that ``re_form`` names.

    None: all; ``"~0"``, ``"0"``, ``""``, ``"~ 0"`` or NaN: none; otherwise a one-sided
    formula of bar terms, each of which must be a term of the model (after ``||`` and ``/``
    are expanded), e.g. ``"~(1 | Subject)"``.

    >>> from lmmlib import datasets, lmer
    >>> fit = lmer("Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)",
    ...            datasets.sleepstudy())
    >>> re_form_terms(fit, "~(0 + Days | Subject)"), re_form_terms(fit, "~0")
    ([1], [])
    """
    if re_form is None:
        return list(range(len(fit.terms)))
    if isinstance(re_form, float) and np.isnan(re_form):
        return []
    if not isinstance(re_form, str):
        raise LmmInputError(f"re_form must be None, '~0' or a formula string, got {re_form!r}")
    text = re_form.strip().lstrip("~").strip()
    if text in ("", "0", "NA", "-1"):
        return []
    _, _, bars = split_formula(f"y ~ {text}")
    keys = [(t.group, _normal(t.expr)) for t in fit.terms]
    chosen = []
    for bar in bars:
        key = (bar.group, _normal(bar.expr))
        if key not in keys:
            raise LmmInputError(
                f"random effects {bar} in re_form are not a term of the model; its terms are "
                + ", ".join(str(t) for t in fit.terms)
            )
        chosen.append(keys.index(key))
    return sorted(set(chosen))


def _normal(expr: str) -> str:
    """A term's left side without spaces, and with ``1 +`` implied: ``"1 + Days"`` == ``"Days"``."""
    text = expr.replace(" ", "")
    return text[2:] if text.startswith("1+") else text


def linear_predictor(fit, newdata=None, re_form=None, allow_new_levels=False, *,
                     b=None, beta=None) -> pd.Series:
    """``o + X beta + sum_{k in K} Z_k b_k`` for the fit's rows or ``newdata`` (lme4's
    ``predict``); K from :func:`re_form_terms`.  Rows of ``newdata`` with a missing
    predictor give NaN.  ``b`` (per term, levels x p) and ``beta`` default to the estimates.
    """
    chosen = re_form_terms(fit, re_form)
    b = fit.solution.b if b is None else b
    beta = fit.fixef.to_numpy() if beta is None else np.asarray(beta, dtype=float)
    design = fit.design
    if newdata is None:
        mu = design.X @ beta
        if design.offset is not None:
            mu = mu + design.offset
        for k in chosen:
            term = fit.terms[k]
            mu = mu + random_effects_product(term.codes, term.X, b[k])
        return pd.Series(mu, index=design.row_index, name="predicted")
    if not isinstance(newdata, pd.DataFrame):
        raise LmmInputError(f"newdata must be a pandas DataFrame, not {type(newdata).__name__}")
    missing = design.new_missing_rows(newdata)
    out = pd.Series(np.nan, index=newdata.index, name="predicted")
    rows = newdata.loc[~missing] if missing.any() else newdata
    if len(rows) == 0:
        return out
    mu = design.new_fixed_matrix(rows) @ beta + design.new_offset(rows)
    if chosen:
        new_terms = design.new_random_terms(rows)
        for k in chosen:
            codes, Xk = new_terms[k]
            if not allow_new_levels and np.any(codes < 0):
                fit._raise_new_level(rows, fit.terms[k].group, codes)
            mu = mu + random_effects_product(codes, Xk, b[k])
    out[~missing] = mu
    return out


def simulate(fit, nsim: int = 1, seed=None, *, use_u: bool = False, newdata=None,
             theta=None, beta=None, sigma=None, allow_new_levels: bool = False) -> pd.DataFrame:
    """Responses simulated from the model, one column per simulation (lme4's
    ``simulate.merMod``; the formula is in the module docstring).

    Parameters
    ----------
    use_u : bool
        Hold the random effects at their conditional modes (lme4's ``use.u = TRUE``) or
        draw new ones for every level (default).
    newdata : DataFrame, optional
        Simulate for these rows instead of the fit's (weights 1, the formula's offsets).
        Rows with a missing predictor are dropped, as lme4 does.
    theta, beta, sigma : optional
        Parameter values to simulate from instead of the estimates (lme4's ``newparams``).
    allow_new_levels : bool
        Levels of ``newdata`` not in the fit get new random effects (``use_u=False``) or 0
        (``use_u=True``); otherwise they are an error.

    >>> from lmmlib import datasets, lmer
    >>> fit = lmer("Reaction ~ Days + (Days | Subject)", datasets.sleepstudy())
    >>> simulate(fit, 2, seed=1, use_u=True, sigma=0.0).iloc[0].round(3).tolist()
    [253.664, 253.664]
    """
    if isinstance(nsim, bool) or not isinstance(nsim, (int, np.integer)) or nsim < 1:
        raise LmmInputError(f"nsim must be a positive integer, got {nsim!r}")
    rng = np.random.default_rng(seed)
    theta = fit.theta if theta is None else _parameter(theta, len(fit.theta), "theta")
    beta = fit.fixef.to_numpy() if beta is None else _parameter(beta, fit.p, "beta")
    sigma = fit.sigma if sigma is None else float(sigma)
    if sigma < 0 or np.any(theta < fit.layout.lower):
        raise LmmInputError("sigma and the diagonal elements of theta must be >= 0")
    templates = fit.layout.templates(theta)
    b = [u @ T.T for u, T in zip(fit.solution.u, templates)]  # Lambda(theta) u_hat
    if newdata is not None:
        if not isinstance(newdata, pd.DataFrame):
            raise LmmInputError(f"newdata must be a DataFrame, not {type(newdata).__name__}")
        newdata = newdata.loc[~fit.design.new_missing_rows(newdata)]
    eta = linear_predictor(fit, newdata, None if use_u else "~0", allow_new_levels,
                           b=b, beta=beta).to_numpy()
    n = len(eta)
    Y = np.repeat(eta[:, None], nsim, axis=1)
    if not use_u:
        if newdata is None:
            terms = [(t.codes, t.X, t.nlevels) for t in fit.terms]
        else:
            terms = []
            for k, (codes, Xk) in enumerate(fit.design.new_random_terms(newdata)):
                if not allow_new_levels and np.any(codes < 0):
                    fit._raise_new_level(newdata, fit.terms[k].group, codes)
                codes = _with_new_levels(codes, newdata, fit.terms[k])
                terms.append((codes, Xk, int(codes.max()) + 1 if len(codes) else 0))
        for (codes, Xk, nlevels), T in zip(terms, templates):
            u = rng.standard_normal((nsim, nlevels, T.shape[0])) * sigma
            Y += np.einsum("ia,sia->is", Xk, (u @ T.T)[:, codes, :])
    sd = sigma / np.sqrt(fit.design.weights) if newdata is None and \
        fit.design.weights is not None else np.full(n, sigma)
    Y += rng.standard_normal((n, nsim)) * sd[:, None]
    index = fit.design.row_index if newdata is None else newdata.index
    return pd.DataFrame(Y, index=index, columns=[f"sim_{k + 1}" for k in range(nsim)])


def _parameter(value, size: int, name: str) -> np.ndarray:
    value = np.asarray(value, dtype=float).ravel()
    if value.shape != (size,):
        raise LmmInputError(f"{name} must have {size} values, got {value.size}")
    return value


def _with_new_levels(codes: np.ndarray, newdata: pd.DataFrame, term) -> np.ndarray:
    """Codes with each unseen level (code -1) given its own new code after the fit's."""
    from lmmlib.formula import group_components

    codes = codes.copy()
    new = codes < 0
    if new.any():
        keys = newdata[group_components(term.group)].astype(str).agg(":".join, axis=1)
        _, inverse = np.unique(keys.to_numpy()[new], return_inverse=True)
        codes[new] = term.nlevels + inverse
    return codes
