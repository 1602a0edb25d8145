"""R formula syntax: every construct either means what it means in R or is a clear error.

Expected values are R's definitions, derived by hand here: ``x^2`` is a power inside a call,
``%/%`` floors, ``%%`` takes the divisor's sign, ``scale()`` divides by the sample SD,
``poly()`` is the orthonormal basis of R's ``poly``, ordered factors get ``contr.poly``.
"""

import warnings

import numpy as np
import pandas as pd
import pytest

import lmmlib
from lmmlib import datasets, lmer, ols
from lmmlib.design import build_design
from lmmlib.errors import FormulaError, LmmInputError, PredictorScaleWarning
from lmmlib.rsyntax import check_scales, r_to_python


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    n = 60
    frame = pd.DataFrame({
        "x": np.tile(np.arange(1, 11), 6).astype(float),
        "k": np.tile(np.arange(-5, 5), 6),  # integers, some negative
        "g": np.repeat(list("abcdef"), 10),
        "dose": np.tile([0, 1, 2], 20),
        "lvl": pd.Categorical(np.tile(["lo", "mid", "hi", "mid"], 15),
                              categories=["lo", "mid", "hi"], ordered=True),
    })
    frame["y"] = (1 + 0.3 * frame["x"] + 0.05 * frame["x"] ** 2 + rng.normal(0, 1, n)
                  + np.repeat(rng.normal(0, 1, 6), 10))
    return frame


def X_of(formula, data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PredictorScaleWarning)
        d = build_design(formula, data)
    return pd.DataFrame(d.X, columns=d.fixef_names)


# ------------------------------------------------------------------ hazards: silent wrong answers
@pytest.mark.parametrize("formula", ["y ~ I(x^2) + (1 | g)", "y ~ I(x ^ 2) + (1 | g)"])
def test_caret_inside_I_is_the_power_never_xor(data, formula):
    X = X_of(formula, data)
    np.testing.assert_array_equal(X["I(x^2)"], data["x"] ** 2)
    assert not np.array_equal(X["I(x^2)"], data["x"].astype(int) ^ 2)  # XOR would differ


def test_caret_in_a_random_term_and_in_nested_calls(data):
    d = build_design("y ~ x + (I((x - 1)^2) | g)", data)
    np.testing.assert_array_equal(d.terms[0].X[:, 1], (data["x"] - 1) ** 2)
    X = X_of("y ~ log(x^3) + (1 | g)", data)
    np.testing.assert_allclose(X["log(x^3)"], 3 * np.log(data["x"]))


def test_caret_in_the_response_is_a_power(data):
    d = build_design("y^2 ~ x + (1 | g)", data)
    np.testing.assert_allclose(d.y, data["y"] ** 2)


def test_caret_outside_calls_keeps_its_formula_meaning(data):
    # (x + dose)^2 = x + dose + x:dose, as in R
    assert list(X_of("y ~ (x + dose)^2 + (1 | g)", data).columns) == [
        "(Intercept)", "x", "dose", "x:dose"]


def test_caret_fitted_by_lmer_and_ols_equals_the_square(data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PredictorScaleWarning)
        r = lmer("y ~ x + I(x^2) + (1 | g)", data)
        p = lmer("y ~ x + I(x**2) + (1 | g)", data)
    np.testing.assert_allclose(r.fixef.to_numpy(), p.fixef.to_numpy(), rtol=1e-10)
    assert r.fixef.index[-1] == "I(x^2)"  # R's name
    o = ols("y ~ x + I(x^2)", data)
    np.testing.assert_allclose(o.coef["I(x^2)"], ols("y ~ x + I(x**2)", data).coef.iloc[-1])
    np.testing.assert_allclose(o.predict(pd.DataFrame({"x": [3.0]}))["fit"].iloc[0],
                               o.coef @ [1, 3, 9])


def test_integer_division_and_remainder_as_R(data):
    # R: -5 %/% 3 == -2, -5 %% 3 == 1, 4 %/% 3 == 1, 4 %% 3 == 1
    X = X_of("y ~ I(k %/% 3) + I(k %% 3) + (1 | g)", data)
    k = data["k"].to_numpy()
    np.testing.assert_array_equal(X.iloc[:, 1], np.floor(k / 3))
    np.testing.assert_array_equal(X.iloc[:, 2], k - 3 * np.floor(k / 3))
    assert X.iloc[0, 1] == -2 and X.iloc[0, 2] == 1


def test_slash_inside_I_is_true_division_for_integer_columns(data):
    X = X_of("y ~ I(k / 2) + (1 | g)", data)
    np.testing.assert_array_equal(X.iloc[:, 1], data["k"] / 2)
    assert X.iloc[0, 1] == -2.5


