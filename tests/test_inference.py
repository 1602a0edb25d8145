"""Fixed-effect inference (Satterthwaite, Kenward-Roger, type III anova) and prediction intervals.

Reference values: lmerTest's published sleepstudy results (df 17, Pr(>|t|) for Days 3.26e-06,
F 45.85) and its test suite (cake, type III: NumDF 2, 1, 2; DenDF 254.0157612, 222, 222); pbkrtest's
documentation (sleepstudy: adjusted vcov equal to the unadjusted one, 17 df); classical exact
F tests of balanced designs (Kenward and Roger 1997 reproduce them); and dense-matrix
implementations of the published formulas written out here.
"""

import numpy as np
import pandas as pd
import pytest
import scipy.linalg as la
from scipy import stats

import lmmlib
from lmmlib import datasets, lmer
from lmmlib.errors import LmmInputError
from lmmlib.inference import anova_type3, coef_table, contrast_test, type3_contrasts
from lmmlib.kenward_roger import KenwardRoger, random_effects_matrix
from lmmlib.remat import theta_indices
from lmmlib.satterthwaite import Satterthwaite


@pytest.fixture(scope="module")
def sleep_fit():
    return lmer("Reaction ~ Days + (Days | Subject)", datasets.sleepstudy())


@pytest.fixture(scope="module")
def unbalanced_fit():
    """sleepstudy with 60 rows removed at random: no exact df exist."""
    data = datasets.sleepstudy()
    rows = np.random.default_rng(3).choice(len(data), 120, replace=False)
    return lmer("Reaction ~ Days + (Days | Subject)", data.iloc[np.sort(rows)])


def _balanced(k=12, m=5, groups=2, seed=0, slope=False):
    """k subjects in `groups` treatment groups, m times each; random intercepts (and slopes)."""
    rng = np.random.default_rng(seed)
    subject = np.repeat(np.arange(k), m)
    group = subject % groups
    x = np.tile(np.arange(m, dtype=float), k)
    b0 = rng.normal(0, 2.0, k)[subject]
    b1 = rng.normal(0, 0.5, k)[subject] if slope else 0.0
    y = 10 + 1.5 * group + 0.8 * x + b0 + b1 * x + rng.normal(0, 1.0, k * m)
    return pd.DataFrame({"y": y, "x": x, "g": [f"s{s:02d}" for s in subject],
                         "trt": [f"t{t}" for t in group]})


# ------------------------------------------------------------------ lmerTest / pbkrtest values
def test_sleepstudy_satterthwaite_matches_lmertest(sleep_fit):
    table = sleep_fit.coef_table("satterthwaite")
    assert list(table.columns) == ["Estimate", "Std. Error", "df", "t value", "Pr(>|t|)"]
    np.testing.assert_allclose(table["df"], [17.0, 17.0], rtol=1e-3)
    assert table.loc["Days", "Pr(>|t|)"] == pytest.approx(3.26e-06, rel=2e-3)
    np.testing.assert_allclose(table["t value"], [36.838, 6.771], atol=1e-3)


def test_sleepstudy_kenward_roger_matches_pbkrtest(sleep_fit):
    kr = KenwardRoger(sleep_fit)
    # pbkrtest's vcovAdj example: for sleepstudy the adjusted vcov equals the unadjusted one
    np.testing.assert_allclose(kr.vcov_adjusted, sleep_fit.vcov.to_numpy(), rtol=1e-9)
    np.testing.assert_allclose(kr.df_coefficients(), [17.0, 17.0], rtol=1e-6)


def test_sleepstudy_anova_matches_lmertest(sleep_fit):
    table = lmmlib.anova(sleep_fit)
    assert table.loc["Days", "NumDF"] == 1
    assert table.loc["Days", "DenDF"] == pytest.approx(17.0, rel=1e-3)
    assert table.loc["Days", "F value"] == pytest.approx(6.771485**2, rel=1e-5)
    assert table.loc["Days", "Sum Sq"] == pytest.approx(30031.0, rel=1e-4)


def test_cake_type3_matches_lmertest():
    cake = datasets.cake().astype({"recipe": str})
    fit = lmer("angle ~ recipe * temp + (1|recipe:replicate)", cake)
    sat = anova_type3(fit, "satterthwaite")
    assert list(sat.index) == ["recipe", "temp", "recipe:temp"]
    np.testing.assert_allclose(sat["NumDF"], [2, 1, 2])
    np.testing.assert_allclose(sat["DenDF"], [254.0157612, 222, 222], rtol=1e-4)
    kr = anova_type3(fit, "kenward-roger")  # lmerTest's test: KR's F equals Satterthwaite's
    np.testing.assert_allclose(kr[["Sum Sq", "Mean Sq", "F value"]],
                               sat[["Sum Sq", "Mean Sq", "F value"]], rtol=1e-4)
    # temp is contained in recipe:temp: its contrast averages the three recipes' slopes
    np.testing.assert_allclose(type3_contrasts(fit)["temp"], [[0, 0, 0, 1, 1 / 3, 1 / 3]])


