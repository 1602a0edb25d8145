"""lmmlib.shrinkage: partial pooling, shrinkage factors and limma's moderated variances.

Reference values:
* the shrinkage factor and its matrix form against lmer's conditional modes (which are
  checked against lme4 in test_lmm_lme4.py);
* squeeze_var against values derived by hand from Smyth (2004), Statistical Applications in
  Genetics and Molecular Biology 3(1), article 3: the moment equations for the scaled F
  distribution of s_g^2 in its section "Estimation of hyperparameters" (E log s_g^2 =
  log s0^2 + psi(d/2) - psi(d0/2) + log(d0/d), Var log s_g^2 = psi'(d/2) + psi'(d0/2), solved
  with e_g = log s_g^2 - psi(d/2) + log(d/2)), and the posterior variance of its section on
  the moderated t-statistic, s~^2 = (d0 s0^2 + d s^2) / (d0 + d) (the paper's equation
  numbers could not be checked here, so the sections are cited by name), as limma 3.40's
  fitFDist and squeezeVar (today's legacy = TRUE path) implement them, at inputs chosen so that trigamma has a closed form
  (psi'(1) = pi^2/6, psi'(1/2) = pi^2/2, psi'(2) = pi^2/6 - 1);
  limma 3.40's fitFDist for d0 = inf (s0^2 = mean of the variances);
* simulation truth: recovery of d0 and s0^2, uniform p-values under the null.
"""

from __future__ import annotations

import doctest

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose
from scipy import special, stats

import lmmlib
import lmmlib.shrinkage as shrinkage
from lmmlib.errors import LmmInputError
from lmmlib.shrinkage import (
    fit_f_dist,
    james_stein,
    moderated_t,
    pooling,
    shrinkage_factor,
    shrinkage_matrix,
    squeeze_var,
    trigamma_inverse,
)

EULER = np.euler_gamma


@pytest.fixture(scope="module")
def fit_slopes(sleep):
    return lmmlib.lmer("Reaction ~ Days + (Days | Subject)", sleep)


