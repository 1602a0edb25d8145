"""lmmlib.greml against lmer's REML fit (K = Z Z'), lme4's published numbers, a dense
likelihood, simulation truth, and the LRT's null distribution."""

import warnings

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose
from scipy import optimize, stats

import lmmlib
from lmmlib import datasets
from lmmlib.errors import LmmInputError
from lmmlib.genetics import grm, simulate_genotypes, simulate_phenotype
from lmmlib.heritability import H2_MAX, eigen_relationship, greml


@pytest.fixture(scope="module")
def sleep():
    data = datasets.sleepstudy()
    Z = pd.get_dummies(data["Subject"]).to_numpy(dtype=float)
    X = pd.DataFrame({"(Intercept)": 1.0, "Days": data["Days"].astype(float)})
    return data, Z @ Z.T, X


@pytest.fixture(scope="module")
def small_grm():
    """100 unrelated individuals, 300 SNPs; a phenotype with h2 = 0.6 from 50 SNPs, plus a
    covariate. The GRM standardises the genotypes by the *population* allele frequencies, so it
    has full rank (centring by sample frequencies would make A 1 = 0, which ML cannot handle:
    see test_ml_unbounded_with_centred_grm)."""
    sample = simulate_genotypes(100, 300, seed=11)
    p = sample.freq
    W = (sample.G - 2 * p) / np.sqrt(2 * p * (1 - p))
    K = W @ W.T / W.shape[1]
    pheno = simulate_phenotype(sample.G, 0.6, 50, seed=12)
    x = np.random.default_rng(13).normal(size=100)
    X = np.column_stack([np.ones(100), x])
    return pheno.y + 0.5 * x, K, X


# --- the same model as lmer's random-intercept fit: K = Z Z', Z the subject indicators ------

@pytest.mark.parametrize("reml", [True, False])
def test_equals_lmer_random_intercepts(sleep, reml):
    data, K, X = sleep
    fit = greml(data["Reaction"], K, X, reml=reml)
    ref = lmmlib.lmer("Reaction ~ Days + (1 | Subject)", data, reml=reml)
    vc = ref.varcorr["vcov"].to_numpy()
    assert_allclose(fit.criterion, ref.deviance, rtol=1e-10)
    assert_allclose([fit.sigma_g2, fit.sigma_e2], vc, rtol=2e-6)
    assert_allclose(fit.fixef.to_numpy(), ref.fixef.to_numpy(), rtol=1e-8)
    assert_allclose(np.sqrt(np.diag(fit.vcov)), ref.se.to_numpy(), rtol=1e-5)
    assert list(fit.fixef.index) == ["(Intercept)", "Days"]


def test_equals_lme4_published(sleep):
    """lme4's printed REML fit of Reaction ~ Days + (1 | Subject) (package reference data)."""
    data, K, X = sleep
    fit = greml(data["Reaction"], K, X)
    ref = datasets.reference("lme4_sleepstudy")["fits"]["sleepstudy_intercept_reml"]
    assert_allclose(fit.criterion, ref["deviance"], rtol=1e-10)
    assert_allclose(fit.loglik, ref["loglik"], rtol=1e-10)
    assert_allclose([fit.sigma_g2, fit.sigma_e2],
                    [ref["varcorr"][0]["vcov"], ref["varcorr"][1]["vcov"]], rtol=1e-6)
    assert_allclose(fit.fixef.to_numpy(), list(ref["fixef"].values()), rtol=1e-9)


# --- a dense likelihood, written with V itself --------------------------------------------

def dense_criterion(components, y, K, X, reml):
    """-2 log L (ML) or lme4's REML criterion with a dense V = s_g K + s_e I."""
    s_g, s_e = components
    n, p = X.shape
    L = np.linalg.cholesky(s_g * K + s_e * np.eye(n))
    Xw, yw = np.linalg.solve(L, X), np.linalg.solve(L, y)
    beta = np.linalg.lstsq(Xw, yw, rcond=None)[0]
    w = yw - Xw @ beta
    out = 2 * np.log(np.diag(L)).sum() + w @ w
    if reml:
        return out + (n - p) * np.log(2 * np.pi) + np.linalg.slogdet(Xw.T @ Xw)[1]
    return out + n * np.log(2 * np.pi)


@pytest.mark.parametrize("reml", [True, False])
def test_equals_dense_likelihood(small_grm, reml):
    y, K, X = small_grm
    fit = greml(y, K, X, reml=reml)
    assert 0 < fit.h2 < 1
    assert_allclose(fit.criterion, dense_criterion([fit.sigma_g2, fit.sigma_e2], y, K, X, reml),
                    rtol=1e-11)
    # the dense criterion minimised by a general-purpose optimiser finds the same point
    res = optimize.minimize(lambda a: dense_criterion(np.exp(a), y, K, X, reml),
                            np.log([0.3, 0.3]), method="Nelder-Mead",
                            options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 4000})
    assert_allclose(np.exp(res.x), [fit.sigma_g2, fit.sigma_e2], rtol=1e-4)
    assert fit.criterion <= res.fun + 1e-9
    # and the profiled criterion is the dense one at every h2 (sigma^2 profiled numerically)
    for h2 in [0.0, 0.2, 0.9]:
        best = optimize.minimize_scalar(
            lambda ls: dense_criterion(np.exp(ls) * np.array([h2, 1 - h2]), y, K, X, reml),
            bounds=(-5, 5), method="bounded", options={"xatol": 1e-10})
        assert_allclose(fit.profile(h2).iloc[0] + fit.criterion, best.fun, rtol=1e-9)


