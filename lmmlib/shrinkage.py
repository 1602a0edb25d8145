r"""Shrinkage: partial pooling in a mixed model, and empirical-Bayes moderation of variances.

Two places where many small estimates borrow strength from each other (chapter 6).

**Partial pooling.** In the model :math:`\mathbf y_i = \mathbf X_i\boldsymbol\beta +
\mathbf Z_i\mathbf b_i + \boldsymbol\varepsilon_i`, :math:`\mathbf b_i \sim \mathcal N(\mathbf
0, \boldsymbol\Sigma)`, :math:`\boldsymbol\varepsilon_i \sim \mathcal N(\mathbf 0,
\sigma^2\mathbf I)` (the notation of the book: :math:`\boldsymbol\Sigma` is one group's
covariance, and the covariance of all random effects is :math:`\mathbf I_k \otimes
\boldsymbol\Sigma`), the conditional mode of group :math:`i`'s random effects is

.. math::

    \hat{\mathbf b}_i = \mathbf W_i(\hat{\boldsymbol\beta}_i - \hat{\boldsymbol\beta}),
    \qquad
    \mathbf W_i = (\mathbf Z_i^\top\mathbf Z_i + \sigma^2\boldsymbol\Sigma^{-1})^{-1}
                  \mathbf Z_i^\top\mathbf Z_i
                = \boldsymbol\Sigma\,(\boldsymbol\Sigma
                  + \sigma^2(\mathbf Z_i^\top\mathbf Z_i)^{-1})^{-1},

with :math:`\hat{\boldsymbol\beta}_i` the group's own least-squares estimate (no pooling).
For a random intercept alone, :math:`\mathbf W_i` is the number
:math:`\lambda_i = \sigma_0^2/(\sigma_0^2 + \sigma^2/n_i)` (Gelman and Hill 2007, section 12.2).
All weights are computed at the fit's (REML or ML) estimates, plugged in as if they were the
truth, so the conditional modes are empirical BLUPs.
:func:`pooling` tabulates no, complete and partial pooling; :func:`shrinkage_factor` and
:func:`shrinkage_matrix` give the weights.

**Moderated variances** (limma; Smyth 2004, sections 3-6). Gene :math:`g`'s residual variance
:math:`s_g^2` on :math:`d_g` degrees of freedom is taken as :math:`s_g^2 \mid \sigma_g^2 \sim
\sigma_g^2\chi^2_{d_g}/d_g`, with the prior :math:`1/\sigma_g^2 \sim \chi^2_{d_0}/(d_0 s_0^2)`.
Then :math:`s_g^2 \sim s_0^2 F_{d_g, d_0}` marginally, :func:`squeeze_var` estimates
:math:`d_0` and :math:`s_0^2` by moments of :math:`\log s_g^2`, and the posterior mean of
:math:`1/\sigma_g^2` gives :math:`\tilde s_g^2 = (d_0 s_0^2 + d_g s_g^2)/(d_0 + d_g)`.
:func:`moderated_t` puts :math:`\tilde s_g` in place of :math:`s_g` in a two-group t statistic,
which then has :math:`d_0 + d_g` degrees of freedom under the null (limma's ``eBayes``).

References: Gelman, A. and Hill, J. (2007), *Data Analysis Using Regression and
Multilevel/Hierarchical Models*, chapter 12; Smyth, G. K. (2004), Linear models and empirical
Bayes methods for assessing differential expression in microarray experiments, *Statistical
Applications in Genetics and Molecular Biology* 3(1), article 3; limma 3.40's ``fitFDist``,
``squeezeVar`` and ``eBayes`` for the details the paper leaves open (the offset of zero
variances, :math:`d_0 = \infty`, the cap on the total degrees of freedom).

>>> import lmmlib
>>> fit = lmmlib.lmer("Reaction ~ Days + (Days | Subject)", lmmlib.datasets.sleepstudy())
>>> table = pooling(fit)
>>> table.query("group == '308'").round(2)[["term", "no_pooling", "partial_pooling"]]
          term  no_pooling  partial_pooling
0  (Intercept)      244.19           253.66
1         Days       21.76            19.67
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize, special, stats

from lmmlib.errors import LmmInputError

__all__ = [
    "pooling",
    "shrinkage_factor",
    "shrinkage_matrix",
    "trigamma_inverse",
    "fit_f_dist",
    "natural_spline_basis",
    "squeeze_var",
    "SqueezedVar",
    "moderated_t",
    "james_stein",
]

#: Relative rank tolerance for a group's own least-squares fit (R's ``lm`` uses 1e-7).
RANK_TOL = 1e-7


# ------------------------------------------------------------------ partial pooling
def _single_factor(fit):
    """The grouping factor of a fit with one grouping factor, its terms and their columns."""
    groups = {term.group for term in fit.terms}
    if len(groups) != 1:
        raise LmmInputError(
            f"pooling needs a model with one grouping factor, this one has {sorted(groups)}; "
            "with crossed or nested factors a group's own estimate is not defined"
        )
    (group,) = groups
    names = [name for term in fit.terms for name in term.names]
    extra = [name for name in names if name not in fit.fixef_names]
    if extra:
        raise LmmInputError(
            f"the random-effects column(s) {extra} have no fixed effect; pooling compares a "
            "group's coefficients with the population's, so each random column needs one "
            "(e.g. y ~ x + (x | g), not y ~ 1 + (x | g))"
        )
    Z = np.hstack([term.X for term in fit.terms])
    codes = fit.terms[0].codes
    levels = fit.terms[0].levels
    return group, names, Z, codes, levels


def _own_estimates(fit, names, Z, codes, nlevels):
    """Each group's least-squares coefficients for the random-effects columns (NaN when the
    group's columns are rank deficient), with the fixed-only columns held at beta-hat."""
    X = fit.design.X
    y = fit.design.y
    beta = fit.fixef.to_numpy()
    other = [k for k, name in enumerate(fit.fixef_names) if name not in names]
    offset = X[:, other] @ beta[other] if other else np.zeros_like(y)
    own = np.full((nlevels, len(names)), np.nan)
    counts = np.bincount(codes, minlength=nlevels)
    for i in range(nlevels):
        rows = codes == i
        Zi = Z[rows]
        if Zi.shape[0] < Zi.shape[1]:
            continue
        s = np.linalg.svd(Zi, compute_uv=False)
        if s[-1] <= RANK_TOL * s[0]:
            continue
        own[i] = np.linalg.lstsq(Zi, y[rows] - offset[rows], rcond=None)[0]
    return own, counts


