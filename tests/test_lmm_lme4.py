"""lmmlib's LMM engine against lme4's own numbers for the sleepstudy fits.

The reference values (R 4.2.2, lme4 1.1-31) are in tests/reference/lme4_sleepstudy.json.
lme4's optimizer (bobyqa) stops at a tolerance of its own, so estimates are compared to
1e-4 relative and the (flat, quadratic) deviance at the optimum to 1e-7 relative.
"""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import lmmlib
from lmmlib import anova, datasets, lmer

REFERENCE = json.loads((Path(__file__).parent / "reference" / "lme4_sleepstudy.json").read_text())[
    "fits"
]
FITS = [
    "sleepstudy_slopes_reml",
    "sleepstudy_slopes_ml",
    "sleepstudy_intercept_reml",
    "sleepstudy_intercept_ml",
]


@pytest.fixture(scope="module")
def sleep():
    return datasets.sleepstudy()


@pytest.fixture(scope="module")
def fits(sleep):
    return {
        key: lmer(REFERENCE[key]["formula"], sleep, reml=REFERENCE[key]["REML"]) for key in FITS
    }


@pytest.mark.parametrize("key", FITS)
def test_likelihood_and_information_criteria(fits, key):
    fit, ref = fits[key], REFERENCE[key]
    assert fit.deviance == pytest.approx(ref["deviance"], rel=1e-7)
    assert fit.loglik == pytest.approx(ref["loglik"], rel=1e-7)
    assert fit.aic == pytest.approx(ref["aic"], rel=1e-7)
    assert fit.bic == pytest.approx(ref["bic"], rel=1e-7)
    assert fit.nobs == ref["nobs"]
    assert fit.singular is ref["singular"]
    assert fit.optinfo["converged"]


@pytest.mark.parametrize("key", FITS)
def test_fixed_effects_and_standard_errors(fits, key):
    fit, ref = fits[key], REFERENCE[key]
    assert list(fit.fixef.index) == list(ref["fixef"])
    np.testing.assert_allclose(fit.fixef.to_numpy(), list(ref["fixef"].values()), rtol=1e-5)
    np.testing.assert_allclose(fit.se.to_numpy(), list(ref["se"].values()), rtol=1e-4)
    np.testing.assert_allclose(np.sqrt(np.diag(fit.vcov.to_numpy())), fit.se.to_numpy())
    assert fit.sigma == pytest.approx(ref["sigma"], rel=1e-4)


@pytest.mark.parametrize("key", FITS)
def test_theta_and_varcorr(fits, key):
    fit, ref = fits[key], REFERENCE[key]
    assert fit.theta_names == list(ref["theta"])
    np.testing.assert_allclose(fit.theta, list(ref["theta"].values()), rtol=1e-4, atol=1e-4)
    expected = pd.DataFrame(ref["varcorr"])
    got = fit.varcorr
    assert list(got.columns) == ["grp", "var1", "var2", "vcov", "sdcor"]
    assert got["grp"].tolist() == expected["grp"].tolist()
    assert got["var1"].fillna("NA").tolist() == expected["var1"].fillna("NA").tolist()
    assert got["var2"].fillna("NA").tolist() == expected["var2"].fillna("NA").tolist()
    is_cor = expected["var2"].notna().to_numpy()
    # standard deviations relative, correlations absolute
    np.testing.assert_allclose(got["sdcor"][~is_cor], expected["sdcor"][~is_cor], rtol=1e-4)
    np.testing.assert_allclose(got["sdcor"][is_cor], expected["sdcor"][is_cor], atol=1e-4)
    np.testing.assert_allclose(got["vcov"], expected["vcov"], rtol=2e-4, atol=1e-3)


def test_reference_ranef_is_from_the_slopes_reml_fit(fits):
    ref = pd.DataFrame(REFERENCE["sleepstudy_ranef"]["ranef"])
    errors = {
        key: np.max(np.abs(fits[key].ranef_frame()["condval"].to_numpy() - ref["condval"]))
        for key in ("sleepstudy_slopes_reml", "sleepstudy_slopes_ml")
    }
    assert errors["sleepstudy_slopes_reml"] < 1e-3 < errors["sleepstudy_slopes_ml"]


