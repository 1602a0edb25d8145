"""Splitting an lme4 model formula into its fixed part and its random-effects terms.

A linear mixed model is written as in lme4 (Bates et al. 2015, section 2.1)::

    response ~ fixed part + (expr | g) + (expr || g) + ...

Each parenthesised *bar term* ``(expr | g)`` says: the columns of the model matrix of
``expr`` get coefficients that vary between the levels of the grouping factor ``g``, with a
full (correlated) covariance matrix. This module does only the part that no general formula
library does, the bar terms, by hand:

* ``(expr || g)`` is expanded as lme4 does into uncorrelated terms, one per term label of
  ``expr``: ``(x || g)`` -> ``(1 | g) + (0 + x | g)``;
* nested grouping ``a/b`` is expanded as lme4's ``findbars``: ``(1 | a/b)`` ->
  ``(1 | b:a) + (1 | a)``, and ``a/b/c`` -> ``c:b:a``, ``b:a``, ``a``;
* ``a:b`` as a grouping factor means "the observed combinations of a and b".

The fixed part and each ``expr`` are ordinary one-sided formulas; they are parsed by
formulaic, the formula library of :mod:`lmmlib.design`.

>>> response, fixed, bars = split_formula("Reaction ~ Days + (Days || Subject)")
>>> response, fixed
('Reaction', 'Days')
>>> [str(b) for b in bars]
['(1 | Subject)', '(0 + Days | Subject)']
"""

from __future__ import annotations

import ast
import builtins
import re
from dataclasses import dataclass
from functools import lru_cache

from formulaic import Formula
from formulaic.errors import FormulaicError
from formulaic.transforms import TRANSFORMS

from lmmlib.errors import FormulaError

__all__ = ["BarTerm", "split_formula", "formula_variables", "group_components", "parse_rhs"]

_NAME = re.compile(r"^(`[^`]+`|[A-Za-z_.][A-Za-z0-9_.]*)$")


@dataclass(frozen=True)
class BarTerm:
    """One random-effects term ``(expr | group)`` after expansion of ``||`` and ``/``.

    ``expr`` is the left of the bar (``"Days"``, ``"1"``, ``"0 + Days"``); ``group`` is the
    grouping factor as lme4 names it (``"Subject"``, ``"b:a"``); ``correlated`` is False for
    the terms that came from a ``||`` term.
    """

    expr: str
    group: str
    correlated: bool = True

    def __str__(self) -> str:
        return f"({self.expr} | {self.group})"


def split_formula(formula: str) -> tuple[str, str, list[BarTerm]]:
    """Return ``(response, fixed_rhs, bar_terms)`` of an lme4 formula.

    ``||`` terms are expanded into one uncorrelated term per term label (lme4's
    ``expandDoubleVerts``) and ``a/b`` grouping into ``b:a`` and ``a`` (lme4's
    ``expandSlash``). A formula without fixed terms gets the fixed part ``"1"``.

    Raises
    ------
    FormulaError
        If the formula is not a string, has no ``~``, has unbalanced parentheses, a bar term
        with an empty side or outside parentheses, an unknown function, or no random term.

    >>> response, fixed, bars = split_formula("y ~ 0 + x + (1 | a/b)")
    >>> fixed, [str(b) for b in bars]
    ('0 + x', ['(1 | b:a)', '(1 | a)'])
    """
    if not isinstance(formula, str):
        raise FormulaError(
            f"the formula must be a string such as 'y ~ x + (1 | g)', got {type(formula).__name__}"
        )
    _check_parentheses(formula)
    tildes = [i for i, depth in _depth_scan(formula) if formula[i] == "~" and depth == 0]
    if not tildes:
        raise FormulaError(
            f"formula {formula!r} has no '~' separating the response from the predictors, "
            "as in 'y ~ x + (1 | g)'"
        )
    if len(tildes) > 1:
        raise FormulaError(f"formula {formula!r} has more than one '~'")
    lhs, rhs = formula[: tildes[0]].strip(), formula[tildes[0] + 1 :]
    if not lhs:
        raise FormulaError(f"formula {formula!r} has no response on the left of '~'")
    if "|" in lhs:
        raise FormulaError(f"the response {lhs!r} of formula {formula!r} contains a '|'")

    fixed: list[tuple[str, str]] = []
    bars: list[BarTerm] = []
    for sign, text in _split_summands(rhs, formula):
        if "|" not in text:
            fixed.append((sign, text))
            continue
        inner = _strip_parentheses(text)
        if inner is not None and sign == "-":
            raise FormulaError(f"formula {formula!r} subtracts the random-effects term {text!r}")
        if inner is None:
            raise FormulaError(
                f"in formula {formula!r}, {text!r} is not a random-effects term: write each one "
                "in its own parentheses and add it with '+', as in 'y ~ x + (1 | g)'"
            )
        bars.extend(_parse_bar(inner, text))
    if not bars:
        raise FormulaError(
            f"formula {formula!r} has no random-effects term such as (1 | g); "
            "for a model without random effects use lmmlib.ols"
        )
    # re-join the fixed summands with their signs: [('-', '1'), ('+', 'x')] -> "-1 + x"
    fixed_rhs = "".join(
        (f" {sign} {text}" if k else ("" if sign == "+" else "-") + text)
        for k, (sign, text) in enumerate(fixed)
    ) or "1"
    formula_variables(fixed_rhs)  # parse now so that a malformed fixed part fails here
    for bar in bars:
        formula_variables(bar.expr)
    return lhs, fixed_rhs, bars


