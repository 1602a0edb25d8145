"""Profile-likelihood intervals (lmmlib.profile) against lme4, against an independent refit,
and against the Wald interval where the two must agree.

lme4's numbers come from ``confint(fm1)`` (method = "profile") for
``fm1 <- lmer(Reaction ~ Days + (Days | Subject), sleepstudy)`` (REML; lme4 profiles the ML
refit).  lme4 interpolates splines through a grid of zeta values while lmmlib solves for the
ends exactly, so agreement is to about 1e-4, well inside the 1e-3 asked for.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose
from scipy import stats

import lmmlib
from lmmlib.errors import LmmInputError, SingularFitWarning
from lmmlib.lmm import lmer
from lmmlib.profile import DevianceProfile, profile, profile_confint, theta_from_sdcor

SLOPES = "Reaction ~ Days + (Days | Subject)"
INTERCEPT = "Reaction ~ Days + (1 | Subject)"


def lme4(key: str) -> dict:
    return lmmlib.datasets.reference("lme4_sleepstudy")["fits"][key]


@pytest.fixture(scope="module")
def slopes(sleep):
    return lmer(SLOPES, sleep)


@pytest.fixture(scope="module")
def slopes_ci(slopes) -> pd.DataFrame:
    return slopes.confint(method="profile")


@pytest.fixture(scope="module")
def intercept(sleep):
    return lmer(INTERCEPT, sleep)


@pytest.fixture(scope="module")
def intercept_profile(intercept) -> DevianceProfile:
    return DevianceProfile(intercept)


# --------------------------------------------------------------------------- against lme4
def test_sleepstudy_profile_intervals_match_lme4(slopes_ci):
    ref = lme4("sleepstudy_profile_ci")
    assert list(slopes_ci.index) == ref["names"]
    assert list(slopes_ci.columns) == ["2.5 %", "97.5 %"]
    expected = np.column_stack([ref["lower"], ref["upper"]])
    is_cor = slopes_ci.index.str.startswith("cor_")
    assert_allclose(slopes_ci.to_numpy()[~is_cor], expected[~is_cor], rtol=1e-3)
    assert_allclose(slopes_ci.to_numpy()[is_cor], expected[is_cor], atol=1e-3)


def test_profile_intervals_contain_wald_and_share_its_rows(slopes, slopes_ci):
    """Same rows as the Wald table; the profile interval of each fixed effect contains lme4's
    Wald interval (it allows for the uncertainty in the variance parameters) and is within a
    few percent of it."""
    wald = slopes.confint(method="wald")
    ref = lme4("sleepstudy_wald_ci")
    assert list(wald.index) == list(slopes_ci.index)
    fixed = ["(Intercept)", "Days"]
    lme4_wald = np.column_stack([ref["lower"][4:], ref["upper"][4:]])
    assert_allclose(wald.loc[fixed].to_numpy(), lme4_wald, rtol=1e-6)
    half = (wald["97.5 %"] - wald["2.5 %"]).loc[fixed] / 2
    gap = (slopes_ci.loc[fixed] - wald.loc[fixed]).abs().max(axis=1) / half
    assert (gap < 0.05).all()
    assert (slopes_ci.loc[fixed, "2.5 %"] < wald.loc[fixed, "2.5 %"]).all()
    assert (slopes_ci.loc[fixed, "97.5 %"] > wald.loc[fixed, "97.5 %"]).all()


def test_reml_fit_is_profiled_through_its_ml_refit(sleep, slopes_ci):
    """lme4 profiles the likelihood: the REML fit and the ML fit give the same intervals."""
    ml = lmer(SLOPES, sleep, reml=False)
    which = ["sd_Days|Subject", "sigma", "Days"]
    assert_allclose(profile_confint(ml, which=which).to_numpy(), slopes_ci.loc[which].to_numpy(),
                    rtol=1e-6)


# --------------------------------------------------------------------------- the definition
def test_zeta_at_the_ends_is_the_normal_quantile(intercept, intercept_profile):
    """|zeta| = sqrt(qchisq(level, 1)) at both ends; near the ML estimate zeta is near 0."""
    level = 0.9
    ci = profile_confint(intercept, level=level)
    assert list(ci.columns) == ["5 %", "95 %"]
    cut = np.sqrt(stats.chi2.ppf(level, 1))
    for name in ["sd_(Intercept)|Subject", "sigma", "Days"]:
        lo, hi = ci.loc[name]
        assert intercept_profile.zeta(name, lo) == pytest.approx(-cut, abs=1e-6)
        assert intercept_profile.zeta(name, hi) == pytest.approx(cut, abs=1e-6)
        near = intercept_profile.estimates[name] + 1e-3 * (hi - lo)
        assert 0 < intercept_profile.zeta(name, near) < 1e-2


def test_fixed_effect_profile_equals_refit_with_offset(sleep, intercept_profile):
    """zeta for beta_Days = b by lme4's route: refit y - b Days ~ 1 + (1 | Subject) by ML."""
    base = intercept_profile.deviance
    assert base == pytest.approx(intercept_profile.ml_fit.deviance, abs=1e-8)
    for b in [8.0, 11.5]:
        data = sleep.assign(y_offset=sleep["Reaction"] - b * sleep["Days"])
        refit = lmer("y_offset ~ 1 + (1 | Subject)", data, reml=False)
        expected = np.sign(b - intercept_profile.estimates["Days"]) * np.sqrt(refit.deviance - base)
        assert intercept_profile.zeta("Days", b) == pytest.approx(expected, abs=1e-5)


