"""Model matrices from lme4 formulas, checked against matrices built by hand."""

import warnings

import numpy as np
import pandas as pd
import pytest

from lmmlib import datasets
from lmmlib.design import Design, RandomTerm, build_design
from lmmlib.errors import (FormulaError, LmmInputError, MissingValuesWarning,
                           RankDeficiencyWarning)


@pytest.fixture
def small():
    """12 rows: numeric x, string T (3 levels), categorical U with an unused category,
    logical b, integer group g (4 levels), string group h (2 levels)."""
    rng = np.random.default_rng(20240601)
    return pd.DataFrame({
        "y": rng.normal(size=12),
        "x": np.round(rng.normal(size=12), 2),
        "T": ["b", "a", "c"] * 4,
        "U": pd.Categorical(["v", "u"] * 6, categories=["v", "u", "w"]),
        "b": [True, False, False] * 4,
        "g": np.repeat([7, 3, 5, 10], 3),
        "h": ["q", "p"] * 6,
    })


def no_warnings(formula, data, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return build_design(formula, data, **kwargs)


# ---------------------------------------------------------------- sleepstudy


def test_sleepstudy_matrices_equal_hand_built_ones(sleep):
    d = no_warnings("Reaction ~ Days + (Days | Subject)", sleep)
    assert isinstance(d, Design) and d.response == "Reaction"
    np.testing.assert_array_equal(d.y, sleep["Reaction"].to_numpy())
    np.testing.assert_array_equal(d.X, np.column_stack([np.ones(180), sleep["Days"]]))
    assert d.fixef_names == ["(Intercept)", "Days"]
    (term,) = d.terms
    assert isinstance(term, RandomTerm)
    assert (term.group, term.names, term.nlevels, term.p) == (
        "Subject", ("(Intercept)", "Days"), 18, 2)
    assert list(term.levels) == list(sleep["Subject"].cat.categories)
    np.testing.assert_array_equal(term.codes, sleep["Subject"].cat.codes.to_numpy())
    assert term.codes.dtype == np.int64
    np.testing.assert_array_equal(term.X, d.X)
    assert (d.n_dropped, d.dropped_columns) == (0, [])
    assert d.row_index.equals(sleep.index)


def test_term_codes_and_X_give_the_khatri_rao_Z(sleep):
    # Z's columns are level-major: level 0's (Intercept), Days, then level 1's, ...
    term = no_warnings("Reaction ~ Days + (Days | Subject)", sleep).terms[0]
    Z = np.zeros((180, 36))
    for r, (subject, days) in enumerate(zip(sleep["Subject"], sleep["Days"])):
        j = list(term.levels).index(subject)
        Z[r, 2 * j : 2 * j + 2] = [1.0, days]
    Z_term = np.zeros((180, 36))
    for r in range(180):
        Z_term[r, term.codes[r] * 2 : term.codes[r] * 2 + 2] = term.X[r]
    np.testing.assert_array_equal(Z_term, Z)


def test_uncorrelated_terms_of_sleepstudy(sleep):
    d = no_warnings("Reaction ~ Days + (Days || Subject)", sleep)
    assert [(t.group, t.names) for t in d.terms] == [
        ("Subject", ("(Intercept)",)), ("Subject", ("Days",))]
    np.testing.assert_array_equal(d.terms[1].X[:, 0], sleep["Days"].to_numpy())


# ---------------------------------------------------------------- fixed effects


def test_treatment_contrasts_with_first_level_as_reference(small):
    d = no_warnings("y ~ x + T + (1 | g)", small)
    assert d.fixef_names == ["(Intercept)", "x", "Tb", "Tc"]
    T = small["T"].to_numpy()
    expected = np.column_stack([np.ones(12), small["x"], T == "b", T == "c"]).astype(float)
    np.testing.assert_array_equal(d.X, expected)


def test_categorical_keeps_category_order_and_drops_unused_categories(small):
    d = no_warnings("y ~ U + (1 | g)", small)
    assert d.fixef_names == ["(Intercept)", "Uu"]  # 'v' is the first category; 'w' unused
    np.testing.assert_array_equal(d.X[:, 1], (small["U"] == "u").to_numpy(dtype=float))


def test_product_gives_main_effects_then_interactions_as_lme4(small):
    d = no_warnings("y ~ x * T + (1 | g)", small)
    assert d.fixef_names == ["(Intercept)", "x", "Tb", "Tc", "x:Tb", "x:Tc"]
    x, T = small["x"].to_numpy(), small["T"].to_numpy()
    np.testing.assert_array_equal(d.X[:, 4], x * (T == "b"))
    np.testing.assert_array_equal(d.X[:, 5], x * (T == "c"))


def test_interaction_of_two_factors_is_named_with_colons(small):
    d = no_warnings("y ~ T * h + (1 | g)", small)
    assert d.fixef_names == ["(Intercept)", "Tb", "Tc", "hq", "Tb:hq", "Tc:hq"]
    T, h = small["T"].to_numpy(), small["h"].to_numpy()
    np.testing.assert_array_equal(d.X[:, 4], (T == "b") & (h == "q"))


def test_numeric_by_factor_interaction_without_main_effect(small):
    d = no_warnings("y ~ x:T + (1 | g)", small)
    assert d.fixef_names == ["(Intercept)", "x:Ta", "x:Tb", "x:Tc"]


@pytest.mark.parametrize("formula", ["y ~ 0 + x + (1 | g)", "y ~ x - 1 + (1 | g)",
                                     "y ~ -1 + x + (1 | g)"])
def test_intercept_can_be_removed(small, formula):
    d = no_warnings(formula, small)
    assert d.fixef_names == ["x"]
    np.testing.assert_array_equal(d.X[:, 0], small["x"].to_numpy())


def test_factor_without_intercept_gets_one_column_per_level(small):
    d = no_warnings("y ~ 0 + T + (1 | g)", small)
    assert d.fixef_names == ["Ta", "Tb", "Tc"]
    np.testing.assert_array_equal(d.X.sum(axis=1), np.ones(12))


def test_logical_predictor_is_named_as_lme4(small):
    d = no_warnings("y ~ b + (1 | g)", small)
    assert d.fixef_names == ["(Intercept)", "bTRUE"]
    np.testing.assert_array_equal(d.X[:, 1], small["b"].to_numpy(dtype=float))


def test_transforms(small):
    d = no_warnings("y ~ I(x - 4) + np.exp(x) + (1 | g)", small)
    x = small["x"].to_numpy()
    assert d.fixef_names == ["(Intercept)", "I(x - 4)", "np.exp(x)"]
    np.testing.assert_allclose(d.X[:, 1:], np.column_stack([x - 4, np.exp(x)]))
    with pytest.warns(RankDeficiencyWarning, match="'center\\(x\\)'"):  # collinear with x - 4
        build_design("y ~ I(x - 4) + center(x) + (1 | g)", small)


def test_transformed_response(sleep):
    d = no_warnings("np.log(Reaction) ~ Days + (1 | Subject)", sleep)
    np.testing.assert_allclose(d.y, np.log(sleep["Reaction"].to_numpy()))
    assert d.response == "np.log(Reaction)"


def test_integer_coded_factor_via_C(small):
    d = no_warnings("y ~ C(g) + (1 | h)", small)
    assert d.fixef_names == ["(Intercept)", "C(g)5", "C(g)7", "C(g)10"]


def test_no_fixed_effects(small):
    d = no_warnings("y ~ 0 + (1 | g)", small)
    assert d.X.shape == (12, 0) and d.fixef_names == []


# ---------------------------------------------------------------- random-effects terms


def test_random_slope_without_intercept(small):
    (term,) = no_warnings("y ~ x + (0 + x | g)", small).terms
    assert term.names == ("x",)
    np.testing.assert_array_equal(term.X[:, 0], small["x"].to_numpy())


def test_factor_in_a_random_term(small):
    (term,) = no_warnings("y ~ 1 + (0 + h | g)", small).terms
    assert term.names == ("hp", "hq")
    np.testing.assert_array_equal(term.X, np.column_stack([small["h"] == "p", small["h"] == "q"]))


def test_numeric_grouping_factor_has_sorted_levels(small):
    (term,) = no_warnings("y ~ 1 + (1 | g)", small).terms
    assert list(term.levels) == [3, 5, 7, 10]  # numeric order, not string order
    np.testing.assert_array_equal(term.codes, np.repeat([2, 0, 1, 3], 3))


def test_string_grouping_factor_has_sorted_levels(small):
    (term,) = no_warnings("y ~ 1 + (1 | h)", small).terms
    assert list(term.levels) == ["p", "q"]
    np.testing.assert_array_equal(term.codes, [1, 0] * 6)


def test_categorical_grouping_factor_keeps_order_and_drops_unused(small):
    (term,) = no_warnings("y ~ 1 + (1 | U)", small).terms
    assert list(term.levels) == ["v", "u"]
    np.testing.assert_array_equal(term.codes, [0, 1] * 6)


def test_interaction_grouping_factor_has_observed_combinations_in_R_order(small):
    (term,) = no_warnings("y ~ 1 + (1 | h:g)", small).terms
    # R's h:g: levels "p:3", "p:5", ..., "q:10" with h varying slowest, unused dropped
    expected = [f"{h}:{g}" for h in "pq" for g in (3, 5, 7, 10)]
    assert list(term.levels) == expected
    labels = [f"{h}:{g}" for h, g in zip(small["h"], small["g"])]
    assert [term.levels[c] for c in term.codes] == labels


def test_nested_grouping_expands_to_interaction_and_outer_factor(small):
    d = no_warnings("y ~ 1 + (1 | g/h)", small)
    assert [(t.group, t.nlevels) for t in d.terms] == [("h:g", 8), ("g", 4)]
    assert d.terms[0].levels[0] == "p:3"


def test_terms_are_ordered_by_decreasing_number_of_levels_as_lme4(small):
    d = no_warnings("y ~ 1 + (1 | h) + (1 | g)", small)
    assert [t.group for t in d.terms] == ["g", "h"]
    kept = no_warnings("y ~ 1 + (1 | h) + (1 | g)", small, reorder_terms=False)
    assert [t.group for t in kept.terms] == ["h", "g"]
    # already non-increasing: formula order, ties included
    assert [t.group for t in no_warnings("y ~ (1 | g) + (x | g) + (1 | h)", small).terms] == [
        "g", "g", "h"]


def test_reordering_reverses_ties_like_R_rev_order(small):
    # nl = (2, 4, 2): R's rev(order(nl)) = (2, 3, 1), so the tied h terms swap places
    d = no_warnings("y ~ (1 | h) + (1 | g) + (0 + x | h)", small)
    assert [(t.group, t.names) for t in d.terms] == [
        ("g", ("(Intercept)",)), ("h", ("x",)), ("h", ("(Intercept)",))]


# ---------------------------------------------------------------- missing values


def test_rows_with_missing_values_are_dropped_with_a_warning(sleep):
    data = sleep.assign(Days=sleep["Days"].astype(float))
    data.loc[[3, 10], "Reaction"] = np.nan
    data.loc[[10, 20, 30], "Days"] = np.nan
    with pytest.warns(MissingValuesWarning) as record:
        d = build_design("Reaction ~ Days + (Days | Subject)", data)
    message = str(record[0].message)
    assert "dropped 4 of 180 rows" in message
    assert "'Reaction' in 2 rows" in message and "'Days' in 3 rows" in message
    assert d.n_dropped == 4 and d.y.shape == (176,) and d.X.shape == (176, 2)
    assert list(d.row_index) == [i for i in range(180) if i not in (3, 10, 20, 30)]
    np.testing.assert_array_equal(d.y, data["Reaction"].drop([3, 10, 20, 30]).to_numpy())


def test_missing_grouping_values_in_string_and_categorical_columns(small):
    data = small.astype({"h": "str"})
    data.loc[0, "h"] = None
    data.loc[5, "U"] = np.nan
    message = "dropped 2 of 12 rows .*'U' in 1 row.*'h' in 1 row"
    with pytest.warns(MissingValuesWarning, match=message):
        d = build_design("y ~ U + (1 | h)", data)
    assert d.terms[0].codes.shape == (10,) and d.n_dropped == 2


def test_unused_columns_with_missing_values_do_not_drop_rows(small):
    d = no_warnings("y ~ x + (1 | g)", small.assign(other=np.nan))
    assert d.n_dropped == 0 and len(d.y) == 12


# ---------------------------------------------------------------- bad input


def test_data_must_be_a_dataframe(sleep):
    with pytest.raises(LmmInputError, match="data must be a pandas DataFrame, got dict"):
        build_design("Reaction ~ Days + (1 | Subject)", sleep.to_dict())


def test_empty_data(sleep):
    with pytest.raises(LmmInputError, match="data has 0 rows"):
        build_design("Reaction ~ Days + (1 | Subject)", sleep.iloc[:0])


def test_missing_column_is_named_and_available_columns_listed(sleep):
    with pytest.raises(LmmInputError) as info:
        build_design("Reaction ~ Dayz + (1 | Subject)", sleep)
    assert "column 'Dayz'" in str(info.value)
    assert "available columns: Reaction, Days, Subject" in str(info.value)
    with pytest.raises(LmmInputError, match="column 'Subj'"):
        build_design("Reaction ~ Days + (1 | Subj)", sleep)


def test_non_numeric_response(sleep):
    with pytest.raises(LmmInputError, match="response 'Subject' must be numeric.*dtype category"):
        build_design("Subject ~ Days + (1 | Subject)", sleep)


def test_infinite_values_are_an_error_naming_column_and_count(sleep):
    data = sleep.assign(Days=sleep["Days"].astype(float))
    data.loc[[1, 2], "Days"] = [np.inf, -np.inf]
    with pytest.raises(LmmInputError, match="column 'Days' has 2 infinite values"):
        build_design("Reaction ~ Days + (1 | Subject)", data)


def test_transform_giving_non_finite_values_is_an_error(sleep):
    with pytest.raises(LmmInputError, match=r"'np.log\(Days\)' .* has 18 non-finite values"):
        build_design("Reaction ~ np.log(Days) + (1 | Subject)", sleep)


def test_grouping_factor_with_one_level(sleep):
    with pytest.raises(LmmInputError, match="grouping factor 'site' has only one level \\('A'\\)"):
        build_design("Reaction ~ Days + (1 | site)", sleep.assign(site="A"))


def test_as_many_levels_as_observations(sleep):
    data = sleep.assign(obs=np.arange(180))
    with pytest.raises(LmmInputError, match="number of levels of each grouping factor must be < "
                       "number of observations: 'obs' has 180 levels for 180 observations"):
        build_design("Reaction ~ Days + (1 | obs)", data)


def test_more_random_effects_than_observations_in_a_term(sleep):
    data = sleep.iloc[::5]  # 36 rows, 18 subjects: (Days | Subject) has 36 random effects
    with pytest.raises(LmmInputError, match=r"number of observations \(=36\) <= number of random "
                       r"effects \(=36\) for term \(Days \| Subject\)"):
        build_design("Reaction ~ Days + (Days | Subject)", data)


def test_constant_response(sleep):
    with pytest.raises(LmmInputError, match="response 'Reaction' is constant"):
        build_design("Reaction ~ Days + (1 | Subject)", sleep.assign(Reaction=250.0))


def test_single_row(sleep):
    with pytest.raises(LmmInputError, match="at least 2 observations, but 1 row is left"):
        build_design("Reaction ~ Days + (1 | Subject)", sleep.iloc[:1])


def test_all_rows_missing(sleep):
    with pytest.warns(MissingValuesWarning), pytest.raises(LmmInputError, match="0 rows are left"):
        build_design("Reaction ~ Days + (1 | Subject)", sleep.assign(Reaction=np.nan))


def test_malformed_formula_is_a_formula_error(sleep):
    with pytest.raises(FormulaError, match="use lmmlib.ols"):
        build_design("Reaction ~ Days", sleep)


# ---------------------------------------------------------------- rank deficiency


def test_collinear_column_is_dropped_with_a_warning_naming_it(sleep):
    data = sleep.assign(Days2=2.0 * sleep["Days"])
    with pytest.warns(RankDeficiencyWarning, match="rank deficient so dropping 1 column / "
                      "coefficient: 'Days2'"):
        d = build_design("Reaction ~ Days + Days2 + (1 | Subject)", data)
    assert d.fixef_names == ["(Intercept)", "Days"] and d.dropped_columns == ["Days2"]
    np.testing.assert_array_equal(d.X, np.column_stack([np.ones(180), sleep["Days"]]))


def test_the_later_of_two_collinear_columns_is_dropped_whatever_their_norms(sleep):
    # a norm-pivoted QR would keep the longer Days10 and drop Days; lme4 drops the later one
    data = sleep.assign(Days10=10.0 * sleep["Days"])
    with pytest.warns(RankDeficiencyWarning):
        d = build_design("Reaction ~ Days + Days10 + (1 | Subject)", data)
    assert d.dropped_columns == ["Days10"]


def test_subject_level_factor_nested_in_groups_loses_empty_interaction_cell(small):
    # T x h has all 6 cells; restrict to rows where T=='a' implies h=='p' so Ta:hq is empty
    data = small[~((small["T"] == "c") & (small["h"] == "q"))]
    with pytest.warns(RankDeficiencyWarning, match="'Tc:hq'"):
        d = build_design("y ~ T * h + (1 | g)", data)
    assert d.fixef_names == ["(Intercept)", "Tb", "Tc", "hq", "Tb:hq"]
    assert np.linalg.matrix_rank(d.X) == d.X.shape[1]


# ---------------------------------------------------------------- new data


def test_new_fixed_matrix_reproduces_the_fit_and_keeps_contrasts(small):
    d = no_warnings("y ~ x * T + (1 | g)", small)
    np.testing.assert_array_equal(d.new_fixed_matrix(small), d.X)
    new = pd.DataFrame({"x": [2.0], "T": ["c"]})  # one row, one level: same columns
    assert d.new_fixed_matrix(new).tolist() == [[1.0, 2.0, 0.0, 1.0, 0.0, 2.0]]


def test_stateful_transform_uses_the_fitted_centre(small):
    d = no_warnings("y ~ 0 + center(x) + (1 | g)", small)
    centred = d.new_fixed_matrix(pd.DataFrame({"x": [0.0]}))
    assert centred[0, 0] == pytest.approx(-small["x"].mean())


def test_new_level_of_a_fixed_factor_is_an_error(small):
    d = no_warnings("y ~ T + (1 | g)", small)
    message = "column 'T' of newdata has level 'z' .*levels: a, b, c"
    with pytest.raises(LmmInputError, match=message):
        d.new_fixed_matrix(pd.DataFrame({"T": ["a", "z"]}))


def test_newdata_missing_a_column_or_with_missing_values(small):
    d = no_warnings("y ~ x + T + (1 | g)", small)
    with pytest.raises(LmmInputError, match="newdata lacks column 'T'"):
        d.new_fixed_matrix(pd.DataFrame({"x": [1.0]}))
    with pytest.raises(LmmInputError, match="column 'x' of newdata has 1 missing value"):
        d.new_fixed_matrix(pd.DataFrame({"x": [1.0, np.nan], "T": ["a", "b"]}))


def test_new_random_terms_codes_new_levels_as_minus_one(sleep):
    d = no_warnings("Reaction ~ Days + (Days | Subject)", sleep)
    ((codes, X),) = d.new_random_terms(sleep)
    np.testing.assert_array_equal(codes, d.terms[0].codes)
    np.testing.assert_array_equal(X, d.terms[0].X)
    new = pd.DataFrame({"Days": [1, 2, 3], "Subject": ["309", "999", None]})
    ((codes, X),) = d.new_random_terms(new)
    assert codes.tolist() == [1, -1, -1]
    np.testing.assert_array_equal(X, [[1, 1], [1, 2], [1, 3]])


def test_new_random_terms_for_interaction_and_numeric_groups(small):
    d = no_warnings("y ~ 1 + (1 | g/h)", small)
    assert [t.group for t in d.terms] == ["h:g", "g"]
    new = pd.DataFrame({"g": [3, 10.0, 4], "h": ["p", "q", "p"]})
    (inter, _), (outer, _) = d.new_random_terms(new)
    assert inter.tolist() == [0, 7, -1] and outer.tolist() == [0, 3, -1]


def test_hand_made_design_cannot_transform_new_data():
    d = Design("y ~ (1 | g)", "y", np.ones(2), np.ones((2, 1)), ["(Intercept)"], [],
               pd.RangeIndex(2), 0, [])
    with pytest.raises(LmmInputError, match="not made by build_design"):
        d.new_fixed_matrix(pd.DataFrame({"x": [1]}))


def test_categorical_newdata_with_other_categories(small):
    d = no_warnings("y ~ U + (1 | g)", small)
    new = pd.DataFrame({"U": pd.Categorical(["u", "v"], categories=["u", "v", "zz"])})
    np.testing.assert_array_equal(d.new_fixed_matrix(new), [[1.0, 1.0], [1.0, 0.0]])
    with pytest.raises(LmmInputError, match="column 'U' of newdata has level 'zz'"):
        d.new_fixed_matrix(pd.DataFrame({"U": pd.Categorical(["zz"])}))