def pooling(fit) -> pd.DataFrame:
    r"""No, complete and partial pooling of a mixed model's group coefficients, side by side.

    For a fit with one grouping factor (e.g. ``y ~ x + (x | g)``), one row per group and
    random-effects term:

    * ``no_pooling``: the group's own least-squares estimate :math:`\hat{\boldsymbol
      \beta}_i`, from its rows alone (NaN where the group cannot identify it, e.g. one
      observation for a line).  Fixed-effects columns without a random effect are held at
      the model's estimate (an offset), so only the terms that vary by group are estimated
      per group;
    * ``complete_pooling``: the least-squares estimate from all rows, groups ignored;
    * ``partial_pooling``: the mixed model's group coefficient :math:`\hat{\boldsymbol\beta}
      + \hat{\mathbf b}_i` (fixed effects plus conditional modes, lme4's ``coef()``).

    Columns ``group, term, n`` (the group's number of observations) and the three
    estimates.  Source: Gelman and Hill (2007), section 12.2.

    >>> import lmmlib
    >>> fit = lmmlib.lmer("Reaction ~ Days + (1 | Subject)", lmmlib.datasets.sleepstudy())
    >>> pooling(fit).round(1).iloc[0].to_dict()  # doctest: +NORMALIZE_WHITESPACE
    {'group': '308', 'term': '(Intercept)', 'n': 10, 'no_pooling': 295.0,
     'complete_pooling': 251.4, 'partial_pooling': 292.2}
    """
    from lmmlib.ols import OLS

    group, names, Z, codes, levels = _single_factor(fit)
    own, counts = _own_estimates(fit, names, Z, codes, len(levels))
    pooled = OLS(fit.design.y, fit.design.X, names=fit.fixef_names).coef[names].to_numpy()
    ranef = fit.ranef[group][names].to_numpy()
    partial = fit.fixef[names].to_numpy() + ranef
    k, p = own.shape
    return pd.DataFrame(
        {
            "group": np.repeat(np.asarray(levels, dtype=str), p),
            "term": np.tile(names, k),
            "n": np.repeat(counts, p),
            "no_pooling": own.ravel(),
            "complete_pooling": np.tile(pooled, k),
            "partial_pooling": partial.ravel(),
        }
    )