def test_doctests():
    failures, tried = doctest.testmod(shrinkage, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert tried > 10 and failures == 0


# ------------------------------------------------------------------ shrinkage factor
@pytest.mark.parametrize("formula", ["Reaction ~ 1 + (1 | Subject)",
                                     "Reaction ~ Days + (1 | Subject)"])
def test_shrinkage_factor_is_ratio_of_mode_to_raw_deviation(sleep, formula):
    """Balanced random intercepts: lambda = b_j / (group mean - population mean)."""
    fit = lmmlib.lmer(formula, sleep)
    var_b = fit.varcorr["vcov"].iloc[0]
    lam = shrinkage_factor(var_b, fit.sigma**2, 10)
    by = sleep.groupby("Subject", observed=True).agg(y=("Reaction", "mean"), x=("Days", "mean"))
    population = fit.fixef["(Intercept)"] + fit.fixef.get("Days", 0.0) * by["x"]
    ratio = fit.ranef["Subject"]["(Intercept)"] / (by["y"] - population)
    assert_allclose(ratio.to_numpy(), lam, rtol=1e-7)
    # and in the pooling table: partial - population = lambda (own - population)
    table = pooling(fit)
    beta0 = fit.fixef["(Intercept)"]
    assert_allclose(table["partial_pooling"] - beta0, lam * (table["no_pooling"] - beta0),
                    rtol=1e-7)
    assert 0.8 < lam < 1   # ten days each and sigma_b ~ sigma: little to shrink


def test_shrinkage_factor_unbalanced_simulation():
    """Unbalanced groups: lambda_j = s_b^2 / (s_b^2 + s^2 / n_j) for every group."""
    rng = np.random.default_rng(11)
    n = np.array([1, 2, 3, 5, 8, 13, 21, 2, 4, 1, 30, 6])
    g = np.repeat(np.arange(n.size), n)
    y = 10 + rng.normal(0, 2, n.size)[g] + rng.normal(0, 3, g.size)
    data = pd.DataFrame({"y": y, "g": pd.Categorical(g)})
    fit = lmmlib.lmer("y ~ 1 + (1 | g)", data)
    lam = shrinkage_factor(fit.varcorr["vcov"].iloc[0], fit.sigma**2, n)
    means = data.groupby("g", observed=True)["y"].mean().to_numpy()
    b = fit.ranef["g"]["(Intercept)"].to_numpy()
    assert_allclose(b, lam * (means - fit.fixef.iloc[0]), rtol=1e-7, atol=1e-10)
    # small groups move most
    assert lam[n == 1].max() < lam[n == 30].min()


def test_shrinkage_factor_errors():
    with pytest.raises(LmmInputError):
        shrinkage_factor(-1.0, 1.0, 3)
    with pytest.raises(LmmInputError):
        shrinkage_factor(1.0, 0.0, 3)
    assert shrinkage_factor(0.0, 1.0, 5) == 0.0


# ------------------------------------------------------------------ matrix form
def _own_minus_fixef(table, fit):
    own = table.pivot(index="group", columns="term", values="no_pooling")
    return own[fit.ranef["Subject"].columns] - fit.fixef[fit.ranef["Subject"].columns]


def test_shrinkage_matrix_reproduces_ranef(fit_slopes):
    W = shrinkage_matrix(fit_slopes)
    dev = _own_minus_fixef(pooling(fit_slopes), fit_slopes)
    for subject, modes in fit_slopes.ranef["Subject"].iterrows():
        assert_allclose(W.loc[str(subject)].to_numpy() @ dev.loc[str(subject)].to_numpy(),
                        modes.to_numpy(), rtol=1e-6, atol=1e-8)
    # with correlated terms W is not diagonal: the intercept borrows from the slope
    assert abs(W.loc["308"].iloc[0, 1]) > 0.1


def test_shrinkage_matrix_unbalanced_and_unidentified_group(sleep):
    """Unbalanced subjects, one with a single day: W still reproduces ranef where the
    subject's own line exists, and that subject's own estimate is NaN."""
    rng = np.random.default_rng(3)
    keep = rng.random(len(sleep)) < 0.6
    data = sleep[keep].copy()
    one = data[data["Subject"] == "309"].index[:1]
    data = pd.concat([data[data["Subject"] != "309"], data.loc[one]])
    fit = lmmlib.lmer("Reaction ~ Days + (Days | Subject)", data)
    table = pooling(fit)
    assert table.query("group == '309'")["no_pooling"].isna().all()
    assert table.query("group == '309'")["n"].iloc[0] == 1
    W = shrinkage_matrix(fit)
    dev = _own_minus_fixef(table, fit)
    for subject, modes in fit.ranef["Subject"].iterrows():
        if subject == "309":
            continue
        assert_allclose(W.loc[str(subject)].to_numpy() @ dev.loc[str(subject)].to_numpy(),
                        modes.to_numpy(), rtol=1e-5, atol=1e-6)
    # W equals G (G + s^2 (Z'Z)^-1)^-1, the second form of the docstring
    G = fit.varcorr
    Gm = np.array([[G["vcov"].iloc[0], G["vcov"].iloc[2]], [G["vcov"].iloc[2], G["vcov"].iloc[1]]])
    rows = data["Subject"] == "308"
    Z = np.column_stack([np.ones(rows.sum()), data.loc[rows, "Days"]])
    W2 = Gm @ np.linalg.inv(Gm + fit.sigma**2 * np.linalg.inv(Z.T @ Z))
    assert_allclose(W.loc["308"].to_numpy(), W2, rtol=1e-10)


def test_pooling_columns(sleep, fit_slopes):
    table = pooling(fit_slopes)
    assert list(table.columns) == ["group", "term", "n", "no_pooling", "complete_pooling",
                                   "partial_pooling"]
    assert len(table) == 36
    one = sleep[sleep["Subject"] == "330"]
    own = lmmlib.ols("Reaction ~ Days", one).coef
    rows = table[table["group"] == "330"].set_index("term")
    assert_allclose(rows["no_pooling"], own[rows.index], rtol=1e-10)
    pooled = lmmlib.ols("Reaction ~ Days", sleep).coef
    assert_allclose(rows["complete_pooling"], pooled[rows.index], rtol=1e-10)
    coef = fit_slopes.fixef + fit_slopes.ranef["Subject"].loc["330"]
    assert_allclose(rows["partial_pooling"], coef[rows.index], rtol=1e-12)


def test_pooling_rejects_crossed_and_unmatched(sleep):
    batch = np.arange(len(sleep)) % 4
    data = sleep.assign(batch=pd.Categorical(batch), Reaction=sleep["Reaction"] + 40 * batch)
    fit = lmmlib.lmer("Reaction ~ Days + (1 | Subject) + (1 | batch)", data)
    with pytest.raises(LmmInputError, match="one grouping factor"):
        pooling(fit)
    fit = lmmlib.lmer("Reaction ~ 1 + (0 + Days | Subject)", sleep)
    with pytest.raises(LmmInputError, match="no fixed effect"):
        shrinkage_matrix(fit)


# ------------------------------------------------------------------ trigamma inverse
@pytest.mark.parametrize("y, x", [(1.0, np.pi**2 / 6), (0.5, np.pi**2 / 2),
                                  (2.0, np.pi**2 / 6 - 1)])
def test_trigamma_inverse_closed_forms(y, x):
    assert_allclose(trigamma_inverse(x), y, rtol=1e-12)


def test_trigamma_inverse_range():
    x = np.logspace(-8, 8, 33)
    assert_allclose(special.polygamma(1, trigamma_inverse(x)), x, rtol=1e-10)


# ------------------------------------------------------------------ squeeze_var
def _log_variances(mean, sd, k=5):
    """k log-variances with exactly the given mean and sample SD (divisor k - 1)."""
    u = np.linspace(-1, 1, k)
    u = (u - u.mean()) / u.std(ddof=1)
    return mean + sd * u


def test_fit_f_dist_by_hand_d2():
    """d = 2: e_g = z_g - psi(1) + log 1 = z_g + gamma.  With S_e^2 = 2 psi'(1) = pi^2/3,
    psi'(d0/2) = S_e^2 - psi'(1) = pi^2/6 gives d0 = 2, and
    s0^2 = exp(mean e + psi(1) - log 1) = exp(mean z)."""
    z = _log_variances(np.log(0.3), np.pi / np.sqrt(3))
    var_prior, df_prior = fit_f_dist(np.exp(z), 2)
    assert_allclose(df_prior, 2.0, rtol=1e-10)
    assert_allclose(var_prior, 0.3, rtol=1e-10)


def test_squeeze_var_by_hand_d4():
    """d = 4: psi'(2) = pi^2/6 - 1.  Choose S_e^2 = psi'(2) + psi'(1/2) = pi^2/6 - 1 + pi^2/2,
    so d0 = 1.  With psi(2) = 1 - gamma, e_g = z_g - 1 + gamma + log 2, and
    s0^2 = exp(mean e + psi(1/2) - log(1/2)) with psi(1/2) = -gamma - 2 log 2:
    s0^2 = exp(mean z - 1 + gamma + log 2 - gamma - 2 log 2 + log 2) = exp(mean z - 1).
    Posterior: (d0 s0^2 + d s^2) / (d0 + d) = (s0^2 + 4 s^2) / 5."""
    sd = np.sqrt(np.pi**2 / 6 - 1 + np.pi**2 / 2)
    z = _log_variances(np.log(2.0), sd, k=7)
    s2 = np.exp(z)
    sq = squeeze_var(pd.Series(s2, index=list("abcdefg")), 4)
    assert_allclose(sq.df_prior, 1.0, rtol=1e-10)
    s0 = np.exp(np.log(2.0) - 1)
    assert_allclose(sq.var_prior, s0, rtol=1e-10)
    assert_allclose(sq.var_post.to_numpy(), (s0 + 4 * s2) / 5, rtol=1e-10)
    assert list(sq.var_post.index) == list("abcdefg")


def test_squeeze_var_infinite_prior_df():
    """Variances less variable than chi-square sampling: d0 = inf, s0^2 = their mean
    (limma's fitFDist since 2017), and every posterior variance is s0^2."""
    s2 = np.array([1.0, 1.05, 0.95, 1.02, 0.98])
    sq = squeeze_var(s2, 3)
    assert np.isinf(sq.df_prior)
    assert_allclose(sq.var_prior, s2.mean(), rtol=1e-14)
    assert_allclose(sq.var_post, s2.mean(), rtol=1e-14)


def test_squeeze_var_recovers_prior():
    """Data simulated from the model: 1/sigma_g^2 ~ chi2_{d0} / (d0 s0^2),
    s_g^2 ~ sigma_g^2 chi2_d / d.  20,000 genes recover d0 and s0^2."""
    rng = np.random.default_rng(2004)
    G, d0, s0sq, d = 20000, 5.0, 0.04, 4
    sigma2 = d0 * s0sq / rng.chisquare(d0, G)
    s2 = sigma2 * rng.chisquare(d, G) / d
    sq = squeeze_var(s2, d)
    assert_allclose(sq.df_prior, d0, rtol=0.12)
    assert_allclose(sq.var_prior, s0sq, rtol=0.03)
    # the posterior variances are closer to the truth than the sample variances
    assert np.mean((sq.var_post - sigma2) ** 2) < 0.8 * np.mean((s2 - sigma2) ** 2)


def test_squeeze_var_unequal_df():
    rng = np.random.default_rng(7)
    G, d0, s0sq = 20000, 8.0, 1.5
    d = rng.integers(2, 10, G).astype(float)
    s2 = d0 * s0sq / rng.chisquare(d0, G) * rng.chisquare(d) / d
    sq = squeeze_var(s2, d)
    assert_allclose(sq.df_prior, d0, rtol=0.15)
    assert_allclose(sq.var_prior, s0sq, rtol=0.03)
    assert_allclose(sq.var_post, (sq.df_prior * sq.var_prior + d * s2) / (sq.df_prior + d))


@pytest.mark.parametrize("var, df, message", [
    ([1.0, -0.5, 2.0], 3, "negative"),
    ([1.0, np.nan, 2.0], 3, "missing"),
    ([1.0, 2.0, 3.0], 0, "df must"),
    ([1.0, 2.0, 3.0], [3, -1, 3], "df must"),
    ([1.0, 2.0], 3, "at least 3"),
    ([0.0, 0.0, 1.0], 3, "zero"),
])
def test_squeeze_var_errors(var, df, message):
    with pytest.raises(LmmInputError, match=message):
        squeeze_var(var, df)


def test_squeeze_var_zero_variance_offset_warns():
    with pytest.warns(UserWarning, match="zero variance"):
        sq = squeeze_var([0.0, 1.0, 2.0, 3.0], 3)
    assert np.all(sq.var_post > 0)


# ------------------------------------------------------------------ moderated t
def test_moderated_t_ordinary_part_matches_scipy():
    rng = np.random.default_rng(5)
    y = rng.normal(size=(300, 7))
    group = ["c"] * 3 + ["t"] * 4
    res = moderated_t(pd.DataFrame(y), group)
    t, p = stats.ttest_ind(y[:, 3:], y[:, :3], axis=1)
    assert_allclose(res["t"], t, rtol=1e-10)
    assert_allclose(res["p_value"], p, rtol=1e-8)
    sq = squeeze_var(res["sigma"] ** 2, 5)
    assert res.attrs["df_prior"] == pytest.approx(sq.df_prior, rel=1e-12)
    assert_allclose(res["t_moderated"],
                    res["logFC"] / np.sqrt(sq.var_post * (1 / 3 + 1 / 4)), rtol=1e-12)


def test_moderated_t_null_p_values_uniform():
    """Under the null (no gene changed) and the model's prior, the moderated p-values are
    uniform: 40 simulated experiments of 2,000 genes, 3 + 3 samples."""
    rng = np.random.default_rng(42)
    G, d0, s0sq = 2000, 6.0, 0.05
    pvalues, dfs = [], []
    for _ in range(40):
        sigma = np.sqrt(d0 * s0sq / rng.chisquare(d0, G))
        y = 8 + sigma[:, None] * rng.standard_normal((G, 6))
        res = moderated_t(y, ["a", "a", "a", "b", "b", "b"])
        pvalues.append(res["p_moderated"].to_numpy())
        dfs.append(res["df_total"].iloc[0])
    p = np.concatenate(pvalues)
    assert stats.kstest(p, "uniform").pvalue > 0.01
    assert abs(np.mean(p < 0.05) - 0.05) < 4 * np.sqrt(0.05 * 0.95 / p.size)
    assert abs(np.mean(dfs) - (4 + d0)) < 1.0


def test_moderated_t_infinite_prior_caps_df():
    """With d0 = inf, limma caps the total df at the pooled G d."""
    # every gene has the same residuals, so the same variance: no extra spread at all
    y = np.array([[0.0, 1.0, 0.5, 1.5], [0.1, 1.1, 0.6, 1.6],
                  [3.0, 4.0, 0.5, 1.5], [0.2, 1.2, 0.7, 1.7]])
    res = moderated_t(y, [1, 1, 2, 2])
    assert np.isinf(res.attrs["df_prior"])
    assert (res["df_total"] == 4 * 2).all()


@pytest.mark.parametrize("group, message", [
    (["a", "b", "c", "a", "b", "c"], "two levels"),
    (["a", "b"], "one label per sample"),
])
def test_moderated_t_errors(group, message):
    with pytest.raises(LmmInputError, match=message):
        moderated_t(np.ones((5, 6)) + np.arange(6), group)


def test_moderated_t_missing_values():
    y = np.random.default_rng(0).normal(size=(5, 6))
    y[2, 3] = np.nan
    with pytest.raises(LmmInputError, match="missing"):
        moderated_t(y, [0, 0, 0, 1, 1, 1])


# ------------------------------------------------------------------ James-Stein
def test_james_stein_beats_separate_means():
    """k = 10 means, known variance 1: the James-Stein estimate has smaller total squared
    error on average (Efron and Morris 1975), over 2,000 simulations."""
    rng = np.random.default_rng(1975)
    theta = np.linspace(-1, 1, 10)
    err_mle, err_js = [], []
    for _ in range(2000):
        x = theta + rng.standard_normal(10)
        err_mle.append(np.sum((x - theta) ** 2))
        err_js.append(np.sum((james_stein(x, 1.0) - theta) ** 2))
    assert np.mean(err_mle) == pytest.approx(10, rel=0.05)
    assert np.mean(err_js) < 0.6 * np.mean(err_mle)


def test_james_stein_hand_value():
    x = np.array([1.0, 2.0, 3.0, 4.0, 10.0])   # mean 4, sum of squares 9+4+1+0+36 = 50
    factor = 1 - 2 * 1.0 / 50
    assert_allclose(james_stein(x, 1.0), 4 + factor * (x - 4))
    assert_allclose(james_stein(np.array([1.0, 1.1, 0.9, 1.0]), 5.0), 1.0)  # positive part
    with pytest.raises(LmmInputError):
        james_stein([1.0, 2.0, 3.0], 1.0)


# ------------------------------------------------------------------ plot helpers
def test_plot_helpers(fit_slopes):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from lmmlib.plotting import covariance_ellipse, pooling_arrows

    fig, ax = plt.subplots()
    cov = np.array([[4.0, 1.0], [1.0, 2.0]])
    line = covariance_ellipse(ax, [1.0, 2.0], cov, level=0.9)
    pts = np.vstack(line.get_data()) - np.array([[1.0], [2.0]])
    quad = np.einsum("in,ij,jn->n", pts, np.linalg.inv(cov), pts)
    assert_allclose(quad, stats.chi2.ppf(0.9, 2), rtol=1e-10)
    with pytest.raises(ValueError):
        covariance_ellipse(ax, [0, 0], [[1.0, 2.0], [2.0, 1.0]])
    plt.close(fig)
    table = pooling(fit_slopes)
    ax = pooling_arrows(table, "(Intercept)", "Days", center=fit_slopes.fixef.to_numpy(),
                        cov=np.eye(2))
    assert len(ax.texts) == 18
    with pytest.raises(ValueError, match="terms"):
        pooling_arrows(table, "(Intercept)", "x")
    plt.close(ax.figure)


# ------------------------------------------------------------------ trend (covariate)
def test_natural_spline_basis_spans_natural_cubic_splines():
    """The basis reproduces any natural cubic spline with its knots exactly: a cubic
    between knots, linear outside, built independently from scipy's CubicSpline with
    'natural' end conditions (second derivative 0 at the boundary knots)."""
    from scipy.interpolate import CubicSpline

    from lmmlib.shrinkage import natural_spline_basis

    rng = np.random.default_rng(0)
    x = rng.uniform(2, 14, 400)
    B = natural_spline_basis(x)
    knots = np.quantile(x, np.linspace(0, 1, 4))
    spline = CubicSpline(knots, [1.0, -2.0, 0.5, 3.0], bc_type="natural")
    f = spline(x)
    coef, *_ = np.linalg.lstsq(B, f, rcond=None)
    assert_allclose(B @ coef, f, atol=1e-9)
    assert np.linalg.matrix_rank(B) == 4


def test_fit_f_dist_trend_two_values_by_hand():
    """A covariate with two distinct values gives a 2-function basis, so the trend is the
    mean of e in each group and S_e^2 the pooled within-group variance (divisor G - 2).
    With d = 2 and within-group SD pi/sqrt(3) (psi'(1) + psi'(d0/2) = pi^2/3), d0 = 2 and
    s0^2 = exp(group mean of log s^2)."""
    sd = np.pi / np.sqrt(3)
    u = np.array([-1.0, 0.0, 1.0])   # within-group sample SD 1, pooled over 2 groups: 1
    z = np.r_[np.log(0.5) + sd * u, np.log(3.0) + sd * u]
    cov = np.r_[np.zeros(3), np.ones(3)]
    var_prior, df_prior = fit_f_dist(np.exp(z), 2, covariate=cov)
    assert_allclose(df_prior, 2.0, rtol=1e-10)
    assert_allclose(var_prior, np.r_[np.full(3, 0.5), np.full(3, 3.0)], rtol=1e-10)


def test_squeeze_var_trend_recovers_prior():
    rng = np.random.default_rng(31)
    G, d0, d = 20000, 6.0, 4
    amean = rng.uniform(4, 14, G)
    s0sq = 0.02 + 0.5 * np.exp(-(amean - 4) / 2)   # variance falls with expression
    s2 = d0 * s0sq / rng.chisquare(d0, G) * rng.chisquare(d, G) / d
    flat = squeeze_var(s2, d)
    sq = squeeze_var(s2, d, covariate=amean)
    assert_allclose(sq.df_prior, d0, rtol=0.15)
    assert np.median(np.abs(np.log(sq.var_prior / s0sq))) < 0.05
    # without the trend the spread around one value looks larger: smaller d0
    assert flat.df_prior < 0.5 * sq.df_prior


def test_moderated_t_trend_uses_average_expression():
    rng = np.random.default_rng(8)
    G = 3000
    amean = rng.uniform(4, 14, G)
    sigma = np.sqrt(0.02 + 0.5 * np.exp(-(amean - 4) / 2))
    y = amean[:, None] + sigma[:, None] * rng.standard_normal((G, 6))
    res = moderated_t(y, [0, 0, 0, 1, 1, 1], trend=True)
    sq = squeeze_var(res["sigma"].to_numpy() ** 2, 4, covariate=y.mean(axis=1))
    assert_allclose(res["s2_post"], sq.var_post, rtol=1e-12)
    assert res.attrs["s2_prior"].shape == (G,)


def test_shrinkage_matrix_uncorrelated_terms(sleep):
    """(Days || Subject) is two terms of one factor: G is block diagonal (no covariance),
    and W still reproduces ranef."""
    fit = lmmlib.lmer("Reaction ~ Days + (Days || Subject)", sleep)
    W = shrinkage_matrix(fit)
    dev = _own_minus_fixef(pooling(fit), fit)
    for subject, modes in fit.ranef["Subject"].iterrows():
        assert_allclose(W.loc[str(subject)].to_numpy() @ dev.loc[str(subject)].to_numpy(),
                        modes.to_numpy(), rtol=1e-6, atol=1e-8)
    G = fit.varcorr["vcov"].to_numpy()[:2]
    # G from varcorr equals the block-diagonal G used by W
    from lmmlib.shrinkage import _covariance

    cov = _covariance(fit, "Subject", ["(Intercept)", "Days"])
    assert_allclose(np.diag(cov), G, rtol=1e-10)
    assert cov[0, 1] == 0.0


def test_shrinkage_matrix_contracts_in_sigma_metric(fit_slopes):
    """Sigma^{-1/2} W Sigma^{1/2} = (I + Sigma^{-1/2} S Sigma^{-1/2})^{-1}, S = sigma^2 (Z'Z)^{-1}:
    symmetric with eigenvalues in (0, 1), so every arrow ends on a smaller ellipse of Sigma,
    while a single coordinate can move away (subject 310's slope in sleepstudy)."""
    from lmmlib.shrinkage import _covariance

    W = shrinkage_matrix(fit_slopes).loc["308"].to_numpy()
    Sigma = _covariance(fit_slopes, "Subject", ["(Intercept)", "Days"])
    vals, vecs = np.linalg.eigh(Sigma)
    root = vecs @ np.diag(np.sqrt(vals)) @ vecs.T
    root_inv = np.linalg.inv(root)
    Z = np.column_stack([np.ones(10), np.arange(10.0)])
    S = fit_slopes.sigma**2 * np.linalg.inv(Z.T @ Z)
    M = root_inv @ W @ root
    assert_allclose(M, np.linalg.inv(np.eye(2) + root_inv @ S @ root_inv), rtol=1e-8)
    assert np.all((np.linalg.eigvalsh((M + M.T) / 2) > 0) & (np.linalg.eigvalsh(M) < 1))
    table = pooling(fit_slopes).query("group == '310' and term == 'Days'")
    beta1 = fit_slopes.fixef["Days"]
    assert (abs(table["partial_pooling"].iloc[0] - beta1)
            > abs(table["no_pooling"].iloc[0] - beta1))