@lru_cache(maxsize=512)
def parse_rhs(rhs: str) -> Formula:
    """formulaic's parse of the one-sided formula ``rhs``; a FormulaError if it is malformed.

    Parsing costs about 0.1 ms, a good part of building a small model's matrices, and the
    same pieces come back when a model is fitted again and again (simulation, bootstrap), so
    the parsed formula is remembered by its text.  (A parsed formula holds no data: it is
    turned into a model matrix for each data set by :mod:`lmmlib.design`.)

    >>> [str(term) for term in parse_rhs("x * g")]
    ['1', 'x', 'g', 'x:g']
    """
    try:
        return Formula(rhs)
    except (FormulaicError, SyntaxError, ValueError) as exc:
        raise FormulaError(f"cannot parse {rhs!r}: {exc}") from exc


def formula_variables(rhs: str) -> list[str]:
    """Names of the data columns that the one-sided formula ``rhs`` reads, in order.

    Functions must be known to formulaic (``np.*``, ``I``, ``C``, ``log``, ``center``,
    ``scale``, ``poly``, ...) or be Python built-ins; anything else is a FormulaError.

    >>> formula_variables("Days * Treatment + np.log(Dose) + I(Days - 4)")
    ['Days', 'Treatment', 'Dose']
    """
    return list(_formula_variables(rhs))


@lru_cache(maxsize=512)
def _formula_variables(rhs: str) -> tuple[str, ...]:
    names: list[str] = []
    for term in parse_rhs(rhs):
        for factor in term.factors:
            method = str(factor.eval_method.value)
            if method == "lookup":
                names.append(factor.expr)
            elif method == "python":
                names.extend(_python_names(factor.expr))
    return tuple(dict.fromkeys(names))


def group_components(group: str) -> list[str]:
    """The column names of a grouping factor: ``"Subject"`` -> ``['Subject']``,
    ``"b:a"`` -> ``['b', 'a']``.

    >>> group_components("sample:batch")
    ['sample', 'batch']
    """
    return [part.strip().strip("`") for part in group.split(":")]


def _python_names(expr: str) -> list[str]:
    """Variables read by a Python factor such as ``np.log(x)``; reject unknown functions."""
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as exc:
        raise FormulaError(f"cannot parse the term {expr!r}: {exc.msg}") from exc
    called = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    attribute_bases = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    names = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Name) or node.id in TRANSFORMS:
            continue
        if id(node) in called:
            if not hasattr(builtins, node.id):
                hint = " (use C(x) for a categorical predictor)" if node.id == "factor" else ""
                raise FormulaError(
                    f"unknown function {node.id!r} in the term {expr!r}{hint}; formulas may use "
                    "numpy as np.*, Python built-ins and formulaic's transforms such as I, C, "
                    "log, exp, center, scale and poly"
                )
        elif id(node) not in attribute_bases:
            names.append(node.id)
    return names


def _depth_scan(text: str):
    """Yield ``(position, parenthesis depth)`` for every character of ``text``."""
    depth = 0
    for i, char in enumerate(text):
        if char == ")":
            depth -= 1
        yield i, depth
        if char == "(":
            depth += 1