def shrinkage_factor(var_between, var_within, n):
    r"""Shrinkage factor of a random-intercept model,
    :math:`\lambda_i = \sigma_0^2 / (\sigma_0^2 + \sigma^2/n_i)`.

    The conditional mode of group :math:`i`'s intercept is :math:`\lambda_i` times the
    group's own deviation :math:`\bar y_i - \bar{\mathbf x}_i^\top\hat{\boldsymbol\beta}`:
    the weight of the group's own mean, whose sampling variance is :math:`\sigma^2/n_i`,
    against the population's spread :math:`\sigma_0^2` (Gelman and Hill 2007, section 12.2).
    ``var_between`` is :math:`\sigma_0^2`, ``var_within`` is :math:`\sigma^2`.
    Arguments broadcast like numpy arrays.

    >>> shrinkage_factor(4.0, 16.0, [1, 4, 16])
    array([0.2, 0.5, 0.8])
    """
    var_between = np.asarray(var_between, dtype=float)
    var_within = np.asarray(var_within, dtype=float)
    n = np.asarray(n, dtype=float)
    if np.any(var_between < 0) or np.any(var_within <= 0) or np.any(n <= 0):
        raise LmmInputError(
            "shrinkage_factor needs var_between >= 0, var_within > 0 and n > 0"
        )
    return var_between / (var_between + var_within / n)


def shrinkage_matrix(fit) -> pd.DataFrame:
    r"""The weight matrices :math:`\mathbf W_i` that carry each group's own estimate to its
    conditional mode, :math:`\hat{\mathbf b}_i = \mathbf W_i(\hat{\boldsymbol\beta}_i -
    \hat{\boldsymbol\beta})`.

    .. math::

        \mathbf W_i = (\sigma^2\mathbf I + \boldsymbol\Sigma\,\mathbf Z_i^\top\mathbf Z_i)^{-1}
                      \boldsymbol\Sigma\,\mathbf Z_i^\top\mathbf Z_i
                    = \boldsymbol\Sigma\,(\boldsymbol\Sigma
                      + \sigma^2(\mathbf Z_i^\top\mathbf Z_i)^{-1})^{-1},

    at the fit's :math:`\boldsymbol\Sigma` (one group's random-effects covariance) and
    :math:`\sigma^2`; the first form also holds for a singular :math:`\boldsymbol\Sigma` or a
    group that cannot identify its own estimate.  It follows from :math:`\hat{\mathbf b}_i =
    \boldsymbol\Sigma\mathbf Z_i^\top\mathbf V_i^{-1}(\mathbf y_i -
    \mathbf X_i\hat{\boldsymbol\beta})` by the Woodbury identity (Henderson 1975).  For a
    random intercept alone it is :func:`shrinkage_factor`.  With correlated intercepts and
    slopes it is a full matrix: a group's intercept borrows from its slope, so the arrow from
    :math:`\hat{\boldsymbol\beta}_i` to :math:`\hat{\boldsymbol\beta} + \hat{\mathbf b}_i`
    need not point at :math:`\hat{\boldsymbol\beta}`, and one coordinate can move away from
    it.  What always holds is shrinkage in the metric of :math:`\boldsymbol\Sigma`:
    :math:`\boldsymbol\Sigma^{-1/2}\mathbf W_i\boldsymbol\Sigma^{1/2} = (\mathbf I +
    \boldsymbol\Sigma^{-1/2}\mathbf S_i\boldsymbol\Sigma^{-1/2})^{-1}` with :math:`\mathbf
    S_i = \sigma^2(\mathbf Z_i^\top\mathbf Z_i)^{-1}` has eigenvalues in (0, 1).

    Returns a DataFrame indexed by (group, term) with one column per term: the rows of
    group ``i`` hold :math:`\mathbf W_i`.  Needs a fit with one grouping factor.

    >>> import lmmlib
    >>> fit = lmmlib.lmer("Reaction ~ Days + (Days | Subject)", lmmlib.datasets.sleepstudy())
    >>> shrinkage_matrix(fit).loc["308"].to_numpy().round(3)
    array([[0.751, 0.68 ],
           [0.038, 0.838]])
    """
    group, names, Z, codes, levels = _single_factor(fit)
    Sigma = _covariance(fit, group, names)
    sigma2 = fit.sigma**2
    p = len(names)
    blocks = []
    for i in range(len(levels)):
        Zi = Z[codes == i]
        SZZ = Sigma @ (Zi.T @ Zi)
        blocks.append(np.linalg.solve(sigma2 * np.eye(p) + SZZ, SZZ))
    index = pd.MultiIndex.from_product([np.asarray(levels, dtype=str), names],
                                       names=["group", "term"])
    return pd.DataFrame(np.vstack(blocks), index=index, columns=names)


