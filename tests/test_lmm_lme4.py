"""lmmlib's LMM engine against lme4's own numbers for the sleepstudy fits.

The reference values (R 4.2.2, lme4 1.1-31) ship with lmmlib (lmmlib/data/reference/lme4_sleepstudy.json).
lme4's optimizer (bobyqa) stops at a tolerance of its own, so estimates are compared to
1e-4 relative and the (flat, quadratic) deviance at the optimum to 1e-7 relative.
"""

import math
import warnings

import numpy as np
import pandas as pd
import pytest

import lmmlib
from lmmlib import anova, datasets, lmer
from lmmlib.errors import PredictorScaleWarning

REFERENCE = datasets.reference("lme4_sleepstudy")["fits"]
FITS = [
    "sleepstudy_slopes_reml",
    "sleepstudy_slopes_ml",
    "sleepstudy_intercept_reml",
    "sleepstudy_intercept_ml",
]


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
    # missing names are one kind of missing value (NaN, R's NA), never a Python None
    assert not got[["grp", "var1", "var2"]].map(lambda v: v is None).to_numpy().any()
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


# ------------------------------------------------------------------ units of the predictor
@pytest.mark.parametrize("reml", [True, False], ids=["REML", "ML"])
@pytest.mark.parametrize(
    "unit", [86400.0, 1440.0, 1 / 7, 1e-4], ids=["seconds", "minutes", "weeks", "1e-4 days"]
)
def test_units_of_the_predictor_do_not_change_the_fit(sleep, unit, reml):
    """Days measured in seconds, minutes, weeks...: lme4's fit, with the Days-parameters in the
    new units (divided by ``unit``).  The ML deviance is unchanged; the REML criterion moves by
    log|R_X|^2, i.e. by 2 log(unit).  No singular-fit or convergence warning: it is the same
    model.  lme4's scale check warns when the SD of T (2.87 days) is beyond 1000 or 1/1000."""
    ref = REFERENCE["sleepstudy_slopes_reml" if reml else "sleepstudy_slopes_ml"]
    data = sleep.assign(T=sleep["Days"] * unit)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = lmer("Reaction ~ T + (T | Subject)", data, reml=reml)
    scale_sd = 2.8803 * unit  # sample SD of Days times the unit
    assert [w.category for w in caught] == (
        [PredictorScaleWarning] if not 1e-3 <= scale_sd <= 1e3 else [])
    per_unit = np.array([1.0, 1.0 / unit])
    fixef_ref, se_ref = (np.array(list(ref[k].values())) for k in ("fixef", "se"))
    np.testing.assert_allclose(fit.fixef.to_numpy(), fixef_ref * per_unit, rtol=1e-5)
    np.testing.assert_allclose(fit.se.to_numpy(), se_ref * per_unit, rtol=1e-4)
    in_days = fit.theta * [1.0, unit, unit]  # theta's Days row back in days
    np.testing.assert_allclose(in_days, list(ref["theta"].values()), rtol=1e-4, atol=1e-4)
    sd = {row["var1"] if row["var2"] is None else "cor": row["sdcor"] for row in ref["varcorr"]}
    assert fit.sdcor["sd_(Intercept)|Subject"] == pytest.approx(sd["(Intercept)"], rel=1e-4)
    assert fit.sdcor["sd_T|Subject"] == pytest.approx(sd["Days"] / unit, rel=1e-4)
    assert fit.sdcor["cor_T.(Intercept)|Subject"] == pytest.approx(sd["cor"], abs=1e-4)
    assert fit.sigma == pytest.approx(ref["sigma"], rel=1e-4)
    shift = 2 * math.log(unit) if reml else 0.0
    assert fit.deviance == pytest.approx(ref["deviance"] + shift, rel=1e-8)
    assert fit.optinfo["converged"] and not fit.singular
    assert fit.optinfo["n_evaluations"] < 100  # was 500-750 for minutes and seconds
    if reml:  # the conditional modes and variances follow the units too
        re_ref = pd.DataFrame(REFERENCE["sleepstudy_ranef"]["ranef"])
        days = re_ref[re_ref.term == "Days"]
        np.testing.assert_allclose(fit.ranef["Subject"]["T"], days["condval"] / unit, rtol=1e-3)
        np.testing.assert_allclose(np.sqrt(fit.condvar["Subject"][:, 1, 1]),
                                   days["condsd"] / unit, rtol=1e-4)


