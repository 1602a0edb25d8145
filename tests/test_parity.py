"""lme4 features beyond the basic fit: prior weights, offsets, predict's re_form, simulate's
options, refit with a full-length response, coef, fixef(add_dropped), residuals, leverages,
Cook's distance, anova(lm, lmer) and drop1.

References: lme4's definitions (``R/lmer.R``, ``R/predict.R``, ``src/respModule.cpp`` and
its tests ``hatvalues.R``, ``offset.R``, ``resids.R``), values derived here from the dense
marginal model ``y ~ N(o + X beta, sigma^2 (Z Lambda Lambda' Z' + W^{-1}))``, statsmodels'
WLS and OLS influence measures, lme4's printed ``coef(fm1)`` for sleepstudy, and simulation.
"""

import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats

from lmmlib import datasets, lmer, ols
from lmmlib.anova import BOUNDARY_MESSAGE, anova, drop1
from lmmlib.effects import coef, fixef
from lmmlib.errors import LmmInputError, SingularFitWarning


@pytest.fixture(scope="module")
def weighted(sleep):
    w = np.random.default_rng(5).uniform(0.3, 3.0, len(sleep))
    return sleep.assign(w=w)


def dense_criterion(fit) -> float:
    """-2 log-likelihood (ML) or the REML criterion of ``fit`` from the dense marginal model:
    V = sigma^2 (Z T T' Z' + W^{-1}); ML: n log 2pi + log|V| + r'V^{-1}r; REML adds
    log|X'V^{-1}X| and has (n - p) log 2pi (Harville 1977; lme4's criteria)."""
    d = fit.design
    n = len(d.y)
    ZL = np.zeros((n, 0))
    for term, T in zip(fit.terms, fit.layout.templates(fit.theta)):
        Z = np.zeros((n, term.nlevels * term.p))
        for a in range(term.p):
            Z[np.arange(n), term.codes * term.p + a] = term.X[:, a]
        ZL = np.hstack([ZL, Z @ np.kron(np.eye(term.nlevels), T)])
    w = np.ones(n) if d.weights is None else d.weights
    V = fit.sigma**2 * (ZL @ ZL.T + np.diag(1 / w))
    o = np.zeros(n) if d.offset is None else d.offset
    r = d.y - o - d.X @ fit.fixef.to_numpy()
    Vinv = np.linalg.inv(V)
    value = np.linalg.slogdet(V)[1] + r @ Vinv @ r
    if not fit.reml:
        return n * np.log(2 * np.pi) + value
    return (n - fit.p) * np.log(2 * np.pi) + value + np.linalg.slogdet(d.X.T @ Vinv @ d.X)[1]


# ------------------------------------------------------------------ prior weights
@pytest.mark.parametrize("reml", [True, False], ids=["REML", "ML"])
def test_weighted_criterion_is_the_dense_marginal_likelihood(weighted, reml):
    fit = lmer("Reaction ~ Days + (Days | Subject)", weighted, reml=reml, weights="w")
    assert fit.deviance == pytest.approx(dense_criterion(fit), abs=1e-7)
    unweighted = lmer("Reaction ~ Days + (Days | Subject)", weighted, reml=reml)
    assert abs(fit.deviance - unweighted.deviance) > 1  # the weights matter
    # beta is the GLS estimate for V at the estimates
    ZL_var = fit.predict(re_form="~0")  # X beta
    assert np.isfinite(ZL_var).all()


def test_constant_weights_scale_sigma_only(sleep):
    # w_i = c: residual variance sigma^2/c, so sigma_w = sigma sqrt(c); lme4's -log|W| makes
    # the criterion unchanged (r^2 grows by c, n log c cancels n log c)
    base = lmer("Reaction ~ Days + (Days | Subject)", sleep)
    fit = lmer("Reaction ~ Days + (Days | Subject)", sleep, weights=np.full(len(sleep), 4.0))
    assert fit.sigma == pytest.approx(2 * base.sigma, rel=1e-6)
    assert fit.deviance == pytest.approx(base.deviance, abs=1e-6)
    np.testing.assert_allclose(fit.fixef, base.fixef, rtol=1e-6)
    np.testing.assert_allclose(fit.sdcor.iloc[:3], base.sdcor.iloc[:3], rtol=1e-5)