def _covariance(fit, group, names) -> np.ndarray:
    """One group's random-effects covariance Sigma for ``group``, in the order of
    ``names``: block diagonal over the group's terms, ``sigma^2 T_k T_k'`` for each (so
    ``(x || g)``, two terms of one factor, gets a zero covariance)."""
    blocks = [fit.sigma**2 * T @ T.T
              for term, T in zip(fit.terms, fit.layout.templates(fit.theta))
              if term.group == group]
    Sigma = np.zeros((len(names), len(names)))
    start = 0
    for block in blocks:
        size = block.shape[0]
        Sigma[start:start + size, start:start + size] = block
        start += size
    return Sigma


# ------------------------------------------------------------------ moderated variances
def trigamma_inverse(x):
    r"""The :math:`y > 0` with :math:`\psi'(y) = x`, for :math:`x > 0` (elementwise).

    :math:`\psi'` (the trigamma function) decreases from :math:`\infty` to 0, and
    :math:`1/y < \psi'(y) < 1/y + 1/y^2`, so the root lies between :math:`\max(1/x,
    1/\sqrt x)` and :math:`\max(2/x, \sqrt{2/x})`; it is found by Brent's method.
    Smyth (2004) needs it to turn the excess variance of :math:`\log s_g^2` into
    :math:`d_0/2`.

    >>> round(float(trigamma_inverse(np.pi**2 / 6)), 10)  # psi'(1) = pi^2/6
    1.0
    """
    x = np.asarray(x, dtype=float)
    if np.any(~np.isfinite(x)) or np.any(x <= 0):
        raise LmmInputError("trigamma_inverse needs finite x > 0")
    out = np.empty_like(x)
    for i, value in np.ndenumerate(x):
        lo = max(1 / value, 1 / np.sqrt(value))
        hi = max(2 / value, np.sqrt(2 / value))
        out[i] = optimize.brentq(lambda y, v=value: special.polygamma(1, y) - v, lo, hi,
                                 xtol=1e-14 * hi, rtol=1e-15, maxiter=200)
    return out if out.ndim else float(out)