# ------------------------------------------------------------------ exact results, balanced
@pytest.mark.parametrize("groups", [2, 3])
def test_between_subject_effect_has_classical_df_and_exact_F(groups):
    k, m = 12, 5
    data = _balanced(k, m, groups)
    fit = lmer("y ~ trt + x + (1 | g)", data)
    # the classical test: one-way anova of the subject means on (groups - 1, k - groups) df
    means = data.groupby("g").agg(y=("y", "mean"), trt=("trt", "first"))
    grand = means["y"].mean()
    by_trt = means.groupby("trt")["y"]
    ss_trt = float((by_trt.count() * (by_trt.mean() - grand) ** 2).sum())
    ss_err = float(((means["y"] - means.groupby("trt")["y"].transform("mean")) ** 2).sum())
    F_exact = (ss_trt / (groups - 1)) / (ss_err / (k - groups))
    for ddf in ("satterthwaite", "kenward-roger"):
        res = anova_type3(fit, ddf).loc["trt"]
        assert res["NumDF"] == groups - 1
        assert res["DenDF"] == pytest.approx(k - groups, rel=1e-3)
        assert res["F value"] == pytest.approx(F_exact, rel=1e-6)
    table = coef_table(fit, "satterthwaite")
    assert table.loc["x", "df"] == pytest.approx(k * m - k - 1, rel=1e-3)  # within subjects
    kr_table = coef_table(fit, "kenward-roger")
    assert kr_table.loc["x", "df"] == pytest.approx(k * m - k - 1, rel=1e-6)


def test_kenward_roger_F_scaling_is_one_in_balanced_design():
    fit = lmer("y ~ trt + x + (1 | g)", _balanced(12, 5, 3))
    kr = KenwardRoger(fit)
    L = type3_contrasts(fit)["trt"]
    ddf, scaling = kr.ddf_and_scaling(L)
    assert ddf == pytest.approx(9.0, rel=1e-8)
    assert scaling == pytest.approx(1.0, rel=1e-8)
    V = fit.vcov.to_numpy()
    np.testing.assert_allclose(kr.vcov_adjusted, V, rtol=1e-8, atol=1e-12 * np.abs(V).max())


# ------------------------------------------------------------------ dense formulas
def _dense_sigma_parts(fit):
    Z, slices = random_effects_matrix(fit.terms)
    Z = Z.toarray()
    T = fit.layout.templates(fit.theta)
    Lam = la.block_diag(*[np.kron(np.eye(t.nlevels), Tk) for t, Tk in zip(fit.terms, T)])
    return Z, slices, Lam


def test_kenward_roger_equals_pbkrtest_dense_formulas(unbalanced_fit):
    """pbkrtest's vcovAdj written out with the n x n Sigma, on an unbalanced design."""
    fit = unbalanced_fit
    Z, slices, _ = _dense_sigma_parts(fit)
    X, n = fit.design.X, fit.nobs
    G, gamma = [], []
    for term, Tk, s in zip(fit.terms, fit.layout.templates(fit.theta), slices):
        p = len(term.names)
        cov = fit.sigma**2 * Tk @ Tk.T
        for r, c in zip(*theta_indices(p)):
            E = np.zeros((p, p))
            E[r, c] = E[c, r] = 1
            G.append(Z[:, s] @ np.kron(np.eye(term.nlevels), E) @ Z[:, s].T)
            gamma.append(cov[r, c])
    G.append(np.eye(n))
    gamma.append(fit.sigma**2)
    Si = np.linalg.inv(sum(g * Gi for g, Gi in zip(gamma, G)))
    Phi = np.linalg.inv(X.T @ Si @ X)
    np.testing.assert_allclose(Phi, fit.vcov.to_numpy(), rtol=1e-8)
    M = len(G)
    P = [-X.T @ Si @ Gi @ Si @ X for Gi in G]
    Q = [[X.T @ Si @ G[i] @ Si @ G[j] @ Si @ X for j in range(M)] for i in range(M)]
    info = np.array([[np.trace(Si @ G[i] @ Si @ G[j]) - 2 * np.trace(Phi @ Q[i][j])
                      + np.trace(Phi @ P[i] @ Phi @ P[j]) for j in range(M)] for i in range(M)])
    W = 2 * np.linalg.inv(info)
    U = sum(W[i, j] * (Q[i][j] - P[i] @ Phi @ P[j]) for i in range(M) for j in range(M))
    PhiA = Phi + 2 * Phi @ U @ Phi
    kr = KenwardRoger(fit)
    np.testing.assert_allclose(kr.W, W, rtol=1e-7)
    np.testing.assert_allclose(kr.vcov_adjusted, PhiA, rtol=1e-8)
    assert not np.allclose(PhiA, Phi, rtol=1e-4)  # unbalanced: the adjustment matters
    se = coef_table(fit, "kenward-roger")["Std. Error"].to_numpy()
    np.testing.assert_allclose(se, np.sqrt(np.diag(PhiA)), rtol=1e-10)
    assert np.all(se > fit.se.to_numpy())  # the adjustment widens the standard errors