def boundary_data(weights: bool):
    """Groups whose noise is centred within each group: the between-group variance estimate
    is 0 (a boundary fit), so the LMM is the (weighted) linear model."""
    rng = np.random.default_rng(3)
    g = np.repeat(np.arange(12), 8)
    x = rng.normal(size=len(g))
    w = rng.uniform(0.5, 2.0, len(g)) if weights else np.ones(len(g))
    e = rng.normal(size=len(g)) / np.sqrt(w)
    e -= (np.bincount(g, w * e) / np.bincount(g, w))[g]  # weighted group means removed
    return pd.DataFrame({"y": 2 + 0.5 * x + e, "x": x, "g": g, "w": w})


@pytest.mark.parametrize("reml", [True, False], ids=["REML", "ML"])
def test_weighted_boundary_fit_is_weighted_least_squares(reml):
    data = boundary_data(weights=True)
    with pytest.warns(SingularFitWarning):
        fit = lmer("y ~ x + (1 | g)", data, reml=reml, weights="w")
    assert fit.theta[0] == 0.0
    wls = sm.WLS(data["y"], sm.add_constant(data["x"]), weights=data["w"]).fit()
    np.testing.assert_allclose(fit.fixef, wls.params, rtol=1e-8)
    n, p = len(data), 2
    scale = wls.ssr / (n - p if reml else n)
    assert fit.sigma == pytest.approx(np.sqrt(scale), rel=1e-8)
    if not reml:  # statsmodels' WLS log-likelihood includes sum(log w)/2, as lme4's ldW
        assert fit.loglik == pytest.approx(wls.llf, rel=1e-10)
    np.testing.assert_allclose(fit.se, wls.bse * np.sqrt(scale / wls.scale), rtol=1e-6)


def test_weighted_profile_intervals_and_summary(sleep):
    # constant weights c: the same model with sigma^2/c, so profile intervals of the fixed
    # effects are unchanged and those of sigma scale by sqrt(c); summary's scaled residuals
    # are lme4's Pearson ones, the same for any c
    base = lmer("Reaction ~ Days + (1 | Subject)", sleep)
    fit = lmer("Reaction ~ Days + (1 | Subject)", sleep, weights=np.full(len(sleep), 0.25))
    a, b = base.confint("profile"), fit.confint("profile")
    np.testing.assert_allclose(b.loc["Days"], a.loc["Days"], rtol=1e-4)
    np.testing.assert_allclose(b.loc["sigma"], 0.5 * a.loc["sigma"], rtol=1e-4)
    # (atol: the median is near 0, and the two fits stop within the optimiser's tolerance of
    # the same theta, which moves the scaled residuals by about 1e-8)
    np.testing.assert_allclose(fit.summary().residual_quantiles,
                               base.summary().residual_quantiles, rtol=1e-6, atol=1e-7)


def test_weights_are_checked_and_dropped_with_missing_rows(weighted):
    with pytest.raises(LmmInputError, match="weights must be positive"):
        lmer("Reaction ~ Days + (1 | Subject)", weighted.assign(w=-weighted["w"]), weights="w")
    with pytest.raises(LmmInputError, match="one value per row"):
        lmer("Reaction ~ Days + (1 | Subject)", weighted, weights=[1.0, 2.0])
    with pytest.raises(LmmInputError, match="not a column"):
        lmer("Reaction ~ Days + (1 | Subject)", weighted, weights="nope")
    holes = weighted.assign(w=weighted["w"].where(np.arange(180) % 10 != 0))
    with pytest.warns(UserWarning, match="dropped 18 of 180 rows"):
        fit = lmer("Reaction ~ Days + (1 | Subject)", holes, weights="w")
    ref = lmer("Reaction ~ Days + (1 | Subject)", holes.dropna(), weights="w")
    assert fit.nobs == 162 and fit.deviance == pytest.approx(ref.deviance, abs=1e-9)