def _check_variances(var, df):
    var = np.asarray(var, dtype=float)
    if var.ndim != 1:
        raise LmmInputError(f"var must be one-dimensional, got shape {var.shape}")
    if var.size < 3:
        raise LmmInputError(
            f"squeezing variances needs at least 3 genes to estimate the prior, got {var.size}"
        )
    bad = ~np.isfinite(var)
    if bad.any():
        raise LmmInputError(f"var has {int(bad.sum())} missing or infinite value(s) "
                            f"(first at position {int(np.flatnonzero(bad)[0])})")
    if np.any(var < 0):
        raise LmmInputError(f"var has {int(np.sum(var < 0))} negative value(s); "
                            "variances cannot be negative")
    df = np.broadcast_to(np.asarray(df, dtype=float), var.shape).copy()
    if np.any(~np.isfinite(df)) or np.any(df <= 0):
        raise LmmInputError("df must be finite and > 0 for every gene (the residual degrees "
                            "of freedom of each variance)")
    return var, df


def fit_f_dist(var, df, covariate=None) -> tuple[float | np.ndarray, float]:
    r"""Fit :math:`s_g^2 \sim s_0^2 F_{d_g, d_0}` by moments of :math:`\log s_g^2`
    (Smyth 2004, section 6; limma's ``fitFDist``).  Returns ``(var_prior, df_prior)``.

    With :math:`z_g = \log s_g^2`, the moments of the log of a scaled F variable give

    .. math::

        \mathrm E\,z_g = \log s_0^2 + \psi(d_g/2) - \psi(d_0/2) + \log(d_0/d_g), \qquad
        \operatorname{Var} z_g = \psi'(d_g/2) + \psi'(d_0/2).

    So with :math:`e_g = z_g - \psi(d_g/2) + \log(d_g/2)`, mean :math:`\bar e` and sample
    variance :math:`S_e^2` (divisor :math:`G-1`):
    :math:`\psi'(d_0/2) = S_e^2 - \overline{\psi'(d_g/2)}` is solved for :math:`d_0`
    (:func:`trigamma_inverse`), and :math:`s_0^2 = \exp(\bar e + \psi(d_0/2) -
    \log(d_0/2))`.  When the right-hand side is :math:`\le 0` the variances are no more
    variable than :math:`\chi^2` sampling alone: :math:`d_0 = \infty` and, as limma (since
    2017), :math:`s_0^2` is the mean of the variances.  Zero variances are first raised to
    :math:`10^{-5}` times the median, as limma does, with a warning.

    With a ``covariate`` (limma's ``trend=TRUE``, where it is each gene's average
    log-expression), :math:`\bar e` becomes a natural cubic spline in the covariate with
    :math:`\min(4, \#\text{distinct values})` basis functions (boundary knots at the range,
    interior knots at equally spaced quantiles: the space of R's ``ns(x, df, intercept =
    TRUE)``), :math:`S_e^2` its residual mean square, and ``var_prior`` one value per gene
    (limma-trend: Sartor et al. 2006, BMC Bioinformatics 7:538; Law et al. 2014, Genome
    Biology 15:R29).

    >>> z = np.log(4.0) + np.array([-1.0, 0.0, 1.0]) * np.pi / np.sqrt(3)
    >>> [round(v, 8) for v in fit_f_dist(np.exp(z), 2)]  # S_e^2 = pi^2/3 = 2 psi'(1)
    [4.0, 2.0]
    """
    var, df = _check_variances(var, df)
    median = np.median(var)
    if median == 0:
        raise LmmInputError("more than half of the variances are exactly zero: the prior "
                            "cannot be estimated")
    zero = var == 0
    if zero.any():
        warnings.warn(f"{int(zero.sum())} zero variance(s) raised to 1e-5 times the median "
                      "(as limma)", UserWarning, stacklevel=2)
    var = np.maximum(var, 1e-5 * median)
    e = np.log(var) - special.digamma(df / 2) + np.log(df / 2)
    if covariate is None:
        e_mean, e_var = np.mean(e), np.var(e, ddof=1)
    else:
        basis = natural_spline_basis(_check_covariate(covariate, var.size))
        coef, *_ = np.linalg.lstsq(basis, e, rcond=None)
        e_mean = basis @ coef
        rank = np.linalg.matrix_rank(basis)
        if var.size <= rank:
            raise LmmInputError(f"{var.size} genes cannot estimate a trend with {rank} "
                                "basis functions")
        e_var = np.sum((e - e_mean) ** 2) / (var.size - rank)
    excess = e_var - np.mean(special.polygamma(1, df / 2))
    if excess <= 0:
        var_prior = np.mean(var) if covariate is None else np.exp(e_mean)
        return var_prior, np.inf
    df_prior = float(2 * trigamma_inverse(excess))
    var_prior = np.exp(e_mean + special.digamma(df_prior / 2) - np.log(df_prior / 2))
    return (float(var_prior) if covariate is None else var_prior), df_prior


