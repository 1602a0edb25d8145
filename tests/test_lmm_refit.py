"""Refitting to a new response, simulating from a fit, and the parametric bootstrap.

``fit.refit(newresp)`` must give exactly the fit that ``lmer`` gives on data with that
response; ``fit.simulate`` must draw from the fitted model (checked against the model's own
mean and covariance); a parametric bootstrap built from the two must reproduce the standard
errors of the fit.
"""

import warnings

import numpy as np
import pandas as pd
import pytest

from lmmlib import datasets, lmer
from lmmlib.errors import LmmInputError, SingularFitWarning

FORMULA = "Reaction ~ Days + (Days | Subject)"


@pytest.fixture(scope="module")
def fit(sleep):
    return lmer(FORMULA, sleep)


def test_refit_to_the_same_response_reproduces_the_fit(fit):
    again = fit.refit(fit.design.y)
    assert again.deviance == pytest.approx(fit.deviance, rel=1e-12)
    np.testing.assert_allclose(again.theta, fit.theta, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(again.fixef, fit.fixef, rtol=1e-9)
    np.testing.assert_allclose(again.se, fit.se, rtol=1e-6)
    assert again.reml and again.optinfo["converged"]
    # a good start: far fewer evaluations than the fit from lme4's start
    assert again.optinfo["n_evaluations"] < fit.optinfo["n_evaluations"]


@pytest.mark.parametrize("reml", [True, False])
def test_refit_to_a_new_response_equals_a_fresh_fit(fit, sleep, reml):
    rng = np.random.default_rng(11)
    y = sleep["Reaction"].to_numpy() + rng.normal(0, 20, len(sleep)) + 3 * sleep["Days"]
    fresh = lmer(FORMULA, sleep.assign(Reaction=y), reml=reml)
    refitted = fit.refit(y, reml=reml)
    assert refitted.reml is reml
    assert refitted.deviance == pytest.approx(fresh.deviance, rel=1e-10)
    np.testing.assert_allclose(refitted.sdcor, fresh.sdcor, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(refitted.fixef, fresh.fixef, rtol=1e-6)
    np.testing.assert_allclose(refitted.ranef["Subject"], fresh.ranef["Subject"], rtol=1e-3,
                               atol=1e-3)
    np.testing.assert_allclose(refitted.residuals, y - refitted.fitted, rtol=1e-12)
    # the original fit is untouched
    assert fit.deviance == pytest.approx(1743.6282719585, rel=1e-9)


def test_refit_aligns_a_series_on_the_rows_of_the_fit(fit):
    y = pd.Series(fit.design.y * 1.5, index=fit.design.row_index)
    shuffled = y.sample(frac=1.0, random_state=4)
    a, b = fit.refit(y.to_numpy()), fit.refit(shuffled)
    assert a.deviance == pytest.approx(b.deviance, rel=1e-12)
    assert fit.refit(y.to_frame()).deviance == pytest.approx(a.deviance, rel=1e-12)


def test_refit_rejects_bad_responses(fit):
    y = fit.design.y
    with pytest.raises(LmmInputError, match=r"one value per observation of the fit \(180\)"):
        fit.refit(y[:-1])
    with pytest.raises(LmmInputError, match="2 missing or infinite"):
        fit.refit(np.where(np.arange(180) < 2, np.nan, y))
    with pytest.raises(LmmInputError, match="constant"):
        fit.refit(np.ones(180))
    with pytest.raises(LmmInputError, match="does not match"):
        fit.refit(pd.Series(y, index=np.arange(1000, 1180)))
    with pytest.raises(LmmInputError, match="one column"):
        fit.refit(pd.DataFrame({"a": y, "b": y}))
    with pytest.raises(TypeError, match=r"refit\(reml=False\)"):
        fit.refit(False)


def test_simulate_is_reproducible_and_shaped_like_lme4(fit):
    sims = fit.simulate(5, seed=42)
    assert sims.shape == (180, 5)
    assert list(sims.columns) == ["sim_1", "sim_2", "sim_3", "sim_4", "sim_5"]
    assert sims.index.equals(fit.design.row_index)
    pd.testing.assert_frame_equal(sims, fit.simulate(5, seed=42))
    assert not np.allclose(sims.to_numpy(), fit.simulate(5, seed=43).to_numpy())
    rng = np.random.default_rng(42)
    pd.testing.assert_frame_equal(sims, fit.simulate(5, seed=rng))
    for bad in (0, -1, 2.5, True):
        with pytest.raises(LmmInputError, match="nsim"):
            fit.simulate(bad)


def test_simulated_responses_have_the_models_mean_and_covariance(fit):
    """Over 20000 draws: mean X beta, and within a subject the covariance
    sigma^2 (Z_i T T' Z_i' + I); subjects independent."""
    sims = fit.simulate(20_000, seed=7).to_numpy()
    X, beta = fit.design.X, fit.fixef.to_numpy()
    mean_se = np.sqrt(np.diag(np.cov(sims))) / np.sqrt(sims.shape[1])
    assert np.all(np.abs(sims.mean(axis=1) - X @ beta) < 4.5 * mean_se)
    T = fit.layout.templates(fit.theta)[0]
    codes = fit.terms[0].codes
    rows = np.flatnonzero(codes == 0)
    Zi = fit.terms[0].X[rows]
    model_cov = fit.sigma**2 * (Zi @ T @ T.T @ Zi.T + np.eye(len(rows)))
    empirical = np.cov(sims[rows])
    np.testing.assert_allclose(empirical, model_cov, rtol=0.06, atol=0.03 * model_cov.max())
    other = np.flatnonzero(codes == 1)
    cross = np.cov(sims[rows[0]], sims[other[0]])[0, 1]
    assert abs(cross) < 0.03 * model_cov.max()


def test_parametric_bootstrap_reproduces_the_standard_errors(fit):
    """200 refits to simulated responses (lme4's bootMer, type 'parametric'): the bootstrap SD
    of each fixed effect is close to its standard error, the bootstrap mean close to the
    estimate, and every refit is a proper fit."""
    sims = fit.simulate(200, seed=2024)
    estimates, converged = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularFitWarning)  # a few resamples may be boundary
        for column in sims:
            refit = fit.refit(sims[column])
            estimates.append(refit.fixef.to_numpy())
            converged.append(refit.optinfo["converged"])
    estimates = np.array(estimates)
    assert all(converged)
    np.testing.assert_allclose(estimates.std(axis=0, ddof=1), fit.se, rtol=0.15)
    assert np.all(np.abs(estimates.mean(axis=0) - fit.fixef) < 3 * fit.se / np.sqrt(200))