# ------------------------------------------------------------------ offsets
def test_offset_shifts_the_coefficient_as_lme4_s_test(sleep):
    # lme4 tests/offset.R: fixef(fm1)[2] - 3 == fixef(fm1off)[2]; predictions equal
    fit = lmer("Reaction ~ Days + (1 | Subject)", sleep)
    off = lmer("Reaction ~ Days + (1 | Subject) + offset(3 * Days)", sleep)
    assert off.fixef["Days"] == pytest.approx(fit.fixef["Days"] - 3, abs=1e-6)
    np.testing.assert_allclose(off.fitted, fit.fitted, rtol=1e-8)
    np.testing.assert_allclose(off.predict(sleep), fit.predict(sleep), rtol=1e-8)
    arg = lmer("Reaction ~ Days + (1 | Subject)", sleep, offset=3 * sleep["Days"])
    assert arg.deviance == pytest.approx(off.deviance, abs=1e-9)
    np.testing.assert_allclose(arg.fitted, off.fitted, rtol=1e-10)
    both = lmer("Reaction ~ Days + offset(Days) + (1 | Subject)", sleep, offset=2 * sleep["Days"])
    assert both.fixef["Days"] == pytest.approx(off.fixef["Days"], abs=1e-6)


def test_offset_at_the_boundary_is_a_gaussian_glm_offset():
    data = boundary_data(weights=False)
    o = np.sin(np.arange(len(data)))
    with pytest.warns(SingularFitWarning):
        fit = lmer("y ~ x + (1 | g)", data, reml=False, offset=o)
    glm = sm.GLM(data["y"], sm.add_constant(data["x"]), offset=o).fit()
    np.testing.assert_allclose(fit.fixef, glm.params, rtol=1e-8)
    assert fit.loglik == pytest.approx(glm.llf, rel=1e-10)


# ------------------------------------------------------------------ predict
@pytest.fixture(scope="module")
def two_terms(sleep):
    return lmer("Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)", sleep)


def test_re_form_selects_terms(two_terms, sleep):
    fit = two_terms
    Xb = fit.design.X @ fit.fixef.to_numpy()
    b = fit.ranef["Subject"].loc[sleep["Subject"]].to_numpy()
    np.testing.assert_allclose(fit.predict(re_form=None), fit.fitted)
    np.testing.assert_allclose(fit.predict(re_form="~0"), Xb)
    np.testing.assert_allclose(fit.predict(re_form=""), Xb)
    np.testing.assert_allclose(fit.predict(re_form=np.nan), Xb)
    np.testing.assert_allclose(fit.predict(re_form="~(1 | Subject)"), Xb + b[:, 0])
    np.testing.assert_allclose(fit.predict(sleep, re_form="~ (0 + Days | Subject)"),
                               Xb + b[:, 1] * sleep["Days"])
    with pytest.raises(LmmInputError, match="not a term of the model"):
        fit.predict(re_form="~(Days | Subject)")


def test_re_form_with_double_bar_terms(sleep):
    fit = lmer("Reaction ~ Days + (Days || Subject)", sleep)
    b = fit.ranef["Subject"].loc[sleep["Subject"]].to_numpy()
    Xb = fit.design.X @ fit.fixef.to_numpy()
    np.testing.assert_allclose(fit.predict(re_form="~(1 | Subject)"), Xb + b[:, 0])


def test_missing_predictor_gives_nan_as_lme4_na(two_terms):
    new = pd.DataFrame({"Days": [0.0, np.nan, 3.0], "Subject": ["308", "308", "309"]})
    pred = two_terms.predict(new)
    assert np.isnan(pred.iloc[1]) and list(pred.index) == [0, 1, 2]
    np.testing.assert_allclose(pred.iloc[[0, 2]], two_terms.predict(new.iloc[[0, 2]]))
    assert two_terms.predict(new.iloc[[1]]).isna().all()


# ------------------------------------------------------------------ simulate
@pytest.fixture(scope="module")
def slopes(sleep):
    return lmer("Reaction ~ Days + (Days | Subject)", sleep)


def test_simulate_use_u_and_new_parameters_without_noise(slopes, sleep):
    fit = slopes
    np.testing.assert_allclose(fit.simulate(1, seed=1, use_u=True, sigma=0.0)["sim_1"],
                               fit.fitted, rtol=1e-12)
    new = sleep.iloc[::7]
    np.testing.assert_allclose(fit.simulate(2, seed=1, use_u=True, sigma=0.0, newdata=new)
                               ["sim_2"], fit.predict(new), rtol=1e-12)
    beta = np.array([100.0, -1.0])
    out = fit.simulate(1, seed=2, sigma=0.0, beta=beta)
    np.testing.assert_allclose(out["sim_1"], fit.design.X @ beta)
    # a new theta with use_u: b = Lambda(theta_new) u_hat, as lme4's setParams
    theta = 2 * fit.theta
    out = fit.simulate(1, seed=3, use_u=True, sigma=0.0, theta=theta)
    b2 = fit.ranef["Subject"].loc[sleep["Subject"]].to_numpy() * 2
    np.testing.assert_allclose(out["sim_1"], fit.design.X @ fit.fixef.to_numpy()
                               + b2[:, 0] + b2[:, 1] * sleep["Days"], rtol=1e-10)
    with pytest.raises(LmmInputError, match="theta must have 3"):
        fit.simulate(1, theta=[1.0])