def _check_covariate(covariate, n):
    x = np.asarray(covariate, dtype=float)
    if x.shape != (n,):
        raise LmmInputError(f"covariate needs one value per gene ({n}), got shape {x.shape}")
    if np.any(~np.isfinite(x)):
        raise LmmInputError("covariate has missing or infinite values")
    return x


def natural_spline_basis(x, df: int = 4) -> np.ndarray:
    r"""A basis of the natural cubic splines in ``x`` with ``min(df, #distinct x)``
    functions, intercept included: boundary knots at the range of ``x`` and ``K - 2``
    interior knots at equally spaced quantiles (the column space of R's ``splines::ns(x,
    df, intercept = TRUE)``).  Built from the truncated-power form of Hastie, Tibshirani and
    Friedman (2009), eqs. 5.4-5.5: :math:`N_1 = 1`, :math:`N_2 = x`, :math:`N_{k+2} =
    d_k - d_{K-1}` with :math:`d_k(x) = ((x-\xi_k)_+^3 - (x-\xi_K)_+^3)/(\xi_K - \xi_k)`.
    Linear beyond the boundary knots.

    >>> natural_spline_basis(np.arange(6.0)).shape
    (6, 4)
    """
    x = np.asarray(x, dtype=float)
    K = int(min(df, np.unique(x).size))
    if K < 2:
        return np.ones((x.size, 1))
    knots = np.quantile(x, np.linspace(0, 1, K))
    scale = knots[-1] - knots[0]
    u = (x - knots[0]) / scale          # a scale-free basis: better conditioned
    xi = (knots - knots[0]) / scale

    def d(k):
        return (np.maximum(u - xi[k], 0) ** 3 - np.maximum(u - xi[-1], 0) ** 3) / (xi[-1] - xi[k])

    columns = [np.ones_like(u), u] + [d(k) - d(K - 2) for k in range(K - 2)]
    return np.column_stack(columns)


@dataclass(frozen=True)
class SqueezedVar:
    """Result of :func:`squeeze_var`, with limma's names: ``df_prior`` (:math:`d_0`, may be
    ``inf``), ``var_prior`` (:math:`s_0^2`) and ``var_post`` (:math:`\\tilde s_g^2`, one per
    gene, a Series when the input was one); with a covariate ``var_prior`` is one value per
    gene."""

    df_prior: float
    var_prior: float | np.ndarray
    var_post: np.ndarray | pd.Series