@pytest.mark.parametrize("formula, message", [
    ("y ~ x %in% g + (1 | g)", "write a:b"),
    ("y ~ ns(x, 3) + (1 | g)", "bs\\(x, df\\)"),
    ("y ~ splines::bs(x, 3) + (1 | g)", "package prefix"),
    ("y ~ I(!x) + (1 | g)", "negation"),
    ("y ~ x %o% k + (1 | g)", "%o%"),
])
def test_r_syntax_without_a_python_meaning_is_refused(data, formula, message):
    with pytest.raises(FormulaError, match=message):
        build_design(formula, data)


def test_r_syntax_is_refused_by_ols_too(data):
    with pytest.raises(FormulaError, match="write a:b"):
        ols("y ~ x %in% g", data)


def test_factor_is_R_factor(data):
    X = X_of("y ~ factor(dose) + (1 | g)", data)
    assert list(X.columns) == ["(Intercept)", "factor(dose)1", "factor(dose)2"]
    np.testing.assert_array_equal(X["factor(dose)2"], (data["dose"] == 2).astype(float))
    assert list(ols("y ~ factor(dose)", data).coef.index) == list(X.columns)


def test_log_of_a_non_positive_value_is_an_error_naming_the_column(data):
    with pytest.raises(LmmInputError, match="'log\\(k\\)'.*non-finite"):
        build_design("y ~ log(k) + (1 | g)", data)
    with pytest.raises(LmmInputError, match="non-finite"):
        ols("y ~ log(k)", data)


def test_log_with_a_base_and_sqrt_as_R(data):
    X = X_of("y ~ log(x, 2) + sqrt(x) + exp(x / 10) + (1 | g)", data)
    np.testing.assert_allclose(X["log(x, 2)"], np.log2(data["x"]))
    np.testing.assert_allclose(X_of("y ~ log10(x) + (1 | g)", data)["log10(x)"],
                               np.log10(data["x"]))
    np.testing.assert_allclose(X["sqrt(x)"], np.sqrt(data["x"]))
    np.testing.assert_allclose(X["exp(x / 10)"], np.exp(data["x"] / 10))


def test_scale_uses_the_sample_sd_and_the_fit_s_centre_for_new_data(data):
    x = data["x"]
    X = X_of("y ~ scale(x) + (1 | g)", data)
    np.testing.assert_allclose(X["scale(x)"], (x - x.mean()) / x.std(ddof=1))
    fit = lmer("y ~ scale(x) + (1 | g)", data)
    new = pd.DataFrame({"x": [0.0, 20.0], "g": ["a", "a"]})
    z = (new["x"] - x.mean()) / x.std(ddof=1)  # R's makepredictcall keeps centre and scale
    expected = fit.fixef.iloc[0] + fit.fixef.iloc[1] * z + fit.ranef["g"].loc["a"].iloc[0]
    np.testing.assert_allclose(fit.predict(new), expected)


@pytest.mark.parametrize("rhs", ["-1 + x", "x - 1", "0 + x", "x + 0"])
def test_removing_the_intercept_as_R(data, rhs):
    assert list(X_of(f"y ~ {rhs} + (1 | g)", data).columns) == ["x"]


def test_true_and_false_are_R_s(data):
    X = X_of("y ~ poly(x, 2, raw = TRUE) + (1 | g)", data)
    np.testing.assert_allclose(X.iloc[:, 1:].to_numpy(),
                               np.column_stack([data["x"], data["x"] ** 2]))


def test_translation_leaves_backticked_names_and_strings_alone():
    assert r_to_python("`a^b` + I(x^2)") == "`a^b` + I(x**2)"
    assert r_to_python("I(flag == 'TRUE') + I(s == \"a^b!\")") == (
        "I(flag == 'TRUE') + I(s == \"a^b!\")")
    assert r_to_python("I(flag == TRUE)") == "I(flag == True)"


# ------------------------------------------------------------------ features
def test_dot_means_all_columns_not_otherwise_in_the_formula():
    sleep = datasets.sleepstudy().assign(extra=lambda d: np.arange(len(d)) % 7)
    d = build_design("Reaction ~ . + (1 | Subject)", sleep)
    assert d.fixef_names == ["(Intercept)", "Days", "extra"]  # not Reaction, not Subject
    d = build_design("Reaction ~ . - extra + (Days | Subject)", sleep)
    assert d.fixef_names == ["(Intercept)", "Days"]  # Days: in a bar term, not the fixed part
    d = build_design("Reaction ~ log(extra + 1) + . + (1 | Subject)", sleep)
    assert d.fixef_names == ["(Intercept)", "log(extra + 1)", "Days"]
    assert list(ols("Reaction ~ . - Subject", sleep).coef.index) == ["(Intercept)", "Days", "extra"]