@pytest.mark.parametrize("y_scale, unit", [(1e-8, 86400.0), (1e8, 1e-4)])
def test_extreme_response_and_predictor_units_together(sleep, y_scale, unit):
    ref = REFERENCE["sleepstudy_slopes_ml"]
    data = sleep.assign(Reaction=sleep["Reaction"] * y_scale, T=sleep["Days"] * unit)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", PredictorScaleWarning)  # lme4 warns too: T's SD
        fit = lmer("Reaction ~ T + (T | Subject)", data, reml=False)
    expected = np.array(list(ref["fixef"].values())) * y_scale * [1.0, 1.0 / unit]
    np.testing.assert_allclose(fit.fixef.to_numpy(), expected, rtol=1e-5)
    assert fit.sigma == pytest.approx(ref["sigma"] * y_scale, rel=1e-4)
    assert fit.sdcor["sd_T|Subject"] == pytest.approx(5.716798513928 * y_scale / unit, rel=1e-4)
    assert fit.deviance == pytest.approx(ref["deviance"] + 2 * 180 * math.log(y_scale), rel=1e-8)


@pytest.mark.filterwarnings("ignore::lmmlib.errors.PredictorScaleWarning")  # as lme4
def test_singularity_is_judged_on_ordinary_units(sleep):
    """lme4's rule (theta < 1e-4) applies as is to predictors on ordinary scales; for a column
    whose root mean square exceeds 1e3 theta is judged as if the column were rescaled to 1e3,
    so a small but clearly nonzero slope SD in tiny units is not called singular, while a slope
    SD that is really 0 still is."""
    fit = lmer("Reaction ~ T + (T | Subject)", sleep.assign(T=sleep["Days"] * 86400.0))
    assert fit.theta[2] < 1e-5 and not fit.singular  # lme4 itself would say singular here
    # every subject with exactly the same slope: its SD is estimated as 0 whatever the units
    rng = np.random.default_rng(3)
    codes, days = sleep["Subject"].cat.codes.to_numpy(), sleep["Days"].to_numpy(dtype=float)
    noise = rng.normal(0, 25, len(sleep))
    for j in range(18):  # remove each subject's own intercept and slope from the noise
        rows = codes == j
        A = np.column_stack([np.ones(rows.sum()), days[rows]])
        noise[rows] -= A @ np.linalg.lstsq(A, noise[rows], rcond=None)[0]
    same_slope = sleep.assign(T=days * 86400.0,
                              Reaction=250 + 10 * days + rng.normal(0, 30, 18)[codes] + noise)
    with pytest.warns(lmmlib.errors.SingularFitWarning, match="for Subject.1 is singular"):
        boundary = lmer("Reaction ~ T + (1 | Subject) + (0 + T | Subject)", same_slope)
    assert boundary.singular and boundary.singular_groups == ["Subject.1"]
    assert boundary.sdcor["sd_T|Subject"] < 1e-6 * boundary.sigma / 86400


def test_singular_warning_tells_a_python_user_what_happened():
    rng = np.random.default_rng(1)
    data = pd.DataFrame({"y": rng.normal(size=60), "x": rng.normal(size=60),
                         "batch": np.repeat(list("abcdef"), 10)})
    data["y"] -= data.groupby("batch")["y"].transform("mean")  # no between-batch variation
    with pytest.warns(lmmlib.errors.SingularFitWarning) as caught:
        fit = lmer("y ~ x + (1 | batch)", data)
    message = str(caught[0].message)
    assert message.startswith("boundary (singular) fit")
    assert "random effects for batch is singular" in message
    assert "LinearMixedModel.singular" in message and "help(" not in message
    assert message in str(fit.summary())
    assert "help(" not in (lmmlib.lmm.LinearMixedModel.singular.__doc__ or "x")