def squeeze_var(var, df, covariate=None) -> SqueezedVar:
    r"""Empirical-Bayes posterior variances, as limma's ``squeezeVar`` (Smyth 2004).

    Estimates the prior's degrees of freedom :math:`d_0` and scale :math:`s_0^2` from all
    genes (:func:`fit_f_dist`) and returns, for each gene,

    .. math::

        \tilde s_g^2 = \frac{d_0 s_0^2 + d_g s_g^2}{d_0 + d_g},

    a weighted mean of the prior value and the gene's own variance with weights equal to
    their degrees of freedom (:math:`\tilde s_g^2 = s_0^2` when :math:`d_0 = \infty`).

    **Relation to limma.**  This reproduces limma 3.40's ``squeezeVar``/``fitFDist``, the path
    that later limma versions keep as ``squeezeVar(..., legacy = TRUE)`` (their default when
    all genes have the same residual degrees of freedom; for unequal ones newer limma uses a
    different estimator by default).  limma's ``robust = TRUE`` is not implemented.  Bad input
    is handled differently, deliberately: where limma warns that more than half of the
    variances are exactly zero and carries on, ``squeeze_var`` raises
    :class:`~lmmlib.errors.LmmInputError`; and where limma silently leaves genes with a
    missing or infinite variance, or zero degrees of freedom, out of the estimate of the
    prior, ``squeeze_var`` raises too, naming the problem (drop such genes first if that is
    what you mean).  Zero variances in fewer than half of the genes are offset as in limma,
    with a warning.

    Parameters
    ----------
    var : array-like or Series, one variance :math:`s_g^2 \ge 0` per gene (at least 3)
    df : float or array-like, the residual degrees of freedom :math:`d_g > 0`
    covariate : array-like, optional, one value per gene (limma's ``trend``): the prior
        scale :math:`s_0^2` then follows a smooth trend in it (:func:`fit_f_dist`)

    >>> sq = squeeze_var([0.1, 0.5, 1.0, 2.0, 8.0], 3)
    >>> round(sq.df_prior, 3), round(sq.var_prior, 3), sq.var_post.round(3).tolist()
    (1.948, 0.763, [0.361, 0.604, 0.907, 1.513, 5.151])
    """
    index = var.index if isinstance(var, pd.Series) else None
    values, dfs = _check_variances(var, df)
    var_prior, df_prior = fit_f_dist(values, dfs, covariate)
    if np.isinf(df_prior):
        post = np.broadcast_to(var_prior, values.shape).astype(float)
    else:
        post = (df_prior * var_prior + dfs * values) / (df_prior + dfs)
    if index is not None:
        post = pd.Series(post, index=index, name="var_post")
    return SqueezedVar(df_prior=df_prior, var_prior=var_prior, var_post=post)