@pytest.mark.parametrize("reml", [True, False])
def test_observed_information_is_half_the_hessian(small_grm, reml):
    """The analytic observed information of (sigma_g^2, sigma_e^2) equals half the numerical
    Hessian of the dense criterion (beta profiled), and the expected one tr(T V_k T V_l) / 2."""
    y, K, X = small_grm
    fit = greml(y, K, X, reml=reml, information="observed")
    theta = np.array([fit.sigma_g2, fit.sigma_e2])
    h = 1e-4 * theta
    H = np.empty((2, 2))
    for k in range(2):
        for l in range(2):
            def f(a, b):
                t = theta.copy()
                t[k] += a
                t[l] += b
                return dense_criterion(t, y, K, X, reml)
            H[k, l] = (f(h[k], h[l]) - f(h[k], -h[l]) - f(-h[k], h[l]) + f(-h[k], -h[l])) \
                / (4 * h[k] * h[l])
    observed = np.linalg.inv(fit.vcov_components.to_numpy())
    assert_allclose(observed, H / 2, rtol=1e-4)

    V = fit.sigma_g2 * K + fit.sigma_e2 * np.eye(len(y))
    Vi = np.linalg.inv(V)
    T = Vi - Vi @ X @ np.linalg.solve(X.T @ Vi @ X, X.T @ Vi) if reml else Vi
    derivs = [K, np.eye(len(y))]
    expected = np.array([[np.trace(T @ a @ T @ b) / 2 for b in derivs] for a in derivs])
    fit_exp = greml(y, K, X, reml=reml, information="expected")
    assert_allclose(np.linalg.inv(fit_exp.vcov_components.to_numpy()), expected, rtol=1e-9)
    fit_ai = greml(y, K, X, reml=reml)
    assert_allclose(np.linalg.inv(fit_ai.vcov_components.to_numpy()), (observed + expected) / 2,
                    rtol=1e-8)


def test_se_h2_is_profile_curvature(small_grm):
    """Delta method on the observed information = 1 / curvature of the profiled log-likelihood
    in h2 (invariance of the observed information at the optimum)."""
    y, K, X = small_grm
    fit = greml(y, K, X, information="observed")
    h = 1e-4
    curv = (fit.profile(fit.h2 + h).iloc[0] + fit.profile(fit.h2 - h).iloc[0]) / h**2
    assert_allclose(fit.se_h2, np.sqrt(2 / curv), rtol=1e-4)


def test_confint(small_grm):
    y, K, X = small_grm
    fit = greml(y, K, X)
    ci = fit.confint()
    assert 0 <= ci["lower"] < fit.h2 < ci["upper"] <= 1
    for end in ci:
        if 0 < end < 1:
            assert_allclose(fit.profile(end).iloc[0], stats.chi2.ppf(0.95, 1), rtol=1e-6)
    wald = fit.confint("wald", level=0.9)
    assert_allclose(wald.to_numpy(), np.clip(fit.h2 + np.array([-1, 1]) * 1.6448536 * fit.se_h2,
                                             0, 1), rtol=1e-6)


def test_eigendecomposition_can_be_reused(small_grm):
    y, K, X = small_grm
    eig = eigen_relationship(K)
    a, b = greml(y, K, X), greml(y, eig, X)
    assert a.h2 == b.h2 and a.criterion == b.criterion
    assert_allclose(eig.vectors @ np.diag(eig.values) @ eig.vectors.T, K, atol=1e-12)


# --- simulation truth --------------------------------------------------------------------

@pytest.fixture(scope="module")
def unrelated_600():
    sample = simulate_genotypes(600, 1500, seed=21)
    return sample.G, eigen_relationship(grm(sample.G))


def test_h2_recovered_within_3_se(unrelated_600):
    G, eig = unrelated_600
    for h2, seed in [(0.5, 1), (0.5, 2), (0.8, 3), (0.3, 4), (0.6, 5), (0.2, 6)]:
        pheno = simulate_phenotype(G, h2, 200, seed=seed)
        fit = greml(pheno.y, eig)
        assert abs(fit.h2 - h2) < 3 * fit.se_h2, (h2, seed, fit.h2, fit.se_h2)
        assert 0.04 < fit.se_h2 < 0.2


