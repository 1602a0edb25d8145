"""lmmlib against statsmodels' MixedLM on simulated data (an independent implementation).

statsmodels reports the full log-likelihood (ML) and the REML log-likelihood with the same
constants as lme4 (-n/2 log 2 pi, resp. -(n-p)/2 log 2 pi), so log-likelihoods are compared
directly.  statsmodels runs BFGS with a tight gradient tolerance; the remaining differences are its
optimizer's, so lmmlib's log-likelihood must be at least as high.
"""

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from lmmlib import lmer


def simulate(seed, groups=40, slope_sd=0.0, unbalanced=False):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, 25, groups) if unbalanced else np.full(groups, 8)
    g = np.repeat(np.arange(groups), sizes)
    n = len(g)
    x = rng.normal(size=n)
    u0 = rng.normal(scale=1.5, size=groups)
    u1 = rng.normal(scale=slope_sd, size=groups) if slope_sd else np.zeros(groups)
    y = 3.0 - 0.8 * x + u0[g] + u1[g] * x + rng.normal(size=n)
    labels = np.array([f"g{j:02d}" for j in range(groups)])
    return pd.DataFrame({"y": y, "x": x, "g": pd.Categorical(labels[g])})


def statsmodels_fit(data, slopes, reml):
    model = smf.mixedlm("y ~ x", data, groups="g", re_formula="~x" if slopes else "1")
    return model.fit(reml=reml, method=["bfgs"], gtol=1e-8, maxiter=2000)


def gls_vcov(data, ref, slopes):
    """``(X' V^-1 X)^-1`` with ``V = Z G Z' + scale I`` from statsmodels' estimates (dense)."""
    X = np.column_stack([np.ones(len(data)), data["x"]])
    Zg = X if slopes else X[:, :1]
    V = ref.scale * np.eye(len(data))
    for level in data["g"].cat.categories:
        rows = np.flatnonzero((data["g"] == level).to_numpy())
        V[np.ix_(rows, rows)] += Zg[rows] @ ref.cov_re.to_numpy() @ Zg[rows].T
    return np.linalg.inv(X.T @ np.linalg.solve(V, X))


CASES = [
    ("random intercepts", dict(seed=11), False),
    ("random slopes", dict(seed=12, slope_sd=0.6), True),
    ("unbalanced intercepts", dict(seed=13, unbalanced=True), False),
    ("unbalanced slopes", dict(seed=14, slope_sd=0.8, unbalanced=True), True),
]


@pytest.mark.parametrize("reml", [True, False], ids=["REML", "ML"])
@pytest.mark.parametrize("name, sim, slopes", CASES, ids=[c[0] for c in CASES])
def test_matches_statsmodels_mixedlm(name, sim, slopes, reml):
    data = simulate(**sim)
    ref = statsmodels_fit(data, slopes, reml)
    fit = lmer("y ~ x + (x | g)" if slopes else "y ~ x + (1 | g)", data, reml=reml)

    assert fit.loglik == pytest.approx(ref.llf, abs=1e-6)
    assert fit.loglik >= ref.llf - 1e-9
    np.testing.assert_allclose(fit.fixef.to_numpy(), ref.fe_params.to_numpy(), rtol=1e-5)
    # statsmodels' bse_fe invert the joint observed information; the GLS covariance
    # sigma^2 (X'V^-1 X)^-1 at statsmodels' variance estimates is lme4's (and our) vcov
    np.testing.assert_allclose(fit.vcov.to_numpy(), gls_vcov(data, ref, slopes), rtol=2e-4)
    assert fit.sigma**2 == pytest.approx(ref.scale, rel=1e-4)
    T = fit.layout.templates(fit.theta)[0]
    np.testing.assert_allclose(fit.sigma**2 * T @ T.T, ref.cov_re.to_numpy(), rtol=1e-4, atol=1e-5)
    # conditional modes (statsmodels' random_effects are BLUPs of the same model)
    blups = pd.DataFrame(ref.random_effects).T.to_numpy()
    ours = fit.ranef["g"].to_numpy()
    np.testing.assert_allclose(ours, blups, rtol=1e-3, atol=1e-4 * np.abs(blups).max())