def moderated_t(expression, group, trend: bool = False) -> pd.DataFrame:
    r"""Ordinary and moderated t statistics for a two-group comparison of every gene
    (limma's ``lmFit`` with design ``~ group`` followed by ``eBayes``; Smyth 2004).

    For gene :math:`g` with group means :math:`\bar y_{g1}, \bar y_{g2}` of :math:`m_1, m_2`
    samples, the coefficient is :math:`\hat\beta_g = \bar y_{g2} - \bar y_{g1}` (limma's
    ``logFC`` on a log scale), with unscaled standard deviation :math:`v^{1/2} = (1/m_1 +
    1/m_2)^{1/2}` and pooled variance :math:`s_g^2` on :math:`d = m_1 + m_2 - 2` degrees of
    freedom.  Then

    .. math::

        t_g = \frac{\hat\beta_g}{s_g v^{1/2}} \sim t_d, \qquad
        \tilde t_g = \frac{\hat\beta_g}{\tilde s_g v^{1/2}} \sim t_{d_0 + d}
        \quad\text{under } \beta_g = 0,

    with :math:`\tilde s_g^2` from :func:`squeeze_var`.  The :math:`t_{d_0 + d}`
    distribution is exact when the true variances follow the prior and :math:`d_0`,
    :math:`s_0^2` are known; with estimated ones it is an approximation, which fails where
    the prior does not fit (e.g. one :math:`s_0^2` for genes whose variances follow a trend:
    use ``trend=True``).  As limma, the total degrees of
    freedom are capped at the pooled :math:`G d` (which matters only when :math:`d_0 =
    \infty`).  P-values are two-sided.

    Parameters
    ----------
    expression : DataFrame or 2-D array, genes x samples (log scale), no missing values
    group : sequence of two labels, one per sample; the first label met is the reference
    trend : bool
        limma's ``eBayes(trend = TRUE)``: the prior variance follows a trend in each gene's
        average expression (its mean over all samples, limma's ``Amean``)

    Returns
    -------
    DataFrame, one row per gene: ``logFC``, ``sigma`` (:math:`s_g`), ``t``, ``p_value``
    (ordinary), ``s2_post``, ``t_moderated``, ``df_total``, ``p_moderated``; the prior is in
    ``attrs`` (``df_prior``, ``s2_prior``, an array with ``trend``).

    >>> rng = np.random.default_rng(1)
    >>> y = rng.normal(size=(200, 6))
    >>> res = moderated_t(y, ["a"] * 3 + ["b"] * 3)
    >>> list(res.columns[:4]), res.shape
    (['logFC', 'sigma', 't', 'p_value'], (200, 8))
    """
    index = expression.index if isinstance(expression, pd.DataFrame) else None
    Y = np.asarray(expression, dtype=float)
    if Y.ndim != 2:
        raise LmmInputError(f"expression must be genes x samples (2-D), got shape {Y.shape}")
    if np.any(~np.isfinite(Y)):
        raise LmmInputError(f"expression has {int(np.sum(~np.isfinite(Y)))} missing or "
                            "infinite value(s)")
    group = np.asarray(group)
    if group.shape != (Y.shape[1],):
        raise LmmInputError(f"group needs one label per sample ({Y.shape[1]}), "
                            f"got {group.size}")
    labels = list(dict.fromkeys(group.tolist()))
    if len(labels) != 2:
        raise LmmInputError(f"group must have exactly two levels, got {labels}")
    first, second = (group == labels[0]), (group == labels[1])
    m1, m2 = int(first.sum()), int(second.sum())
    d = m1 + m2 - 2
    if d < 1:
        raise LmmInputError("a two-group comparison needs at least 3 samples "
                            "(residual degrees of freedom m1 + m2 - 2 > 0)")
    mean1, mean2 = Y[:, first].mean(axis=1), Y[:, second].mean(axis=1)
    rss = ((Y[:, first] - mean1[:, None]) ** 2).sum(axis=1) + \
        ((Y[:, second] - mean2[:, None]) ** 2).sum(axis=1)
    s2 = rss / d
    coef = mean2 - mean1
    unscaled = np.sqrt(1 / m1 + 1 / m2)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = coef / (np.sqrt(s2) * unscaled)
    sq = squeeze_var(s2, d, Y.mean(axis=1) if trend else None)
    t_mod = coef / (np.sqrt(sq.var_post) * unscaled)
    df_total = min(d + sq.df_prior, d * len(s2))
    out = pd.DataFrame(
        {
            "logFC": coef,
            "sigma": np.sqrt(s2),
            "t": t,
            "p_value": 2 * stats.t.sf(np.abs(t), d),
            "s2_post": sq.var_post,
            "t_moderated": t_mod,
            "df_total": df_total,
            "p_moderated": 2 * stats.t.sf(np.abs(t_mod), df_total),
        },
        index=index,
    )
    out.attrs.update(df_prior=sq.df_prior, s2_prior=sq.var_prior)
    return out


# ------------------------------------------------------------------ James-Stein
def james_stein(x, var) -> np.ndarray:
    r"""Positive-part James-Stein estimates of :math:`k \ge 4` means, shrunk towards their
    grand mean (Efron and Morris 1975, with the positive part):

    .. math::

        \hat\theta_i = \bar x + \Bigl(1 - \frac{(k-3)\,\sigma^2}
        {\sum_i (x_i - \bar x)^2}\Bigr)_+ (x_i - \bar x),

    for :math:`x_i \sim \mathcal N(\theta_i, \sigma^2)` independent with known
    :math:`\sigma^2` (``var``).  For :math:`k \ge 4` its total squared error is smaller than
    that of the :math:`x_i` themselves for every :math:`\boldsymbol\theta`.

    >>> james_stein([1.0, 2.0, 3.0, 4.0, 10.0], 1.0).round(3).tolist()
    [1.12, 2.08, 3.04, 4.0, 9.76]
    """
    x = np.asarray(x, dtype=float)
    if x.ndim != 1 or x.size < 4 or np.any(~np.isfinite(x)):
        raise LmmInputError("james_stein needs at least 4 finite values")
    if not np.isfinite(var) or var <= 0:
        raise LmmInputError(f"var must be a positive number, got {var!r}")
    centred = x - x.mean()
    ss = float(centred @ centred)
    factor = 0.0 if ss == 0 else max(0.0, 1 - (x.size - 3) * var / ss)
    return x.mean() + factor * centred
