"""lmmlib.ols against statsmodels, against simulation truth, and on bad input.

statsmodels builds its own model matrix (patsy) and solves by pseudo-inverse, so agreement to
1e-10 checks both lmmlib's formula handling and its QR algebra.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf
from numpy.testing import assert_allclose
from scipy import stats

import lmmlib
from lmmlib.errors import FormulaError, LmmInputError

RTOL = 1e-10


def close(actual, desired, rtol=RTOL):
    """Agreement to ``rtol`` relative to the largest value compared (so ~0 entries pass)."""
    actual, desired = np.asarray(actual, dtype=float), np.asarray(desired, dtype=float)
    assert_allclose(actual, desired, rtol=rtol, atol=rtol * np.max(np.abs(desired)))


def r_style(patsy_name: str) -> str:
    """patsy's coefficient name -> R's (as lmmlib names them), factors of a product sorted."""
    name = "(Intercept)" if patsy_name == "Intercept" else patsy_name
    name = re.sub(r"\[(?:T\.)?([^\]]*)\]", r"\1", name)
    return ":".join(sorted(name.split(":")))


def sm_by_r_name(series: pd.Series, names) -> np.ndarray:
    renamed = series.rename(index=r_style)
    return renamed.reindex([":".join(sorted(n.split(":"))) for n in names]).to_numpy()


@pytest.fixture(scope="module")
def simulated() -> pd.DataFrame:
    """Four correlated numeric predictors, a three-level factor and known coefficients."""
    rng = np.random.default_rng(20260214)
    n = 150
    Z = rng.multivariate_normal(np.zeros(4), 0.5 * np.eye(4) + 0.5, size=n)
    group = rng.choice(["ctrl", "drugA", "drugB"], size=n)
    effect = pd.Series({"ctrl": 0.0, "drugA": 1.5, "drugB": -0.7})[group].to_numpy()
    y = 2.0 + Z @ np.array([1.0, -0.5, 0.25, 0.0]) + effect + rng.normal(0, 1.3, n)
    return pd.DataFrame(
        {"y": y, "x1": Z[:, 0], "x2": Z[:, 1], "x3": Z[:, 2], "x4": Z[:, 3],
         "group": pd.Categorical(group)},
        index=pd.RangeIndex(100, 100 + n),  # a non-default index must be carried through
    )


CASES = [
    ("sleep", "Reaction ~ Days"),
    ("sleep", "Reaction ~ 0 + Days"),
    ("sleep", "Reaction ~ Days + Subject"),
    ("sleep", "Reaction ~ Days * Subject"),
    ("simulated", "y ~ x1 + x2 + x3 + x4"),
    ("simulated", "y ~ x1 + x2 + group"),
    ("simulated", "y ~ x1 * group + x3"),
    ("simulated", "y ~ 0 + x1 + x2 + x3"),
    ("simulated", "y ~ 0 + group + x1"),
]


@pytest.fixture(params=CASES, ids=[f"{d}:{f}" for d, f in CASES])
def pair(request, sleep, simulated):
    name, formula = request.param
    data = {"sleep": sleep, "simulated": simulated}[name]
    return lmmlib.ols(formula, data), smf.ols(formula, data).fit(), data


def test_coefficients_and_inference_equal_statsmodels(pair):
    fit, ref, _ = pair
    names = list(fit.coef.index)
    assert sorted(":".join(sorted(n.split(":"))) for n in names) == sorted(
        r_style(n) for n in ref.params.index
    )
    close(fit.coef, sm_by_r_name(ref.params, names))
    close(fit.se, sm_by_r_name(ref.bse, names))
    close(fit.tvalues, sm_by_r_name(ref.tvalues, names))
    close(fit.pvalues, sm_by_r_name(ref.pvalues, names), rtol=1e-8)
    close(fit.sigma, np.sqrt(ref.scale))
    assert fit.df_resid == ref.df_resid
    assert fit.nobs == ref.nobs
    close(fit.rss, ref.ssr)
    close(fit.fitted, ref.fittedvalues)
    close(fit.residuals, ref.resid)
    assert fit.fitted.index.equals(ref.fittedvalues.index)
    vcov_ref = ref.cov_params().rename(index=r_style, columns=r_style)
    sorted_names = [":".join(sorted(n.split(":"))) for n in names]
    close(fit.vcov, vcov_ref.loc[sorted_names, sorted_names])


@pytest.mark.parametrize("level", [0.95, 0.8])
def test_conf_int_equals_statsmodels(pair, level):
    fit, ref, _ = pair
    ci = fit.conf_int(level)
    ci_ref = ref.conf_int(alpha=1 - level)
    names = list(fit.coef.index)
    close(ci["lower"], sm_by_r_name(ci_ref[0], names))
    close(ci["upper"], sm_by_r_name(ci_ref[1], names))


@pytest.mark.parametrize("level", [0.95, 0.9])
def test_bands_equal_statsmodels_get_prediction(pair, level):
    fit, ref, data = pair
    rng = np.random.default_rng(7)
    new = data.iloc[rng.choice(len(data), size=12, replace=False)].copy()
    numeric = [c for c in new.columns if pd.api.types.is_float_dtype(new[c]) and c not in
               ("y", "Reaction")]
    new[numeric] = new[numeric] + rng.normal(0, 0.5, size=(len(new), len(numeric)))
    frame = ref.get_prediction(new).summary_frame(alpha=1 - level)
    conf = fit.predict(new, interval="confidence", level=level)
    pred = fit.predict(new, interval="prediction", level=level)
    close(conf["fit"], frame["mean"])
    close(conf["se"], frame["mean_se"])
    close(conf["lower"], frame["mean_ci_lower"])
    close(conf["upper"], frame["mean_ci_upper"])
    close(pred["fit"], frame["mean"])
    close(pred["lower"], frame["obs_ci_lower"])
    close(pred["upper"], frame["obs_ci_upper"])
    assert conf.index.equals(new.index)
    # the prediction variance is the mean's variance plus sigma^2
    close(pred["se"] ** 2, conf["se"] ** 2 + fit.sigma**2)


def test_normal_quantile_band_uses_1_96(sleep):
    fit = lmmlib.ols("Reaction ~ Days", sleep)
    new = pd.DataFrame({"Days": [0.0, 4.5, 9.0]})
    frame = smf.ols("Reaction ~ Days", sleep).fit().get_prediction(new).summary_frame()
    z = stats.norm.ppf(0.975)
    assert fit.quantile(0.95, "normal") == pytest.approx(1.959963984540054, rel=1e-12)
    for interval, se in [("confidence", frame["mean_se"]),
                         ("prediction", np.sqrt(frame["mean_se"] ** 2 + fit.sigma**2))]:
        band = fit.predict(new, interval=interval, quantile="normal")
        close(band["lower"], frame["mean"] - z * se)
        close(band["upper"], frame["mean"] + z * se)
    ci = fit.conf_int(quantile="normal")
    close(ci["upper"] - ci["lower"], 2 * z * fit.se)


def test_in_sample_confidence_se_is_sigma_sqrt_leverage(simulated):
    fit = lmmlib.ols("y ~ x1 * group + x3", simulated)
    ref = smf.ols("y ~ x1 * group + x3", simulated).fit()
    band = fit.predict(interval="confidence")
    close(band["se"], fit.sigma * np.sqrt(ref.get_influence().hat_matrix_diag))
    assert band.index.equals(simulated.index)


def test_array_interface_matches_formula_interface(simulated):
    formula_fit = lmmlib.ols("y ~ x1 + x2 + group", simulated)
    X = formula_fit.X
    array_fit = lmmlib.OLS(simulated["y"].to_numpy(), X.to_numpy(), names=list(X.columns))
    frame_fit = lmmlib.OLS(simulated["y"], X)
    ref = sm.OLS(simulated["y"].to_numpy(), X.to_numpy()).fit()
    for fit in (array_fit, frame_fit):
        close(fit.coef, ref.params)
        close(fit.se, ref.bse)
    assert list(array_fit.coef.index) == ["(Intercept)", "x1", "x2", "groupdrugA", "groupdrugB"]
    X0 = X.iloc[:5]
    close(array_fit.predict(X0.to_numpy(), interval="prediction")["upper"],
          formula_fit.predict(simulated.iloc[:5], interval="prediction")["upper"])
    close(frame_fit.predict(X0)["fit"], ref.predict(X0.to_numpy()))
    assert lmmlib.OLS(np.arange(4.0) ** 2, np.arange(4.0)).coef.index.tolist() == ["x0"]


def test_r_style_names_and_summary(sleep):
    fit = lmmlib.ols("Reaction ~ Days * Subject", sleep)
    assert list(fit.coef.index[:3]) == ["(Intercept)", "Days", "Subject309"]
    assert "Days:Subject372" in fit.coef.index
    no_intercept = lmmlib.ols("Reaction ~ 0 + Subject", sleep)  # full dummy coding
    assert list(no_intercept.coef.index[:2]) == ["Subject308", "Subject309"]
    assert fit.y.name == "Reaction"
    table = fit.summary()
    assert list(table.columns) == ["Estimate", "Std. Error", "t value", "Pr(>|t|)"]
    close(table["t value"], fit.coef / fit.se)
    assert "Residual standard deviation" in repr(fit)


def test_estimates_recover_simulation_truth():
    """Over many simulated data sets the estimates are unbiased, the t interval covers the truth
    95 % of the time and the normal-quantile (1.96) interval covers P(|T_8| < 1.96) of the time.
    """
    rng = np.random.default_rng(11)
    reps, days = 1000, np.arange(10.0)
    X = np.column_stack([np.ones(10), days])
    beta, sigma = np.array([250.0, 10.0]), 30.0
    estimates, slope_se = np.empty((reps, 2)), np.empty(reps)
    for r in range(reps):
        fit = lmmlib.OLS(X @ beta + rng.normal(0, sigma, 10), X, names=["(Intercept)", "Days"])
        estimates[r], slope_se[r] = fit.coef.to_numpy(), fit.se["Days"]
    q_t, q_z = fit.quantile(0.95, "t"), fit.quantile(0.95, "normal")
    covered_t = np.sum(np.abs(estimates[:, 1] - beta[1]) <= q_t * slope_se)
    covered_z = np.sum(np.abs(estimates[:, 1] - beta[1]) <= q_z * slope_se)
    se_mean = estimates.std(axis=0) / np.sqrt(reps)
    assert np.all(np.abs(estimates.mean(axis=0) - beta) < 4 * se_mean)
    exact_z = 1 - 2 * stats.t.sf(stats.norm.ppf(0.975), df=8)  # 0.914
    mc_se = np.sqrt(0.95 * 0.05 / reps)
    assert abs(covered_t / reps - 0.95) < 4 * mc_se
    assert abs(covered_z / reps - exact_z) < 4 * mc_se


# -- bad input gets a clear error -----------------------------------------------------------------
def test_missing_column_is_named(sleep):
    with pytest.raises(FormulaError, match=r"\['Dayz'\].*not found.*available columns"):
        lmmlib.ols("Reaction ~ Dayz", sleep)


def test_non_numeric_response_is_named(sleep):
    with pytest.raises(LmmInputError, match="response column 'Reaction' is not numeric"):
        lmmlib.ols("Reaction ~ Days", sleep.assign(Reaction=sleep["Reaction"].astype(str)))


def test_numbers_stored_as_text_are_refused_unless_wrapped_in_C(sleep):
    as_text = sleep.assign(Days=sleep["Days"].astype(str), Subject=sleep["Subject"].astype(str))
    expected = r"column 'Days' holds numbers stored as text.*C\(Days\)"
    with pytest.raises(LmmInputError, match=expected):
        lmmlib.ols("Reaction ~ Days", as_text)
    fit = lmmlib.ols("Reaction ~ Days + C(Subject)", as_text.assign(Days=sleep["Days"]))
    close(fit.coef.to_numpy(), lmmlib.ols("Reaction ~ Days + Subject", sleep).coef.to_numpy())


def test_text_and_categorical_columns_are_treated_alike(simulated):
    as_text = simulated.assign(group=simulated["group"].astype(str))
    close(lmmlib.ols("y ~ x1 + group", as_text).coef,
          lmmlib.ols("y ~ x1 + group", simulated).coef)


def test_missing_values_raise_or_are_dropped_with_a_warning(sleep):
    holed = sleep.assign(Days=sleep["Days"].astype(float))
    holed.loc[[3, 5, 7], "Reaction"] = np.nan
    holed.loc[[5, 9], "Days"] = np.nan
    with pytest.raises(LmmInputError, match=r"4 of 180 rows.*'Days': 2, 'Reaction': 3"):
        lmmlib.ols("Reaction ~ Days", holed, missing="raise")
    with pytest.warns(UserWarning, match=r"dropped 4 of 180 rows"):
        fit = lmmlib.ols("Reaction ~ Days", holed)
    complete = smf.ols("Reaction ~ Days", holed.dropna()).fit()
    assert fit.nobs == 176
    close(fit.coef, complete.params)
    assert fit.residuals.index.equals(holed.dropna().index)
    # a missing value in a column the formula does not use is not a reason to drop a row
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        unused_holes = holed.assign(Reaction=sleep["Reaction"])
        assert lmmlib.ols("Reaction ~ Subject", unused_holes).nobs == 180


def test_infinite_values_are_an_error_naming_the_column(sleep):
    data = sleep.assign(Days=sleep["Days"].astype(float))
    data.loc[[2, 4], "Days"] = np.inf
    with pytest.raises(LmmInputError, match=r"non-finite.*'Days': 2 row"):
        lmmlib.ols("Reaction ~ Days", data)
    with pytest.raises(LmmInputError, match=r"model matrix: 'np.log\(Days\)': 18 row"):
        lmmlib.ols("Reaction ~ np.log(Days)", sleep)


@pytest.mark.parametrize("rows", [1, 2])
def test_too_few_rows(sleep, rows):
    with pytest.raises(LmmInputError, match=rf"{rows} row\(s\) for 2 coefficient\(s\).*at least 3"):
        lmmlib.ols("Reaction ~ Days", sleep.iloc[:rows])


def test_fewer_rows_than_coefficients(sleep):
    one_per_subject = sleep[sleep["Days"] == sleep["Subject"].cat.codes % 10]
    assert len(one_per_subject) == 18
    with pytest.raises(LmmInputError, match=r"18 row\(s\) for 19 coefficient\(s\)"):
        lmmlib.ols("Reaction ~ Days + Subject", one_per_subject)


@pytest.mark.parametrize(
    "extra, expected",
    [
        ({"D2": lambda d: 2 * d["Days"]}, r"aliased column\(s\) \['D2'\] \('D2' = 2\*Days\)"),
        ({"D2": lambda d: d["Days"] + 1},
         r"aliased column\(s\) \['D2'\] \('D2' = 1\*\(Intercept\) \+ 1\*Days\)"),
        ({"D2": lambda d: 0.0 * d["Days"]}, r"aliased column\(s\) \['D2'\] \('D2' is all zeros\)"),
    ],
)
def test_collinear_predictors_are_named(sleep, extra, expected):
    with pytest.raises(LmmInputError, match=r"collinear: the model matrix has 2 independent "
                                            r"columns out of 3; " + expected):
        lmmlib.ols("Reaction ~ Days + D2", sleep.assign(**extra))


def test_collinearity_with_a_factor_is_named(sleep):
    by_subject = sleep.groupby("Subject", observed=True)["Reaction"].transform("mean")
    data = sleep.assign(subject_mean=by_subject)
    with pytest.raises(LmmInputError, match=r"aliased column\(s\) \['subject_mean'\]"):
        lmmlib.ols("Reaction ~ Subject + subject_mean", data)


def test_single_level_factor(sleep):
    data = sleep.assign(site=pd.Categorical(["Walter Reed"] * 180))
    with pytest.raises(LmmInputError, match=r"'site' has a single value \('Walter Reed'\)"):
        lmmlib.ols("Reaction ~ Days + site", data)


def test_unused_levels_are_ignored(sleep):
    two = sleep[sleep["Subject"].isin(["308", "309"])]
    fit = lmmlib.ols("Reaction ~ Days + Subject", two)
    assert list(fit.coef.index) == ["(Intercept)", "Days", "Subject309"]
    two_levels = two.assign(Subject=pd.Categorical(two["Subject"].astype(str)))
    ref = smf.ols("Reaction ~ Days + Subject", two_levels).fit()
    close(fit.coef, sm_by_r_name(ref.params, fit.coef.index))


@pytest.mark.parametrize("formula, expected", [
    ("~ Days", "needs a response"),
    ("Reaction ~ Days +", "cannot parse the formula"),
    (42, "needs a response"),
])
def test_malformed_formulas(sleep, formula, expected):
    with pytest.raises(FormulaError, match=expected):
        lmmlib.ols(formula, sleep)


def test_bad_arguments(sleep):
    fit = lmmlib.ols("Reaction ~ Days", sleep)
    with pytest.raises(LmmInputError, match="data must be a pandas DataFrame, got dict"):
        lmmlib.ols("Reaction ~ Days", sleep.to_dict())
    with pytest.raises(LmmInputError, match="missing must be 'drop' or 'raise'"):
        lmmlib.ols("Reaction ~ Days", sleep, missing="omit")
    with pytest.raises(LmmInputError, match="interval must be None, 'confidence' or 'prediction'"):
        fit.predict(sleep, interval="conf")
    with pytest.raises(LmmInputError, match="level must be between 0 and 1"):
        fit.conf_int(95)
    with pytest.raises(LmmInputError, match="quantile must be 't' or 'normal'"):
        fit.predict(sleep, interval="prediction", quantile="z")


def test_bad_newdata(sleep):
    fit = lmmlib.ols("Reaction ~ Days + Subject", sleep[sleep["Subject"].isin(["308", "309"])])
    with pytest.raises(LmmInputError, match=r"level\(s\) \['310'\] not seen in the fit"):
        fit.predict(sleep.iloc[[0, 10, 20]])
    with pytest.raises(LmmInputError, match=r"newdata lacks the column\(s\) \['Subject'\]"):
        fit.predict(pd.DataFrame({"Days": [1.0]}))
    with pytest.raises(LmmInputError, match=r"missing values \('Days': 1 row"):
        fit.predict(pd.DataFrame({"Days": [1.0, np.nan], "Subject": ["308", "309"]}))
    with pytest.raises(LmmInputError, match="newdata must be a pandas DataFrame"):
        fit.predict(np.ones((2, 3)))
    array_fit = lmmlib.OLS(fit.y, fit.X)
    with pytest.raises(LmmInputError, match=r"newdata has 2 columns but the model has 3"):
        array_fit.predict(np.ones((4, 2)))


def test_bad_arrays():
    x = np.arange(6.0)
    with pytest.raises(LmmInputError, match="X must be numeric"):
        lmmlib.OLS(x, np.array([["a", "b"]] * 6))
    with pytest.raises(LmmInputError, match=r"column 'dose' of X is not numeric"):
        lmmlib.OLS(x, pd.DataFrame({"one": 1.0, "dose": list("abcdef")}))
    with pytest.raises(LmmInputError, match="y has 5 rows but X has 6"):
        lmmlib.OLS(x[:5], np.column_stack([np.ones(6), x]))
    with pytest.raises(LmmInputError, match=r"non-finite .* in the response: 'y': 1 row"):
        lmmlib.OLS(np.r_[x[:5], np.nan], np.column_stack([np.ones(6), x]))
    with pytest.raises(LmmInputError, match=r"non-finite .* in X: 'x1': 1 row"):
        lmmlib.OLS(x, np.column_stack([np.ones(6), np.r_[x[:5], np.inf]]))


def test_perfect_fit_warns():
    x = np.arange(5.0)
    with pytest.warns(RuntimeWarning, match="essentially perfect fit"):
        fit = lmmlib.OLS(1 + 2 * x, np.column_stack([np.ones(5), x]))
    close(fit.coef, [1.0, 2.0])