def test_simulate_moments_match_the_model(slopes):
    """Var(y_i) = sigma^2 (z_i' T T' z_i + 1); Cov(y_i, y_j) = sigma^2 z_i' T T' z_j within a
    subject and 0 between subjects.  4000 draws: relative MC s.e. of a variance 2.2%."""
    fit = slopes
    nsim = 4000
    Y = fit.simulate(nsim, seed=7).to_numpy()
    T = fit.layout.templates(fit.theta)[0]
    S = fit.sigma**2 * T @ T.T
    z0, z9 = np.array([1.0, 0.0]), np.array([1.0, 9.0])
    C = np.cov(Y[[0, 9, 10]])
    assert C[0, 0] == pytest.approx(z0 @ S @ z0 + fit.sigma**2, rel=0.11)
    assert C[1, 1] == pytest.approx(z9 @ S @ z9 + fit.sigma**2, rel=0.11)
    assert C[0, 1] == pytest.approx(z0 @ S @ z9, rel=0.15)
    assert abs(C[0, 2]) < 5 * np.sqrt(C[0, 0] * C[2, 2] / nsim)  # different subjects
    np.testing.assert_allclose(Y.mean(axis=1)[:10], fit.predict(re_form="~0")[:10],
                               atol=5 * np.sqrt(C[1, 1] / nsim))
    np.testing.assert_array_equal(fit.simulate(3, seed=7, use_u=False),
                                  fit.simulate(3, seed=7, use_u=False))


def test_simulate_with_weights_and_new_levels(weighted, slopes):
    fit = lmer("Reaction ~ Days + (1 | Subject)", weighted, weights="w")
    R = fit.simulate(3000, seed=4, use_u=True).to_numpy() - fit.fitted.to_numpy()[:, None]
    ratio = R.var(axis=1) * weighted["w"].to_numpy() / fit.sigma**2  # each about 1
    assert abs(ratio.mean() - 1) < 5 * np.sqrt(2 / 3000 / len(ratio)) + 0.01
    new = pd.DataFrame({"Days": [0.0] * 4, "Subject": ["new1", "new1", "new2", "308"]})
    with pytest.raises(LmmInputError, match="not seen in the fit"):
        slopes.simulate(1, newdata=new)
    Y = slopes.simulate(4000, seed=9, newdata=new, allow_new_levels=True).to_numpy()
    C = np.corrcoef(Y)
    sd0 = slopes.sdcor["sd_(Intercept)|Subject"]
    rho = sd0**2 / (sd0**2 + slopes.sigma**2)  # same new level: correlated as one subject
    assert C[0, 1] == pytest.approx(rho, abs=0.05) and abs(C[0, 2]) < 0.06


# ------------------------------------------------------------------ refit, coef, fixef
def test_refit_takes_a_full_length_response(sleep):
    holes = sleep.assign(Reaction=sleep["Reaction"].where(np.arange(180) % 9 != 4))
    with pytest.warns(UserWarning, match="dropped 20"):
        fit = lmer("Reaction ~ Days + (Days | Subject)", holes)
    y_full = sleep["Reaction"].to_numpy() * 1.1 + 3  # the data's length, as lme4 takes it
    a = fit.refit(y_full)
    b = fit.refit(y_full[holes["Reaction"].notna().to_numpy()])
    c = fit.refit(pd.Series(y_full, index=sleep.index))
    assert a.deviance == pytest.approx(b.deviance, abs=1e-9) == c.deviance
    with pytest.raises(LmmInputError, match="one value per observation"):
        fit.refit(y_full[:100])