def test_random_intercept_interval_brackets_estimate_and_is_asymmetric(intercept):
    ci = profile_confint(intercept)
    estimates = pd.concat([intercept.sdcor, intercept.fixef])
    assert (ci["2.5 %"] < estimates).all() and (estimates < ci["97.5 %"]).all()
    lo, hi = ci.loc["sd_(Intercept)|Subject"]
    sd = intercept.sdcor["sd_(Intercept)|Subject"]
    assert lo > 0
    assert (hi - sd) > 1.3 * (sd - lo)  # the likelihood of an SD is skewed to the right
    lo, hi = ci.loc["Days"]
    b = intercept.fixef["Days"]
    assert (hi - b) == pytest.approx(b - lo, rel=1e-3)  # ... that of a fixed effect is not


def test_fixed_effect_profile_is_close_to_wald_in_a_large_balanced_design():
    rng = np.random.default_rng(20260301)
    groups, per_group = 40, 25
    g = np.repeat(np.arange(groups), per_group)
    x = rng.normal(size=groups * per_group)
    y = 2 + 0.5 * x + rng.normal(0, 0.8, groups)[g] + rng.normal(0, 1, groups * per_group)
    data = pd.DataFrame({"y": y, "x": x, "g": pd.Categorical(g)})
    fit = lmer("y ~ x + (1 | g)", data)
    ci = profile_confint(fit, which=["(Intercept)", "x"])
    wald = fit.confint().loc[ci.index]
    half = (wald["97.5 %"] - wald["2.5 %"]) / 2
    gap = (ci - wald).abs().div(half, axis=0)
    assert (gap.loc["x"] < 0.01).all()
    assert (gap.loc["(Intercept)"] < 0.05).all()
    assert ci.loc["x", "2.5 %"] < 0.5 < ci.loc["x", "97.5 %"]


def test_singular_fit_sd_interval_starts_at_zero():
    """No group effect: the SD is estimated as 0 and, as lme4, the lower end is 0."""
    rng = np.random.default_rng(1)
    g = np.repeat(np.arange(10), 5)
    x = np.tile(np.arange(5.0), 10)
    data = pd.DataFrame({"y": 1 + 0.5 * x + rng.normal(0, 1, 50), "x": x, "g": pd.Categorical(g)})
    with pytest.warns(SingularFitWarning):
        fit = lmer("y ~ x + (1 | g)", data)
    ci = profile_confint(fit)
    assert ci.loc["sd_(Intercept)|g", "2.5 %"] == 0.0
    assert 0 < ci.loc["sd_(Intercept)|g", "97.5 %"] < ci.loc["sigma", "97.5 %"]
    prof = DevianceProfile(fit)
    assert abs(prof.zeta("sd_(Intercept)|g", 0.0)) < 1e-3


# --------------------------------------------------------------------------- the pieces
def test_theta_from_sdcor_inverts_the_fit(slopes):
    theta, excess = theta_from_sdcor(slopes.sdcor.to_numpy()[:-1], slopes.sigma, slopes.layout)
    assert excess == 0.0
    assert_allclose(theta, slopes.theta, rtol=1e-10)


def test_theta_from_sdcor_repairs_an_invalid_correlation_matrix():
    from types import SimpleNamespace

    from lmmlib.remat import ThetaLayout

    layout = ThetaLayout([SimpleNamespace(group="g", names=("a", "b", "c"))])
    # sd_a, cor_ba, cor_ca, sd_b, cor_cb, sd_c: cor(a,b) = cor(a,c) = 0.9 but cor(b,c) = -0.9
    theta, excess = theta_from_sdcor(np.array([1.0, 0.9, 0.9, 1.0, -0.9, 1.0]), 1.0, layout)
    assert excess > 0.1
    T = layout.templates(theta)[0]
    assert_allclose(np.diag(T @ T.T), 1.0)
    assert np.linalg.eigvalsh(T @ T.T).min() > -1e-10


def test_profile_table_for_plots(intercept):
    table = profile(intercept, which=["sd_(Intercept)|Subject", "Days"], grid=4, level=0.95)
    assert list(table.columns) == ["parameter", "value", "zeta"]
    cut = stats.norm.ppf(0.975)
    for name, part in table.groupby("parameter", sort=False):
        assert len(part) == 5  # four grid values and the estimate
        assert np.all(np.diff(part["value"]) > 0) and np.all(np.diff(part["zeta"]) > 0)
        assert_allclose(part["zeta"].iloc[[0, -1]], [-cut, cut], atol=1e-6)
        assert (part["zeta"] == 0).sum() == 1
    custom = profile(intercept, grid={"sigma": [28.0, 30.0, 33.0]})
    assert list(custom["parameter"].unique()) == ["sigma"]
    assert custom["value"].size == 4 and custom["zeta"].is_monotonic_increasing


def test_bad_input_is_reported_clearly(intercept):
    with pytest.raises(LmmInputError, match="level"):
        profile_confint(intercept, level=1.5)
    with pytest.raises(LmmInputError, match="level"):
        intercept.confint(method="profile", level=0)
    with pytest.raises(LmmInputError, match="'sd_Days'"):
        profile_confint(intercept, which=["sd_Days"])
    with pytest.raises(LmmInputError, match="fitted linear mixed model"):
        profile_confint(pd.DataFrame({"a": [1.0]}))
    with pytest.raises(LmmInputError, match="grid"):
        profile(intercept, grid=1)
    prof = DevianceProfile(intercept)
    with pytest.raises(LmmInputError, match="outside its range"):
        prof.zeta("sd_(Intercept)|Subject", -1.0)


def test_no_warnings_from_a_regular_profile(intercept):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        profile_confint(intercept, which=["sigma"])