def test_satterthwaite_derivatives_equal_analytic_dense_ones(unbalanced_fit):
    """The differenced Hessian and Jacobian against the analytic REML derivatives of the
    dense formulation: d = log|Sigma| + log|X'Sigma^-1 X| + y'P y (+ const),
    Sigma = sigma^2 (I + Z Lambda Lambda' Z'), in (theta, sigma)."""
    fit = unbalanced_fit
    Z, _, Lam = _dense_sigma_parts(fit)
    X, y, n = fit.design.X, fit.design.y, fit.nobs
    s, k = fit.sigma, len(fit.theta)
    # dLambda/dtheta_i
    E = []
    for i in range(k):
        e = np.zeros(k)
        e[i] = 1.0
        Te = fit.layout.templates(e)
        E.append(la.block_diag(*[np.kron(np.eye(t.nlevels), T) for t, T in zip(fit.terms, Te)]))
    V0 = np.eye(n) + Z @ Lam @ Lam.T @ Z.T
    Sigma = s**2 * V0
    d1 = [s**2 * Z @ (Ei @ Lam.T + Lam @ Ei.T) @ Z.T for Ei in E] + [2 * s * V0]
    d2 = np.empty((k + 1, k + 1), dtype=object)
    for i in range(k):
        for j in range(k):
            d2[i, j] = s**2 * Z @ (E[i] @ E[j].T + E[j] @ E[i].T) @ Z.T
        d2[i, k] = d2[k, i] = 2 / s * d1[i]
    d2[k, k] = 2 * V0
    Si = np.linalg.inv(Sigma)
    V = np.linalg.inv(X.T @ Si @ X)
    P = Si - Si @ X @ V @ X.T @ Si
    Py = P @ y
    H = np.array([[np.trace(P @ d2[i, j]) - np.trace(P @ d1[i] @ P @ d1[j])
                   - Py @ d2[i, j] @ Py + 2 * Py @ d1[i] @ P @ d1[j] @ Py
                   for j in range(k + 1)] for i in range(k + 1)])
    J = np.array([V @ X.T @ Si @ d1[i] @ Si @ X @ V for i in range(k + 1)])
    sat = Satterthwaite(fit)
    np.testing.assert_allclose(sat.hessian, H, rtol=1e-6, atol=1e-8 * np.abs(H).max())
    np.testing.assert_allclose(sat.jacobian, J, rtol=1e-6, atol=1e-8 * np.abs(J).max())
    A = 2 * np.linalg.inv(H)
    l = np.array([0.0, 1.0])
    g = np.einsum("a,iab,b->i", l, J, l)
    assert sat.df(l) == pytest.approx(2 * (l @ V @ l) ** 2 / (g @ A @ g), rel=1e-6)


def test_multi_df_F_is_invariant_to_the_basis_of_L(unbalanced_fit):
    # (lmerTest's denominator df, from the eigenvectors of L V L', do depend on the basis)
    L = np.eye(2)
    a = contrast_test(unbalanced_fit, L, "satterthwaite")
    b = contrast_test(unbalanced_fit, np.array([[1.0, 1.0], [0.0, 2.0]]), "satterthwaite")
    assert a["F"] == pytest.approx(b["F"], rel=1e-9)
    assert 15 < a["DenDF"] < 20 and a["NumDF"] == b["NumDF"] == 2