def test_coef_is_lme4_s(slopes):
    # lme4's coef() = fixef + ranef, from lme4 1.1-31's printed values (lmmlib package data)
    ref = datasets.reference("lme4_sleepstudy")["fits"]
    ranef = pd.DataFrame(ref["sleepstudy_ranef"]["ranef"]).pivot(
        index="grp", columns="term", values="condval")[["(Intercept)", "Days"]]
    expected = ranef + np.array(list(ref["sleepstudy_slopes_reml"]["fixef"].values()))
    table = slopes.coef()["Subject"]
    np.testing.assert_allclose(table.loc[expected.index], expected, rtol=1e-5, atol=5e-5)
    np.testing.assert_allclose(table, slopes.ranef["Subject"] + slopes.fixef.to_numpy())
    assert coef(slopes)["Subject"].columns.tolist() == ["(Intercept)", "Days"]


def test_coef_adds_random_only_columns_before_the_fixed_ones(sleep):
    fit = lmer("Reaction ~ 1 + (Days | Subject)", sleep)
    table = fit.coef()["Subject"]
    assert table.columns.tolist() == ["Days", "(Intercept)"]  # lme4's order
    np.testing.assert_allclose(table["Days"], fit.ranef["Subject"]["Days"])


def test_fixef_add_dropped_puts_nan_in_place(sleep):
    data = sleep.assign(D2=2 * sleep["Days"], z=np.arange(180) % 5)
    with pytest.warns(UserWarning, match="rank deficient"):
        fit = lmer("Reaction ~ Days + D2 + z + (1 | Subject)", data)
    full = fixef(fit, add_dropped=True)
    assert full.index.tolist() == ["(Intercept)", "Days", "D2", "z"]
    assert np.isnan(full["D2"]) and full.drop("D2").equals(fit.fixef)
    assert fixef(fit).equals(fit.fixef)


# ------------------------------------------------------------------ diagnostics
def brute_force_hat(fit) -> np.ndarray:
    """lme4's tests/hatvalues.R: H = [Z Lambda, X] cp^{-1} [Z Lambda, X]' with
    cp = [[Lambda'Z'WZ Lambda + I, .], [X'WZ Lambda, X'WX]]; hatvalues = w_i H_ii."""
    d = fit.design
    n = len(d.y)
    blocks = []
    for term, T in zip(fit.terms, fit.layout.templates(fit.theta)):
        Z = np.zeros((n, term.nlevels * term.p))
        for a in range(term.p):
            Z[np.arange(n), term.codes * term.p + a] = term.X[:, a]
        blocks.append(Z @ np.kron(np.eye(term.nlevels), T))
    ZL = np.hstack(blocks)
    w = np.ones(n) if d.weights is None else d.weights
    M = np.hstack([ZL, d.X])
    cp = M.T @ (w[:, None] * M)
    q = ZL.shape[1]
    cp[:q, :q] += np.eye(q)
    return w * np.einsum("ij,ji->i", M, np.linalg.solve(cp, M.T))


def test_hatvalues_are_lme4_s_brute_force_hat(slopes, weighted):
    np.testing.assert_allclose(slopes.hatvalues(), brute_force_hat(slopes), rtol=1e-10)
    fit = lmer("Reaction ~ Days + (Days | Subject)", weighted, weights="w")
    h = fit.hatvalues()
    np.testing.assert_allclose(h, brute_force_hat(fit), rtol=1e-10)
    q = 36
    assert fit.p < h.sum() < fit.p + q  # effective number of parameters


def test_hatvalues_refuses_a_model_too_large_for_its_dense_matrix(monkeypatch, slopes):
    import lmmlib.diagnostics

    monkeypatch.setattr(lmmlib.diagnostics, "MAX_DENSE_ORDER", 30)
    with pytest.raises(LmmInputError, match="order q \\+ p = 38"):
        slopes.hatvalues()


def test_influence_at_the_boundary_is_ols_s():
    data = boundary_data(weights=False)
    with pytest.warns(SingularFitWarning):
        fit = lmer("y ~ x + (1 | g)", data)
    influence = sm.OLS(data["y"], sm.add_constant(data["x"])).fit().get_influence()
    np.testing.assert_allclose(fit.hatvalues(), influence.hat_matrix_diag, rtol=1e-9)
    np.testing.assert_allclose(fit.cooks_distance(), influence.cooks_distance[0], rtol=1e-8)