# ------------------------------------------------------------------ public pieces of the fit
@pytest.mark.filterwarnings("ignore::lmmlib.errors.PredictorScaleWarning")  # as lme4
def test_factor_gives_beta_and_RX_in_the_units_of_the_data(sleep):
    """The hooks the profile uses: beta(theta) and R_X from pls.factorize, in the data's units,
    also when the columns are scaled internally (Days in seconds)."""
    for unit in (1.0, 86400.0):
        fit = lmer("Reaction ~ T + (T | Subject)", sleep.assign(T=sleep["Days"] * unit))
        f = fit.pls.factorize(fit.theta)
        np.testing.assert_allclose(f.beta, fit.fixef.to_numpy(), rtol=1e-12)
        RX_inv = np.linalg.inv(f.RX)
        np.testing.assert_allclose(fit.sigma**2 * RX_inv @ RX_inv.T, fit.vcov.to_numpy(),
                                   rtol=1e-10)
        # R_X'R_X = X'V^{-1}X with V = Z Lambda Lambda'Z' + I (dense check)
        X = fit.design.X
        Z = np.zeros((180, 36))
        codes = fit.terms[0].codes
        Z[np.arange(180), 2 * codes] = 1.0
        Z[np.arange(180), 2 * codes + 1] = fit.terms[0].X[:, 1]
        Lam = np.kron(np.eye(18), fit.layout.templates(fit.theta)[0])
        V = Z @ Lam @ Lam.T @ Z.T + np.eye(180)
        np.testing.assert_allclose(f.RX.T @ f.RX, X.T @ np.linalg.solve(V, X), rtol=1e-9)


def test_percent_labels_are_public_and_as_r():
    from lmmlib.summary import percent_label

    assert [percent_label(a) for a in (0.025, 0.975, 0.005, 0.5)] == [
        "2.5 %", "97.5 %", "0.5 %", "50 %"]


# ------------------------------------------------------------------ bad input
def test_anova_names_the_observation_counts(sleep, fits):
    small = lmer("Reaction ~ Days + (1 | Subject)", sleep.iloc[:100], reml=False)
    with pytest.raises(lmmlib.errors.LmmInputError, match=r"m0: 100, m1: 180"):
        anova(small, fits["sleepstudy_slopes_ml"], names=["m0", "m1"])


def test_anova_rejects_a_different_response_of_the_same_size(sleep, fits):
    logged = lmer("np.log(Reaction) ~ Days + (Days | Subject)", sleep, reml=False)
    with pytest.raises(lmmlib.errors.LmmInputError, match="different values of the response"):
        anova(fits["sleepstudy_intercept_ml"], logged)
    shuffled = lmer("Reaction ~ Days + (Days | Subject)", sleep.sample(frac=1.0, random_state=1),
                    reml=False)
    table = anova(fits["sleepstudy_intercept_ml"], shuffled)  # same rows, other order: fine
    assert table["Chisq"].iloc[1] == pytest.approx(REFERENCE["sleepstudy_lrt"]["chisq"], rel=1e-4)


def test_prediction_errors_name_the_problem(fits):
    fit = fits["sleepstudy_slopes_reml"]
    with pytest.raises(lmmlib.errors.LmmInputError, match="lacks column 'Days'"):
        fit.predict(pd.DataFrame({"Subject": ["308"]}))
    # a missing predictor gives NaN for that row, as lme4 gives NA
    pred = fit.predict(pd.DataFrame({"Days": [1.0, np.nan], "Subject": ["308", "308"]}))
    assert np.isnan(pred.iloc[1]) and pred.iloc[0] == pytest.approx(fit.fitted.iloc[1])
    with pytest.raises(lmmlib.errors.LmmInputError, match="missing value of grouping factor"):
        fit.predict(pd.DataFrame({"Days": [1, 2], "Subject": ["308", None]}))
    with pytest.raises(lmmlib.errors.LmmInputError, match="'Days' of newdata has dtype"):
        fit.predict(pd.DataFrame({"Days": ["one"], "Subject": ["308"]}))
    # a missing grouping value with allow_new_levels: the population prediction, as lme4
    pred = fit.predict(pd.DataFrame({"Days": [2], "Subject": [None]}), allow_new_levels=True)
    assert pred.iloc[0] == pytest.approx(fit.fixef["(Intercept)"] + 2 * fit.fixef["Days"])
