"""Inference for the fixed effects and for predictions: t and F tests with approximate df,
t intervals, confidence and prediction intervals.

A fixed effect's t statistic ``t = beta_hat_j / se_j`` is not t-distributed with n - p degrees
of freedom: its standard error mixes variance components that are estimated from different
numbers of independent pieces of information (18 subjects for a between-subject variance,
162 within-subject residuals for sigma in sleepstudy).  The methods (``ddf``):

``None``
    lme4's choice: no df and no p-value; intervals use the normal quantile (z).
``"satterthwaite"``
    Satterthwaite's approximation, as lmerTest (:mod:`lmmlib.satterthwaite`).  The default
    of lmerTest; good for REML and ML fits of any size.
``"kenward-roger"``
    Kenward and Roger's (1997) adjusted covariance of beta_hat and df, as pbkrtest
    (:mod:`lmmlib.kenward_roger`); REML fits only.  Reproduces exact F tests in balanced
    designs and is the better choice for small samples; its cost grows as the cube of the
    number of random effects.
``"residual"``
    ``n - p`` df, as if the observations were independent; too liberal for between-group
    effects, shown for comparison.

>>> from lmmlib import datasets, lmer
>>> fit = lmer("Reaction ~ Days + (Days | Subject)", datasets.sleepstudy())
>>> coef_table(fit, "satterthwaite").round(3)                  # doctest: +NORMALIZE_WHITESPACE
             Estimate  Std. Error    df  t value  Pr(>|t|)
(Intercept)   251.405       6.825  17.0   36.838       0.0
Days           10.467       1.546  17.0    6.771       0.0
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.linalg as la
from scipy import stats

from lmmlib.errors import LmmInputError
from lmmlib.kenward_roger import KenwardRoger, random_effects_matrix
from lmmlib.satterthwaite import Satterthwaite
from lmmlib.summary import percent_label

__all__ = ["DDF_METHODS", "check_ddf", "coef_table", "confint_wald", "contrast_df", "contrast_test",
           "type3_contrasts", "anova_type3", "predict_intervals"]

DDF_METHODS = (None, "satterthwaite", "kenward-roger", "residual")
#: random effects above which the dense matrices of a subject-level interval are not formed
MAX_DENSE_RANDOM_EFFECTS = 10_000


def check_ddf(ddf):
    """``ddf`` in canonical form (case-insensitive; lmerTest's spellings accepted)."""
    if ddf is None:
        return None
    if isinstance(ddf, str) and ddf.lower() in DDF_METHODS[1:]:
        return ddf.lower()
    raise LmmInputError(
        f"ddf must be one of None, 'satterthwaite', 'kenward-roger', 'residual'; got {ddf!r}"
    )


def _method(fit, ddf):
    """The Satterthwaite or KenwardRoger object of a fit, computed once per estimate."""
    key = (ddf, fit.theta.tobytes(), fit.reml, float(fit.sigma))
    cache = fit.__dict__.setdefault("_inference_cache", {})
    if key not in cache:
        stale = [k for k in cache if k[1:] != key[1:]]  # from earlier estimates (a new fit)
        for k in stale:
            del cache[k]
        cache[key] = Satterthwaite(fit) if ddf == "satterthwaite" else KenwardRoger(fit)
    return cache[key]


def _se_and_df(fit, ddf):
    """Standard errors and df of the coefficients for one method (df NaN for None)."""
    p = fit.p
    if ddf is None:
        return fit.se.to_numpy(), np.full(p, np.nan)
    if ddf == "residual":
        return fit.se.to_numpy(), np.full(p, float(fit.nobs - p))
    m = _method(fit, ddf)
    if ddf == "satterthwaite":
        return fit.se.to_numpy(), m.df_coefficients()
    return np.sqrt(np.diag(m.vcov_adjusted)), m.df_coefficients()


def coef_table(fit, ddf=None) -> pd.DataFrame:
    """The fixed effects with standard errors, df, t values and two-sided p-values.

    ``Pr(>|t|) = 2 P(T_nu > |t|)``, ``t = beta_hat / se``.  With ``ddf=None`` the table is
    lme4's (Estimate, Std. Error, t value: no df, no p-value); otherwise lmerTest's
    ``coef(summary(fit, ddf=...))`` columns.  Kenward-Roger's standard errors are those of
    its adjusted covariance (pbkrtest's ``vcovAdj``).  See the module docstring for the
    choice of method.
    """
    ddf = check_ddf(ddf)
    est = fit.fixef.to_numpy()
    se, df = _se_and_df(fit, ddf)
    table = pd.DataFrame({"Estimate": est, "Std. Error": se}, index=fit.fixef_names)
    if ddf is None:
        table["t value"] = est / se
        return table
    table["df"] = df
    table["t value"] = est / se
    table["Pr(>|t|)"] = 2 * stats.t.sf(np.abs(est / se), df)
    return table


def confint_wald(fit, level: float = 0.95, ddf=None) -> pd.DataFrame:
    """Wald intervals ``beta_hat_j +- q se_j``: q the normal quantile (``ddf=None``, lme4's
    ``confint(method = "Wald")``) or the t quantile with the method's df; NaN rows for the
    variance parameters, as lme4.

    >>> from lmmlib import datasets, lmer
    >>> fit = lmer("Reaction ~ Days + (Days | Subject)", datasets.sleepstudy())
    >>> confint_wald(fit, ddf="satterthwaite").loc["Days"].round(3).tolist()
    [7.206, 13.729]
    """
    ddf = check_ddf(ddf)
    se, df = _se_and_df(fit, ddf)
    a = 0.5 + level / 2
    quant = stats.norm.ppf(a) * np.ones(fit.p) if ddf is None else stats.t.ppf(a, df)
    est = fit.fixef.to_numpy()
    nan = np.full(len(fit.sdcor), np.nan)
    return pd.DataFrame(
        {percent_label(1 - a): np.r_[nan, est - quant * se],
         percent_label(a): np.r_[nan, est + quant * se]},
        index=[*fit.sdcor.index, *fit.fixef_names],
    )


def contrast_df(fit, L, ddf="satterthwaite") -> np.ndarray:
    """df of each one-dimensional contrast ``l'beta`` (each row of L): e.g. the rows
    ``x' = (1, day)`` of a population line, for a t-based confidence band.

    >>> from lmmlib import datasets, lmer
    >>> fit = lmer("Reaction ~ Days + (Days | Subject)", datasets.sleepstudy())
    >>> contrast_df(fit, [[1.0, 0.0], [1.0, 4.5]]).round(3).tolist()
    [17.0, 17.0]
    """
    ddf = check_ddf(ddf)
    L = np.atleast_2d(np.asarray(L, dtype=float))
    if L.shape[1] != fit.p:
        raise LmmInputError(f"L must have {fit.p} columns (one per fixed effect), got {L.shape[1]}")
    if ddf is None:
        return np.full(len(L), np.inf)
    if ddf == "residual":
        return np.full(len(L), float(fit.nobs - fit.p))
    method = _method(fit, ddf)
    return np.array([method.df(row) for row in L])


def contrast_test(fit, L, ddf="satterthwaite") -> dict:
    """F test of ``L beta = 0``: ``{"F", "NumDF", "DenDF", "p"}`` (lmerTest's ``contest``).

    ``"satterthwaite"``: lmerTest's ``contestMD``; ``"kenward-roger"``: pbkrtest's
    ``KRmodcomp`` (scaled F); ``"residual"``: the Wald F on (q, n - p) df.

    >>> from lmmlib import datasets, lmer
    >>> fit = lmer("Reaction ~ Days + (Days | Subject)", datasets.sleepstudy())
    >>> res = contrast_test(fit, [[0.0, 1.0]])
    >>> round(res["F"], 3), res["NumDF"], round(res["DenDF"], 3)
    (45.853, 1, 17.0)
    """
    ddf = check_ddf(ddf)
    L = np.atleast_2d(np.asarray(L, dtype=float))
    if L.shape[1] != fit.p:
        raise LmmInputError(f"L must have {fit.p} columns (one per fixed effect), got {L.shape[1]}")
    beta = fit.fixef.to_numpy()
    if ddf in ("satterthwaite", "kenward-roger"):
        return _method(fit, ddf).f_test(L, beta)
    if ddf is None:
        raise LmmInputError("an F test needs denominator df: choose a ddf method")
    q = int(np.linalg.matrix_rank(L))
    Lb = L @ beta
    F = float(Lb @ np.linalg.solve(L @ fit.vcov.to_numpy() @ L.T, Lb)) / q
    dendf = float(fit.nobs - fit.p)
    return {"F": F, "NumDF": q, "DenDF": dendf, "p": float(stats.f.sf(F, q, dendf))}


# ----------------------------------------------------------------------------- type III
def _term_variables(term, kinds):
    """(all variables, numeric variables) of a formulaic term."""
    names = [str(f) for f in term.factors if str(f) != "1"]
    numeric = {n for n in names if kinds.get(n) != "categorical"}
    return set(names), numeric


def _contains(inner, outer) -> bool:
    """SAS's containment (lmerTest's ``term_contain``): ``outer`` has all of ``inner``'s
    variables and more, and the same numeric variables."""
    return inner[0] < outer[0] and inner[1] == outer[1]


def type3_contrasts(fit) -> dict[str, np.ndarray]:
    """Contrast matrices of lmerTest's type III tests, one per fixed term (not the intercept).

    The construction is SAS's (lmerTest's ``extract_contrasts_type3``): with ``X`` the
    model matrix (treatment contrasts) and ``X_c`` the complete dummy coding of every term
    (all levels of every factor), the rows of ``L0 = (X^+ X_c)'`` give the estimable
    functions; a term's columns of L0 are replaced by their residuals after regression on
    the columns of the terms that contain it (same numeric variables, more factors),
    higher-order terms first; the term's contrast is the transpose of its columns,
    restricted to the parameters of X.

    >>> import pandas as pd
    >>> from lmmlib import lmer
    >>> data = pd.DataFrame({"y": [1.0, 2.5, 2.0, 4.1, 3.2, 5.9, 1.4, 2.2, 3.9, 3.1, 4.4, 6.3],
    ...                      "x": [0.0, 1.0] * 6, "f": ["a", "a", "b", "b", "c", "c"] * 2,
    ...                      "g": ["g1"] * 6 + ["g2"] * 6})
    >>> fit = lmer("y ~ f * x + (1 | g)", data)
    >>> type3_contrasts(fit)["x"].round(3).tolist()
    [[0.0, 0.0, 0.0, 1.0, 0.333, 0.333]]
    """
    design = fit.design
    if design.recipe is None or design.fixed_frame is None:
        raise LmmInputError("type III tests need a design made by lmmlib's build_design")
    from formulaic import Formula

    spec = design.recipe.fixed_spec
    kinds = {str(k): v[0].value for k, v in spec.encoder_state.items()}
    frame = design.fixed_frame
    kept = list(design.recipe.kept)
    position = {full: j for j, full in enumerate(kept)}  # full column -> column of X
    terms, columns, complete = [], {}, []
    for term, idx in spec.term_indices.items():
        label = str(term)
        if label == "1":
            complete.append(np.ones((len(frame), 1)))
            continue
        terms.append((label, _term_variables(term, kinds), len(term.factors)))
        columns[label] = [position[i] for i in idx if i in position]
        mm = Formula(f"0 + {label}").get_model_matrix(frame, ensure_full_rank=False)
        complete.append(np.asarray(mm, dtype=float))
    X = np.asarray(design.X, dtype=float)
    Xc = np.hstack(complete)
    L0 = (np.linalg.pinv(X) @ Xc).T  # rows: complete parameters, columns: X's
    L0[np.abs(L0) < 1e-10 * max(1.0, np.abs(L0).max())] = 0.0
    # which complete parameter each column of X is (to keep those rows at the end)
    rows = []
    for j in range(X.shape[1]):
        match = np.flatnonzero(np.all(np.isclose(Xc, X[:, [j]], rtol=1e-10, atol=1e-12), axis=0))
        if len(match) == 0:
            raise LmmInputError(
                f"type III contrasts need treatment-coded columns; {fit.fixef_names[j]!r} "
                "is not a column of the complete dummy coding"
            )
        rows.append(int(match[0]))
    for label, variables, _ in sorted(terms, key=lambda t: -t[2]):
        containing = [c for lab, var, _ in terms if _contains(variables, var)
                      for c in columns[lab]]
        own = columns[label]
        if containing and own:
            B = L0[:, containing]
            coef, *_ = np.linalg.lstsq(B, L0[:, own], rcond=None)
            resid = L0[:, own] - B @ coef
            resid[np.abs(resid) < 1e-10] = 0.0
            L0[:, own] = resid
    L0 = L0[rows]
    out = {}
    for label, _, _ in terms:
        Lk = L0[:, columns[label]].T
        out[label] = Lk[np.abs(Lk).sum(axis=1) > 1e-8]
    return out


def anova_type3(fit, ddf="satterthwaite") -> pd.DataFrame:
    """Type III F tests of each fixed term, as lmerTest's ``anova(fit)``.

    Columns ``Sum Sq, Mean Sq, NumDF, DenDF, F value, Pr(>F)`` with ``Mean Sq = F sigma^2``
    and ``Sum Sq = NumDF Mean Sq`` (lmerTest's convention); the F statistic and its df come
    from :func:`contrast_test` with the contrasts of :func:`type3_contrasts`.

    >>> from lmmlib import datasets, lmer
    >>> fit = lmer("Reaction ~ Days + (Days | Subject)", datasets.sleepstudy())
    >>> anova_type3(fit)[["NumDF", "DenDF", "F value"]].round(3)
          NumDF  DenDF  F value
    Days      1   17.0   45.853
    """
    ddf = check_ddf(ddf)
    if ddf is None:
        raise LmmInputError("anova of one model needs a ddf method, e.g. 'satterthwaite'")
    rows = {}
    for label, L in type3_contrasts(fit).items():
        if len(L) == 0:
            continue
        res = contrast_test(fit, L, ddf)
        mean_sq = res["F"] * fit.sigma**2
        rows[label] = [res["NumDF"] * mean_sq, mean_sq, res["NumDF"], res["DenDF"], res["F"],
                       res["p"]]
    table = pd.DataFrame.from_dict(
        rows, orient="index",
        columns=["Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value", "Pr(>F)"],
    )
    method = {"satterthwaite": "Satterthwaite's", "kenward-roger": "Kenward-Roger's",
              "residual": "residual (n - p)"}[ddf]
    table.attrs["heading"] = f"Type III Analysis of Variance Table with {method} method"
    return table


# ----------------------------------------------------------------------------- prediction
def predict_intervals(fit, newdata=None, re=True, allow_new_levels=False,
                      interval=None, level=0.95, se_fit=False) -> pd.DataFrame:
    """Predictions with standard errors and intervals (the body of ``fit.predict``).

    Returns a DataFrame with ``fit`` and, with ``se_fit``, ``se_fit``; with an ``interval``,
    ``lwr`` and ``upr`` = ``fit -+ z_{(1+level)/2} s``:

    - population line (``re=False``), ``interval="confidence"``:
      ``s^2 = x0' V x0``, the variance of ``x0'beta_hat`` (V = ``fit.vcov``);
    - a subject's line (``re=True``), ``"confidence"``: the prediction-error variance of
      ``x0'beta_hat + z0'b_hat`` for ``x0'beta + z0'b``, i.e. ``sigma^2 a'Omega^{-1}a`` with
      ``a = [Lambda'z0; x0]`` and ``Omega`` the matrix of the penalized least-squares normal
      equations (Henderson's mixed-model equations in lme4's form, Bates et al. 2015, eq. 18):
      the conditional variance of b, the variance of beta_hat and their covariance;
    - ``"prediction"``: a new measurement, adding ``sigma^2``, and for the random effects not
      predicted (``re=False``, or a level not in the fit with ``allow_new_levels``) their
      variance ``z0' Sigma_b z0``: a new subject.

    ``se_fit`` is the ``s`` of ``"confidence"``.  What these ignore: the uncertainty of the
    variance parameters (theta and sigma are treated as known), so they are too narrow for
    few groups; and the quantile is the normal one.

    >>> import pandas as pd
    >>> from lmmlib import datasets, lmer
    >>> fit = lmer("Reaction ~ Days + (Days | Subject)", datasets.sleepstudy())
    >>> new = pd.DataFrame({"Days": [0.0, 9.0]})
    >>> predict_intervals(fit, new, re=False, interval="confidence").round(1)
         fit    lwr    upr
    0  251.4  238.0  264.8
    1  345.6  316.9  374.3
    """
    if interval not in (None, "confidence", "prediction"):
        raise LmmInputError(
            f"interval must be None, 'confidence' or 'prediction', got {interval!r}"
        )
    if not 0 < level < 1:
        raise LmmInputError(f"level must be between 0 and 1, got {level}")
    if newdata is None:
        X0 = np.asarray(fit.design.X, dtype=float)
        random = [(np.asarray(t.codes), np.asarray(t.X, dtype=float)) for t in fit.terms]
        index = fit.design.row_index
    else:
        if not isinstance(newdata, pd.DataFrame):
            raise LmmInputError(
                f"newdata must be a pandas DataFrame, not {type(newdata).__name__}"
            )
        X0 = fit.design.new_fixed_matrix(newdata)
        index = newdata.index
        if not re:  # the grouping factors are not needed: every random effect is new
            from lmmlib.formula import group_components

            fill = {c: "\x00new level" for t in fit.terms for c in group_components(t.group)
                    if c not in newdata.columns}
            newdata = newdata.assign(**fill) if fill else newdata
        random = [(np.asarray(c), Xk) for c, Xk in fit.design.new_random_terms(newdata)]
    beta = fit.fixef.to_numpy()
    if newdata is None:
        offset0 = fit.design.offset
    else:
        offset0 = fit.design.new_offset(newdata)
    mu = X0 @ beta + (0.0 if offset0 is None else offset0)
    m = len(X0)
    sigma2 = fit.sigma**2
    templates = fit.layout.templates(fit.theta)
    new_variance = np.zeros(m)  # z0' Sigma_b z0 of the random effects not predicted
    if re:
        b = fit.solution.b
        rows, cols, vals, offset = [], [], [], 0
        for k, ((codes, Xk), term, T) in enumerate(zip(random, fit.terms, templates)):
            p = Xk.shape[1]
            known = codes >= 0
            if not allow_new_levels and not known.all():
                fit._raise_new_level(newdata, term.group, codes)
            mu[known] += np.einsum("ij,ij->i", Xk[known], b[k][codes[known]])
            new_variance[~known] += sigma2 * np.einsum("ij,jk,ik->i", Xk[~known], T @ T.T,
                                                       Xk[~known])
            r = np.repeat(np.flatnonzero(known), p)
            c = (codes[known][:, None] * p + np.arange(p)).ravel() + offset
            rows.append(r)
            cols.append(c)
            vals.append(Xk[known].ravel())
            offset += term.nlevels * p
        variance = sigma2 * _henderson_quadratic_form(fit, X0, np.concatenate(rows),
                                                      np.concatenate(cols),
                                                      np.concatenate(vals), offset)
    else:
        V = fit.vcov.to_numpy()
        variance = np.einsum("ij,jk,ik->i", X0, V, X0)
        for (codes, Xk), T in zip(random, templates):
            new_variance += sigma2 * np.einsum("ij,jk,ik->i", Xk, T @ T.T, Xk)
    out = pd.DataFrame({"fit": mu}, index=index)
    se = np.sqrt(variance)
    if se_fit:
        out["se_fit"] = se
    if interval is not None:
        s = se if interval == "confidence" else np.sqrt(variance + new_variance + sigma2)
        z = stats.norm.ppf(0.5 + level / 2)
        out["lwr"] = mu - z * s
        out["upr"] = mu + z * s
    return out


def _henderson_quadratic_form(fit, X0, rows, cols, vals, q) -> np.ndarray:
    """Per row of ``[Z0 X0]``, ``a' Omega^{-1} a`` with ``a = [Lambda'z0; x0]`` and
    ``Omega = [[Lambda'Z'Z Lambda + I, Lambda'Z'X], [X'Z Lambda, X'X]]``."""
    if q > MAX_DENSE_RANDOM_EFFECTS:
        raise LmmInputError(
            f"subject-level intervals form dense {q} x {q} matrices; this model has {q} "
            f"random effects (limit {MAX_DENSE_RANDOM_EFFECTS}); use re=False"
        )
    import scipy.sparse as sp

    Z, _ = random_effects_matrix(fit.terms)
    X = np.asarray(fit.design.X, dtype=float)
    if fit.design.weights is not None:  # the weighted system that the fit solved
        root = np.sqrt(fit.design.weights)
        Z = sp.diags(root) @ Z
        X = root[:, None] * X
    Lam = la.block_diag(*[np.kron(np.eye(t.nlevels), T)
                          for t, T in zip(fit.terms, fit.layout.templates(fit.theta))])
    C = (Z.T @ Z).toarray()
    LZx = Lam.T @ np.asarray(Z.T @ X)
    Omega = np.block([[Lam.T @ C @ Lam + np.eye(q), LZx], [LZx.T, X.T @ X]])
    factor = la.cholesky(Omega, lower=True)
    Z0 = sp.csr_matrix((vals, (rows, cols)), shape=(len(X0), q))
    A = np.hstack([np.asarray((Z0 @ Lam)), X0]).T
    S = la.solve_triangular(factor, A, lower=True)
    return np.sum(S * S, axis=0)
