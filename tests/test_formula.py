"""Splitting lme4 formulas: bar terms, the || and / expansions, and malformed input."""

import pytest

from lmmlib.errors import FormulaError, LmmInputError
from lmmlib.formula import BarTerm, formula_variables, group_components, split_formula


def test_sleepstudy_formula_splits_into_response_fixed_part_and_one_term():
    assert split_formula("Reaction ~ Days + (Days | Subject)") == (
        "Reaction", "Days", [BarTerm("Days", "Subject", True)])


def test_several_terms_keep_formula_order_and_fixed_terms_between_them():
    response, fixed, bars = split_formula("y ~ x + (1 | a) + z + (0 + x | b) + (1 | a)")
    assert (response, fixed) == ("y", "x + z")
    assert [(b.expr, b.group) for b in bars] == [("1", "a"), ("0 + x", "b"), ("1", "a")]


@pytest.mark.parametrize("formula, fixed", [
    ("y ~ (1 | g)", "1"),
    ("y ~ 0 + (1 | g)", "0"),
    ("y ~ x - 1 + (1 | g)", "x - 1"),
    ("y ~ -1 + x + (1 | g)", "-1 + x"),
    ("y ~ x + -1 + (1 | g)", "x - 1"),
    ("y ~ 0 + x + (1 | g)", "0 + x"),
    ("y ~ I(x - 4) + np.log(z) + (1 | g)", "I(x - 4) + np.log(z)"),
    ("y ~ x*T + (1 | g)", "x*T"),
])
def test_fixed_part_is_the_formula_without_bar_terms(formula, fixed):
    assert split_formula(formula)[1] == fixed


def test_redundant_parentheses_around_a_bar_term_are_removed():
    assert split_formula("y ~ x + ((1 | g))")[2] == [BarTerm("1", "g")]


def test_minus_inside_a_function_is_not_a_term_separator():
    bars = split_formula("y ~ (1 + I(x - 4) | g)")[2]
    assert bars == [BarTerm("1 + I(x - 4)", "g")]


def test_transformed_response_is_kept_as_written():
    assert split_formula("np.log(y) ~ x + (1 | g)")[0] == "np.log(y)"


# ---------------------------------------------------------------- || : uncorrelated terms


def test_double_bar_splits_into_intercept_and_slope_as_lme4():
    # lme4: (Days || Subject) -> (1 | Subject) + (0 + Days | Subject)
    assert split_formula("y ~ Days + (Days || Subject)")[2] == [
        BarTerm("1", "Subject", False), BarTerm("0 + Days", "Subject", False)]


def test_double_bar_without_intercept_gives_one_term_per_column():
    assert split_formula("y ~ (0 + x + z || g)")[2] == [
        BarTerm("0 + x", "g", False), BarTerm("0 + z", "g", False)]


def test_double_bar_expands_products_into_term_labels():
    exprs = [b.expr for b in split_formula("y ~ (x * z || g)")[2]]
    assert exprs == ["1", "0 + x", "0 + z", "0 + x:z"]


def test_double_bar_with_only_an_intercept_is_one_term():
    assert split_formula("y ~ (1 || g)")[2] == [BarTerm("1", "g", False)]


def test_single_bar_terms_are_correlated():
    assert all(b.correlated for b in split_formula("y ~ (x | g) + (1 | h)")[2])


# ---------------------------------------------------------------- / : nested grouping


def test_slash_expands_as_lme4_findbars():
    # lme4's expandSlash: (1 | a/b) -> (1 | b:a) + (1 | a)
    assert [b.group for b in split_formula("y ~ (1 | a/b)")[2]] == ["b:a", "a"]


def test_three_level_nesting():
    assert [b.group for b in split_formula("y ~ (1 | a/b/c)")[2]] == ["c:b:a", "b:a", "a"]


def test_nesting_and_double_bar_combine_term_by_term():
    bars = split_formula("y ~ (x || a/b)")[2]
    assert [(b.expr, b.group) for b in bars] == [
        ("1", "b:a"), ("1", "a"), ("0 + x", "b:a"), ("0 + x", "a")]


def test_interaction_grouping_is_kept_and_spaces_removed():
    assert split_formula("y ~ (1 | a : b)")[2] == [BarTerm("1", "a:b")]
    assert group_components("a:b") == ["a", "b"]
    assert group_components("`my group`") == ["my group"]


def test_formula_variables_lists_data_columns_not_functions():
    assert formula_variables("x*T + np.log(z) + I(w - 4) + center(v) + C(k)") == [
        "x", "T", "z", "w", "v", "k"]
    assert formula_variables("1") == []


# ---------------------------------------------------------------- malformed formulas


@pytest.mark.parametrize("formula, message", [
    ("y ~ x", "has no random-effects term such as (1 | g); for a model without random "
              "effects use lmmlib.ols"),
    ("y x + (1 | g)", "has no '~'"),
    ("y ~ x ~ z + (1 | g)", "more than one '~'"),
    ("~ x + (1 | g)", "no response on the left of '~'"),
    ("y ~ x + (1 | g", "unbalanced parentheses in formula 'y ~ x + (1 | g': the '(' at position 8"),
    ("y ~ x + 1 | g)", "the ')' at position 13 has no matching '('"),
    ("y ~ x + ( | g)", "'( | g)' has nothing on the left of the bar"),
    ("y ~ x + (1 | )", "'(1 | )' has no grouping factor on the right of the bar"),
    ("y ~ x + (1 || )", "has no grouping factor"),
    ("y ~ x + 1 | g", "'1 | g' is not a random-effects term"),
    ("y ~ x * (1 | g)", "'x * (1 | g)' is not a random-effects term"),
    ("y ~ x - (1 | g)", "subtracts the random-effects term '(1 | g)'"),
    ("y ~ (1 | g | h)", "must have exactly one '|' or '||'"),
    ("y ~ (1 | a + b)", "the grouping factor 'a + b' in '(1 | a + b)' must be a column name"),
    ("y ~ (1 | log(g))", "must be a column name"),
    ("y ~ foo(x) + (1 | g)", "unknown function 'foo' in the term 'foo(x)'"),
    ("y ~ (1 + bar(x) | g)", "unknown function 'bar'"),
    ("y ~ x + + z + (1 | g)", "has an empty term before '+'"),
    ("y ~ x + (1 | g) +", "ends without a term after the last operator"),
    ("y ~ (0 || g)", "'(0 || g)' has no columns"),
    ("y | g ~ x + (1 | g)", "contains a '|'"),
])
def test_malformed_formula_raises_formula_error_naming_the_problem(formula, message):
    with pytest.raises(FormulaError) as info:
        split_formula(formula)
    assert message in str(info.value)


def test_formula_error_is_an_input_error_and_a_value_error():
    with pytest.raises(LmmInputError):
        split_formula("y ~ x")
    with pytest.raises(ValueError):
        split_formula("y ~ x")


def test_formula_must_be_a_string():
    with pytest.raises(FormulaError, match="must be a string .* got int"):
        split_formula(3)


def test_fixed_part_that_formulaic_cannot_parse_is_a_formula_error():
    with pytest.raises(FormulaError, match="cannot parse"):
        split_formula("y ~ x +* z + (1 | g)")
