"""Convergence from bad starts and of refits (issue 7).

lme4's ML deviance of ``Reaction ~ Days + (Days | Subject)`` is 1751.939 (``logLik`` -875.97);
MixedModels.jl reaches it from a start of theta = (1e6, 0, 1e6).  A refit by ML of a REML fit
must reach the same optimum as a fresh ML fit; the optimum of Dyestuff's one-parameter
criterion is located independently by finding the root of its derivative.
"""

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import optimize

from lmmlib import LinearMixedModel, datasets, lmer
from lmmlib.errors import LmmInputError

SLOPES = "Reaction ~ Days + (Days | Subject)"


@pytest.fixture(scope="module")
def ml_fit():
    return lmer(SLOPES, datasets.sleepstudy(), reml=False)


@pytest.mark.parametrize("big", [1e6, 1e8])
def test_badly_scaled_start_recovers_the_optimum(ml_fit, big):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ConvergenceWarning, no numpy RuntimeWarning
        fit = LinearMixedModel(ml_fit.design, reml=False).fit(start=[big, 0.0, big])
    assert fit.optinfo["converged"]
    assert fit.deviance == pytest.approx(1751.9393, abs=1e-4)
    assert fit.deviance == pytest.approx(ml_fit.deviance, abs=1e-8)
    np.testing.assert_allclose(fit.theta, ml_fit.theta, rtol=1e-5)


def test_a_good_start_is_not_restarted(ml_fit):
    fit = LinearMixedModel(ml_fit.design, reml=False).fit(start=ml_fit.theta * 1.01)
    assert "restarted" not in fit.optinfo["message"]
    assert fit.deviance == pytest.approx(ml_fit.deviance, abs=1e-8)


def test_ml_refit_of_a_reml_fit_reaches_the_fresh_ml_optimum(ml_fit):
    reml = lmer(SLOPES, datasets.sleepstudy())
    refit = reml.refit(reml=False)
    np.testing.assert_allclose(refit.theta, ml_fit.theta, atol=1e-7)
    dyestuff = datasets.dyestuff()
    fresh = lmer("Yield ~ 1 + (1|Batch)", dyestuff, reml=False)
    refit = lmer("Yield ~ 1 + (1|Batch)", dyestuff).refit(reml=False)

    def slope(t, h=1e-5):
        f = fresh.pls.objective
        return (f(np.array([t + h]), False) - f(np.array([t - h]), False)) / (2 * h)

    optimum = optimize.brentq(slope, 0.7, 0.8, xtol=1e-12)
    assert optimum == pytest.approx(0.752580698, abs=1e-8)  # lme4: theta = 0.7525807
    # before the fix the refit stopped at 0.75258059, 1.1e-7 short
    assert abs(refit.theta[0] - optimum) < 3e-8
    assert abs(fresh.theta[0] - optimum) < 3e-8


def test_reml_must_be_a_bool():
    design = lmer(SLOPES, datasets.sleepstudy()).design
    for bad in ("yes", "FALSE", 1, None):
        with pytest.raises(LmmInputError, match="reml must be True or False"):
            LinearMixedModel(design, reml=bad)
    assert LinearMixedModel(design, reml=np.bool_(False)).reml is False