def test_residual_df_and_wald_intervals(sleep_fit):
    table = coef_table(sleep_fit, "residual")
    assert (table["df"] == 178).all()
    ci = sleep_fit.confint(ddf="satterthwaite")
    half = stats.t.ppf(0.975, 17) * sleep_fit.se["Days"]
    assert ci.loc["Days", "97.5 %"] == pytest.approx(sleep_fit.fixef["Days"] + half, rel=1e-4)
    z = sleep_fit.confint()
    assert z.loc["Days", "97.5 %"] < ci.loc["Days", "97.5 %"]  # t intervals are wider
    text = str(sleep_fit.summary(ddf="satterthwaite"))
    assert "Pr(>|t|)" in text and "3.26e-06" in text
    assert "Pr(>|t|)" not in str(sleep_fit.summary())


# ------------------------------------------------------------------ prediction intervals
def test_prediction_intervals_equal_dense_formulas(unbalanced_fit):
    fit = unbalanced_fit
    Z, _, Lam = _dense_sigma_parts(fit)
    X, n, s2 = fit.design.X, fit.nobs, fit.sigma**2
    Gb = s2 * Lam @ Lam.T
    Sigma = s2 * np.eye(n) + Z @ Gb @ Z.T
    Si = np.linalg.inv(Sigma)
    V = fit.vcov.to_numpy()
    P = Si - Si @ X @ V @ X.T @ Si
    new = datasets.sleepstudy().iloc[[0, 5, 33, 179]]
    X0 = fit.design.new_fixed_matrix(new)
    codes, Xk = fit.design.new_random_terms(new)[0]
    Z0 = np.zeros((len(new), Z.shape[1]))
    for r, (c, xr) in enumerate(zip(codes, Xk)):
        Z0[r, c * 2:(c + 1) * 2] = xr
    pev_b = Gb - Gb @ Z.T @ P @ Z @ Gb          # Var(b_hat - b)
    cov_beta_b = -V @ X.T @ Si @ Z @ Gb          # Cov(beta_hat, b_hat - b)
    pev = (np.einsum("ij,jk,ik->i", X0, V, X0) + np.einsum("ij,jk,ik->i", Z0, pev_b, Z0)
           + 2 * np.einsum("ij,jk,ik->i", X0, cov_beta_b, Z0))
    got = fit.predict(new, interval="confidence", se_fit=True)
    np.testing.assert_allclose(got["se_fit"], np.sqrt(pev), rtol=1e-8)
    np.testing.assert_allclose(got["fit"], fit.predict(new), rtol=1e-12)
    z = stats.norm.ppf(0.975)
    pred = fit.predict(new, interval="prediction")
    np.testing.assert_allclose(pred["upr"] - pred["fit"], z * np.sqrt(pev + s2), rtol=1e-8)
    pop = fit.predict(new, re=False, interval="confidence", se_fit=True)
    np.testing.assert_allclose(pop["se_fit"] ** 2, np.einsum("ij,jk,ik->i", X0, V, X0),
                               rtol=1e-10)
    new_subject = fit.predict(new, re=False, interval="prediction")
    var_new = (np.einsum("ij,jk,ik->i", X0, V, X0)
               + np.einsum("ij,jk,ik->i", Z0, Gb, Z0) + s2)
    np.testing.assert_allclose(new_subject["upr"] - new_subject["fit"], z * np.sqrt(var_new),
                               rtol=1e-8)


def test_new_level_prediction_interval_adds_its_random_effect_variance(sleep_fit):
    new = pd.DataFrame({"Days": [3.0], "Subject": ["new"]})
    a = sleep_fit.predict(new, allow_new_levels=True, interval="prediction")
    b = sleep_fit.predict(new, re=False, interval="prediction")
    np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=1e-10)
    # the population line needs no grouping column
    c = sleep_fit.predict(new[["Days"]], re=False, interval="prediction")
    np.testing.assert_allclose(c.to_numpy(), b.to_numpy(), rtol=1e-12)


# ------------------------------------------------------------------ errors
def test_bad_arguments_get_clear_errors(sleep_fit):
    with pytest.raises(LmmInputError, match="ddf must be"):
        sleep_fit.coef_table("KR")
    with pytest.raises(LmmInputError, match="ddf applies to method='wald' only"):
        sleep_fit.confint(method="profile", ddf="satterthwaite")
    with pytest.raises(LmmInputError, match="interval must be"):
        sleep_fit.predict(interval="both")
    with pytest.raises(LmmInputError, match="REML"):
        KenwardRoger(sleep_fit.refit(reml=False))
    with pytest.raises(LmmInputError, match="reml must be True or False"):
        lmer("Reaction ~ Days + (Days | Subject)", datasets.sleepstudy(), reml="yes")
    with pytest.raises(LmmInputError, match="reml must be True or False"):
        sleep_fit.refit(reml=1)