def test_poly_is_R_s_orthonormal_basis_and_predicts_new_data(data):
    X = X_of("y ~ poly(x, 2) + (1 | g)", data)
    assert list(X.columns) == ["(Intercept)", "poly(x, 2)1", "poly(x, 2)2"]
    P = X.iloc[:, 1:].to_numpy()
    # R's poly: the columns of the QR of [1, x, x^2] after the first, with unit length
    Q, _ = np.linalg.qr(np.column_stack([np.ones(60), data["x"], data["x"] ** 2]))
    Q = Q[:, 1:] * np.sign(Q[-1, 1:]) * np.sign(P[-1])
    np.testing.assert_allclose(P, Q, atol=1e-12)
    # R: poly(1:10, 2)[1, ] = -0.4954337, 0.5222330 (x is 1..10 repeated: scale by sqrt(6))
    np.testing.assert_allclose(P[0] * np.sqrt(6), [-0.4954337, 0.5222330], atol=1e-7)
    fit = lmer("y ~ poly(x, 2) + (1 | g)", data)
    np.testing.assert_allclose(fit.predict(data.iloc[:10]), fit.fitted.iloc[:10], rtol=1e-12)


def test_ordered_factor_gets_R_s_polynomial_contrasts(data):
    X = X_of("y ~ lvl + (1 | g)", data)
    assert list(X.columns) == ["(Intercept)", "lvl.L", "lvl.Q"]
    # contr.poly(3): .L = (-1, 0, 1)/sqrt(2), .Q = (1, -2, 1)/sqrt(6)
    code = data["lvl"].cat.codes.to_numpy()
    np.testing.assert_allclose(X["lvl.L"], np.array([-1, 0, 1])[code] / np.sqrt(2))
    np.testing.assert_allclose(X["lvl.Q"], np.array([1, -2, 1])[code] / np.sqrt(6))
    assert list(ols("y ~ lvl", data).coef.index) == ["(Intercept)", "lvl.L", "lvl.Q"]


def test_C_with_poly_contrasts_works(data):
    sleep = datasets.sleepstudy()
    fit = lmer("Reaction ~ C(Days, poly) + (1 | Subject)", sleep)  # was an IndexError
    assert fit.fixef.index[1] == "C(Days, contr.poly).L"
    # a full set of contrasts reproduces the cell means: the fit equals the factor model
    ref = lmer("Reaction ~ factor(Days) + (1 | Subject)", sleep)
    np.testing.assert_allclose(fit.fitted, ref.fitted, rtol=1e-8)
    X = X_of("y ~ C(dose, sum) + (1 | g)", data)  # R's contr.sum: last level -1
    np.testing.assert_array_equal(X.iloc[:, 1], np.array([1, 0, -1])[data["dose"]])


def test_scale_warning_follows_lme4_s_rule():
    # lme4's checkScaleX: |log sd_j| > log 1000, or |log(sd_i / sd_j)| > log 1000
    X = np.column_stack([np.ones(4), [0.0, 1, 0, 1], [1.0, 2, 3, 4]])  # 0/1 columns ignored
    assert check_scales(X, ["(Intercept)", "b", "x"]) is None
    assert check_scales(np.column_stack([X, X[:, 2] * 2e3]), list("1bxz")) is not None  # sd ratio
    assert check_scales(np.column_stack([X[:, 2] * 0.01, X[:, 2] * 8]), ["u", "v"]) is None
    assert check_scales(np.column_stack([X[:, 2] * 0.01, X[:, 2] * 30]), ["u", "v"]) is not None
    sleep = datasets.sleepstudy()
    with pytest.warns(PredictorScaleWarning, match="very different scales"):
        lmer("Reaction ~ T + (1 | Subject)", sleep.assign(T=sleep["Days"] * 86400))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lmer("Reaction ~ Days + (1 | Subject)", sleep)


def test_R_functions_are_known_to_the_formula_checker():
    assert lmmlib.formula.formula_variables("factor(a) + sqrt(b) + log(c, 2)") == ["a", "b", "c"]


def test_five_level_ordered_factor_is_R_s_contr_poly():
    # contr.poly(5): the orthonormal polynomials of degree 1-4 in the scores 1..5, named
    # .L .Q .C ^4 as R names them; sign convention: each column ends positive
    o = pd.Categorical(np.tile(list("abcde"), 6), categories=list("abcde"), ordered=True)
    frame = pd.DataFrame({"o": o, "y": np.arange(30.0) ** 1.1, "g": np.repeat(list("uvw"), 10)})
    d = build_design("y ~ o + (1 | g)", frame)
    assert d.fixef_names == ["(Intercept)", "o.L", "o.Q", "o.C", "o^4"]
    Q, _ = np.linalg.qr(np.vander(np.arange(1.0, 6.0), 5, increasing=True))
    Q = Q[:, 1:] * np.sign(Q[-1, 1:])
    np.testing.assert_allclose(d.X[:5, 1:], Q, atol=1e-12)