def _check_parentheses(formula: str) -> None:
    opened: list[int] = []
    for i, char in enumerate(formula):
        if char == "(":
            opened.append(i)
        elif char == ")":
            if not opened:
                raise FormulaError(
                    f"unbalanced parentheses in formula {formula!r}: the ')' at position {i} "
                    "has no matching '('"
                )
            opened.pop()
    if opened:
        raise FormulaError(
            f"unbalanced parentheses in formula {formula!r}: the '(' at position {opened[-1]} "
            "is never closed"
        )


def _split_summands(rhs: str, formula: str) -> list[tuple[str, str]]:
    """Split ``rhs`` at the ``+`` and ``-`` outside parentheses into ``(sign, text)`` pairs."""
    pieces, sign, start = [], "+", 0
    for i, depth in _depth_scan(rhs):
        if depth == 0 and rhs[i] in "+-":
            text = rhs[start:i].strip()
            if text:
                pieces.append((sign, text))
                sign = rhs[i]
            elif rhs[i] == "-" and sign == "+":  # '-1 + x' or 'x + -1'
                sign = "-"
            elif rhs[i] == "+" and not rhs[:i].strip():  # a leading '+', as in '~ + x'
                pass
            else:  # an empty summand between two operators
                raise FormulaError(f"formula {formula!r} has an empty term before {rhs[i]!r}")
            start = i + 1
    text = rhs[start:].strip()
    if not text:
        raise FormulaError(f"formula {formula!r} ends without a term after the last operator")
    pieces.append((sign, text))
    return pieces


def _strip_parentheses(text: str) -> str | None:
    """The inside of ``text`` if it is one parenthesised group (redundant pairs removed)."""
    inner = None
    while text.startswith("(") and text.endswith(")"):
        closing = [i for i, depth in _depth_scan(text) if text[i] == ")" and depth == 0]
        if closing[0] != len(text) - 1:
            break
        text = inner = text[1:-1].strip()
        if "|" in text and all(text[i] != "|" or d > 0 for i, d in _depth_scan(text)):
            continue  # the bar is inside a further pair of parentheses: keep stripping
        break
    return inner


def _parse_bar(inner: str, original: str) -> list[BarTerm]:
    """Expand the inside of one bar term, ``expr | g`` or ``expr || g``."""
    bars = [i for i, depth in _depth_scan(inner) if inner[i] == "|" and depth == 0]
    double = len(bars) == 2 and bars[1] == bars[0] + 1
    if not bars or (len(bars) > 1 and not double):
        raise FormulaError(
            f"the random-effects term {original!r} must have exactly one '|' or '||'"
        )
    expr, group = inner[: bars[0]].strip(), inner[bars[-1] + 1 :].strip()
    if not expr:
        raise FormulaError(
            f"the random-effects term {original!r} has nothing on the left of the bar; "
            "write (1 | g) for a random intercept"
        )
    if not group:
        raise FormulaError(
            f"the random-effects term {original!r} has no grouping factor on the right of the bar"
        )
    groups = _expand_slash(group, original)
    exprs = _expand_double_vert(expr, original) if double else [expr]
    return [BarTerm(e, g, correlated=not double) for e in exprs for g in groups]


def _expand_slash(group: str, original: str) -> list[str]:
    """``a/b/c`` -> ``['c:b:a', 'b:a', 'a']`` as lme4's ``findbars``."""
    nested = [part.strip() for part in group.split("/")]
    for part in nested:
        names = part.split(":")
        if not all(_NAME.match(name.strip()) for name in names):
            raise FormulaError(
                f"the grouping factor {group!r} in {original!r} must be a column name, an "
                "interaction such as a:b, or a nesting such as a/b"
            )
    tidy = [":".join(name.strip() for name in part.split(":")) for part in nested]
    return [":".join(reversed(tidy[:k])) for k in range(len(tidy), 0, -1)]


def _expand_double_vert(expr: str, original: str) -> list[str]:
    """``x + z`` -> ``['1', '0 + x', '0 + z']``: lme4's ``expandDoubleVert``."""
    try:
        labels = [str(term) for term in parse_rhs(expr)]
    except FormulaError as exc:
        raise FormulaError(f"cannot parse {expr!r} in {original!r}: {exc.__cause__}") from exc
    exprs = (["1"] if "1" in labels else []) + [f"0 + {lab}" for lab in labels if lab != "1"]
    if not exprs:
        raise FormulaError(f"the random-effects term {original!r} has no columns")
    return exprs