def test_se_matches_visscher_approximation(unrelated_600):
    """Visscher et al. (2014): for unrelated individuals and h2 near 0,
    Var(h2_hat) ~ 2 / (n^2 Var(A_ij)) (their 316 / n uses Var(A_ij) = 2e-5 for human data)."""
    G, eig = unrelated_600
    K = eig.vectors @ np.diag(eig.values) @ eig.vectors.T
    n = K.shape[0]
    var_offdiag = K[np.triu_indices(n, 1)].var()
    approx = np.sqrt(2 / (n**2 * var_offdiag))
    ses = [greml(simulate_phenotype(G, 0.02, 100, seed=s).y, eig).se_h2 for s in range(5)]
    assert_allclose(np.mean(ses), approx, rtol=0.15)


def test_lrt_null_distribution():
    """Under h2 = 0, P(p <= alpha) = alpha for the mixture p-value, and about half the
    estimates sit at 0. 400 replicates; bounds are 99.9% binomial intervals."""
    sample = simulate_genotypes(300, 300, seed=31)
    eig = eigen_relationship(grm(sample.G))
    rng = np.random.default_rng(32)
    n_rep = 400
    fits = [greml(rng.normal(size=300), eig) for _ in range(n_rep)]
    p = np.array([f.lrt["p_value"] for f in fits])
    at_zero = np.mean([f.h2 == 0 for f in fits])
    assert np.all((p >= 0) & (p <= 1))
    for alpha in [0.05, 0.1, 0.25, 0.5]:
        lo, hi = stats.binom.ppf([0.0005, 0.9995], n_rep, alpha) / n_rep
        assert lo <= np.mean(p <= alpha) <= hi, alpha
    lo, hi = stats.binom.ppf([0.0005, 0.9995], n_rep, 0.5) / n_rep
    assert lo <= at_zero <= hi
    # the p-values of the fits off the boundary are uniform on (0, 0.5)
    assert stats.kstest(2 * p[p < 0.5], "uniform").pvalue > 0.001


def test_boundary_fit():
    """Pure noise with a large K: h2 = 0, LRT statistic 0, p = 1, profile interval from 0."""
    rng = np.random.default_rng(41)
    Z = np.kron(np.eye(20), np.ones((5, 1)))
    group = Z @ np.array([1.0, -1.0] * 10)                 # exactly balanced, no group variance
    y = rng.normal(size=100)
    y = y - Z @ np.linalg.lstsq(Z, y, rcond=None)[0] + 3 + 0 * group   # group means removed
    fit = greml(y, Z @ Z.T)
    assert fit.h2 == 0.0 and fit.lrt["statistic"] == 0.0 and fit.lrt["p_value"] == 1.0
    assert fit.confint()["lower"] == 0.0


def test_ml_unbounded_with_centred_grm():
    """A GRM centred by sample frequencies has A 1 = 0: with an intercept, ML's likelihood grows
    without bound as h2 -> 1. greml says so (REML, which has no such problem, does not)."""
    sample = simulate_genotypes(60, 400, seed=11)
    K = grm(sample.G)
    assert abs(np.linalg.eigvalsh(K)[0]) < 1e-12
    y = simulate_phenotype(sample.G, 0.6, 50, seed=12).y
    with pytest.warns(lmmlib.errors.SingularFitWarning, match="without bound.*use REML"):
        fit = greml(y, K, reml=False)
    assert fit.h2 == H2_MAX
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit_reml = greml(y, K)
    assert 0 < fit_reml.h2 < 1


# --- bad input ---------------------------------------------------------------------------

def test_bad_input(small_grm):
    y, K, X = small_grm
    with pytest.raises(LmmInputError, match="square"):
        greml(y, K[:, :-1])
    asym = K.copy()
    asym[0, 1] += 0.25
    with pytest.raises(LmmInputError, match=r"not symmetric: \|K\[0,1\] - K\[1,0\]\| = 0.25"):
        greml(y, asym)
    with pytest.raises(LmmInputError, match=r"not positive semidefinite: its smallest "
                                            r"eigenvalue is -0.5"):
        greml(y, np.diag(np.r_[-0.5, np.ones(len(y) - 1)]))
    with pytest.raises(LmmInputError, match="y has 99 entries but K is 100 x 100"):
        greml(y[:-1], K)
    y_nan = y.copy()
    y_nan[3] = np.nan
    with pytest.raises(LmmInputError, match="1 missing or non-finite"):
        greml(y_nan, K)
    with pytest.raises(LmmInputError, match="y is constant"):
        greml(np.ones_like(y), K)
    K_nan = K.copy()
    K_nan[2, 5] = K_nan[5, 2] = np.nan
    with pytest.raises(LmmInputError, match="2 non-finite entries.*row 2, column 5"):
        greml(y, K_nan)
    with pytest.raises(LmmInputError, match="one row per individual"):
        greml(y, K, X[:-1])
    with pytest.raises(LmmInputError, match="full column rank"):
        greml(y, K, np.column_stack([X, X[:, 1]]))
    with pytest.raises(LmmInputError, match="information"):
        greml(y, K, information="fisher")


def test_docstring_examples():
    import doctest

    import lmmlib.genetics
    import lmmlib.heritability

    for module in (lmmlib.genetics, lmmlib.heritability):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__