def test_conditional_modes_and_variances(fits):
    fit = fits["sleepstudy_slopes_reml"]
    ref = pd.DataFrame(REFERENCE["sleepstudy_ranef"]["ranef"])
    got = fit.ranef_frame()
    assert list(got.columns) == ["grpvar", "term", "grp", "condval", "condsd"]
    for column in ("grpvar", "term", "grp"):
        assert got[column].tolist() == ref[column].tolist()
    scale = np.abs(ref["condval"]).max()
    np.testing.assert_allclose(got["condval"], ref["condval"], rtol=1e-4, atol=1e-4 * scale)
    np.testing.assert_allclose(got["condsd"], ref["condsd"], rtol=1e-4)
    # the wide form and the covariance array agree with the long form
    re = fit.ranef["Subject"]
    assert list(re.columns) == ["(Intercept)", "Days"] and len(re) == 18
    np.testing.assert_allclose(re["Days"].to_numpy(), got["condval"][got.term == "Days"])
    cv = fit.condvar["Subject"]
    assert cv.shape == (18, 2, 2)
    np.testing.assert_allclose(np.sqrt(cv[:, 1, 1]), got["condsd"][got.term == "Days"])
    assert fit.ngroups == {"Subject": 18}


def test_wald_confidence_intervals(fits):
    ref = REFERENCE["sleepstudy_wald_ci"]
    ci = fits["sleepstudy_slopes_reml"].confint(method="wald")
    assert list(ci.index) == ref["names"]
    assert list(ci.columns) == ["2.5 %", "97.5 %"]
    for name, lo, hi in zip(ref["names"], ref["lower"], ref["upper"]):
        if lo == "NA":
            assert np.isnan(ci.loc[name]).all()
        else:
            assert ci.loc[name, "2.5 %"] == pytest.approx(lo, abs=1e-3)
            assert ci.loc[name, "97.5 %"] == pytest.approx(hi, abs=1e-3)
    assert list(fits["sleepstudy_slopes_reml"].confint(level=0.9).columns) == ["5 %", "95 %"]


def test_likelihood_ratio_test_refits_with_ml(fits, capsys):
    ref = REFERENCE["sleepstudy_lrt"]
    table = anova(fits["sleepstudy_intercept_reml"], fits["sleepstudy_slopes_reml"])
    assert "refitting model(s) with ML (instead of REML)" in capsys.readouterr().out
    assert list(table.columns) == [
        "npar",
        "AIC",
        "BIC",
        "logLik",
        "deviance",
        "Chisq",
        "Df",
        "Pr(>Chisq)",
    ]
    assert table["npar"].tolist() == [4, 6]
    second = table.iloc[1]
    assert second["Chisq"] == pytest.approx(ref["chisq"], rel=1e-4)
    assert second["Df"] == ref["df"]
    assert second["Pr(>Chisq)"] == pytest.approx(ref["p"], rel=1e-4)
    # the ML refits reproduce lme4's ML fits
    assert table["deviance"].tolist() == pytest.approx(
        [
            REFERENCE["sleepstudy_intercept_ml"]["deviance"],
            REFERENCE["sleepstudy_slopes_ml"]["deviance"],
        ],
        rel=1e-7,
    )
    # already-ML fits are not refitted: no message, same table
    again = anova(fits["sleepstudy_slopes_ml"], fits["sleepstudy_intercept_ml"])
    assert capsys.readouterr().out == ""
    assert again.index.tolist() == ["model2", "model1"]  # ordered by number of parameters
    np.testing.assert_allclose(again["Chisq"].iloc[1], ref["chisq"], rtol=1e-4)


def test_anova_rejects_models_of_different_data(sleep, fits):
    small = lmer("Reaction ~ Days + (1 | Subject)", sleep.iloc[:100], reml=False)
    with pytest.raises(lmmlib.errors.LmmInputError, match="same number of observations"):
        anova(small, fits["sleepstudy_slopes_ml"])