def test_cooks_distance_is_lme4_s_formula(weighted):
    fit = lmer("Reaction ~ Days + (Days | Subject)", weighted, weights="w")
    h = brute_force_hat(fit)
    r = np.sqrt(weighted["w"]) * (weighted["Reaction"] - fit.fitted)
    np.testing.assert_allclose(fit.cooks_distance(),
                               (r / (1 - h)) ** 2 * h / (fit.sigma**2 * 2), rtol=1e-9)


def test_residual_types(weighted, slopes):
    # lme4 tests/resids.R: residuals(fm1) == Reaction - fitted(fm1)
    np.testing.assert_allclose(slopes.resid(), slopes.design.y - slopes.fitted)
    np.testing.assert_allclose(slopes.resid("pearson"), slopes.resid("response"))
    np.testing.assert_allclose(slopes.resid(scaled=True), slopes.residuals / slopes.sigma)
    fit = lmer("Reaction ~ Days + (Days | Subject)", weighted, weights="w")
    raw = weighted["Reaction"].to_numpy() - fit.fitted.to_numpy()
    np.testing.assert_allclose(fit.resid(), raw)
    np.testing.assert_allclose(fit.resid("pearson", scaled=True),
                               np.sqrt(weighted["w"]) * raw / fit.sigma)
    with pytest.raises(LmmInputError, match="type must be one of"):
        fit.resid("partial")


# ------------------------------------------------------------------ model comparison
def test_anova_of_a_linear_model_and_a_mixed_model(sleep, capsys):
    lm = ols("Reaction ~ Days", sleep)
    fit = lmer("Reaction ~ Days + (1 | Subject)", sleep)
    table = anova(lm, fit)
    printed = capsys.readouterr().out
    assert "refitting model(s) with ML" in printed and BOUNDARY_MESSAGE in printed
    llf = sm.OLS(sleep["Reaction"], sm.add_constant(sleep["Days"])).fit().llf
    ml = fit.refit(reml=False)
    assert table["npar"].tolist() == [3, 4]
    assert table["logLik"].iloc[0] == pytest.approx(llf, rel=1e-12)
    ref = datasets.reference("lme4_sleepstudy")["fits"]["sleepstudy_intercept_ml"]
    assert table["logLik"].iloc[1] == pytest.approx(ref["loglik"], abs=1e-6)  # lme4's fit
    assert table["Chisq"].iloc[1] == pytest.approx(2 * (ml.loglik - llf), rel=1e-10)
    assert table["Pr(>Chisq)"].iloc[1] == pytest.approx(stats.chi2.sf(table["Chisq"].iloc[1], 1))
    with pytest.raises(LmmInputError, match="same number of observations"):
        anova(ols("Reaction ~ Days", sleep.iloc[:100]), fit)


def test_drop1_refits_by_ml_without_each_term(sleep):
    fit = lmer("Reaction ~ Days + (1 | Subject)", sleep)
    table = drop1(fit, test="Chisq")
    full = lmer("Reaction ~ Days + (1 | Subject)", sleep, reml=False)
    reduced = lmer("Reaction ~ 1 + (1 | Subject)", sleep, reml=False)
    assert table.index.tolist() == ["<none>", "Days"]
    assert table.loc["<none>", "AIC"] == pytest.approx(full.aic, rel=1e-9)
    assert table.loc["Days", "AIC"] == pytest.approx(reduced.aic, rel=1e-8)
    lrt = 2 * (full.loglik - reduced.loglik)
    assert table.loc["Days", "LRT"] == pytest.approx(lrt, rel=1e-7)
    assert table.loc["Days", "Pr(Chi)"] == pytest.approx(stats.chi2.sf(lrt, 1), rel=1e-6)
    assert table.loc["Days", "npar"] == 1 and "LRT" not in drop1(fit).columns


def test_drop1_respects_marginality(sleep):
    data = sleep.assign(late=(sleep["Days"] > 4).map({True: "yes", False: "no"}),
                        dose=np.arange(180) % 3)
    fit = lmer("Reaction ~ Days * late + dose + (1 | Subject)", data)
    table = drop1(fit, test="Chisq")
    assert table.index.tolist() == ["<none>", "dose", "Days:late"]
    reduced = lmer("Reaction ~ Days + late + dose + (1 | Subject)", data, reml=False)
    assert table.loc["Days:late", "AIC"] == pytest.approx(reduced.aic, rel=1e-8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        drop1(fit)