def test_summary_shows_lme4_numbers(fits):
    text = str(fits["sleepstudy_slopes_reml"].summary())
    for expected in [
        "Linear mixed model fit by REML",
        "REML criterion at convergence: 1743.6",
        "(Intercept)  251.405      6.825  36.838",
        "Days          10.467      1.546   6.771",
        "Days -0.138",
        " 654.94   25.592",
        "35.07    5.922  0.07",
        "Number of obs: 180, groups:  Subject, 18",
    ]:
        assert expected in text
    ml = str(fits["sleepstudy_slopes_ml"].summary())
    assert "1763.9 1783.1 -876.0   1751.9      174" in ml


def test_fitted_residuals_and_prediction(fits, sleep):
    fit = fits["sleepstudy_slopes_reml"]
    np.testing.assert_allclose(fit.fitted + fit.residuals, sleep["Reaction"])
    np.testing.assert_allclose(fit.predict(sleep), fit.fitted)
    b = fit.ranef["Subject"].loc["308"]
    row = sleep[sleep.Subject == "308"].iloc[[3]]
    expected = fit.fixef["(Intercept)"] + b["(Intercept)"] + (fit.fixef["Days"] + b["Days"]) * 3
    assert fit.predict(row).iloc[0] == pytest.approx(expected)
    population = fit.predict(row, re=False).iloc[0]
    assert population == pytest.approx(fit.fixef["(Intercept)"] + 3 * fit.fixef["Days"])


def test_prediction_for_new_subject(fits):
    fit = fits["sleepstudy_slopes_reml"]
    new = pd.DataFrame({"Days": [0, 5], "Subject": ["999", "308"]})
    with pytest.raises(lmmlib.errors.LmmInputError, match=r"'Subject'.*'999'"):
        fit.predict(new)
    pred = fit.predict(new, allow_new_levels=True)
    assert pred.iloc[0] == pytest.approx(fit.fixef["(Intercept)"])
    b = fit.ranef["Subject"].loc["308"]
    assert pred.iloc[1] == pytest.approx(
        fit.fixef.sum() + 4 * fit.fixef["Days"] + b["(Intercept)"] + 5 * b["Days"]
    )


def test_objective_and_refit(fits):
    reml = fits["sleepstudy_slopes_reml"]
    theta = np.array(list(REFERENCE["sleepstudy_slopes_reml"]["theta"].values()))
    assert reml.objective(theta) == pytest.approx(
        REFERENCE["sleepstudy_slopes_reml"]["deviance"], rel=1e-12
    )
    assert reml.objective(reml.theta) <= reml.objective(theta)
    ml = reml.refit(reml=False)
    assert not ml.reml
    assert ml.deviance == pytest.approx(REFERENCE["sleepstudy_slopes_ml"]["deviance"], rel=1e-7)


@pytest.mark.parametrize("scale, shift", [(1e-8, 0.0), (1e8, 0.0), (1.0, 1e8), (1e-6, 1e3)])
def test_extreme_scales(sleep, scale, shift):
    """y -> scale * y + shift: estimates transform exactly, the deviance moves by 2 n log(scale)."""
    ref = REFERENCE["sleepstudy_slopes_ml"]
    data = sleep.assign(Reaction=sleep["Reaction"] * scale + shift)
    fit = lmer("Reaction ~ Days + (Days | Subject)", data, reml=False)
    expected_fixef = np.array(list(ref["fixef"].values())) * scale + np.array([shift, 0.0])
    np.testing.assert_allclose(fit.fixef.to_numpy(), expected_fixef, rtol=1e-5)
    assert fit.sigma == pytest.approx(ref["sigma"] * scale, rel=1e-4)
    np.testing.assert_allclose(fit.theta, list(ref["theta"].values()), rtol=1e-4, atol=1e-4)
    assert fit.deviance == pytest.approx(
        ref["deviance"] + 2 * 180 * math.log(scale), rel=1e-7, abs=1e-6
    )
    assert not fit.singular
