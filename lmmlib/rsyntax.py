"""R's formula syntax where Python would read it differently: translations and refusals.

A formula is parsed by formulaic, which evaluates every function call (``I(...)``,
``log(...)``) as *Python*.  R and Python share most of that syntax but not all of it, and a
few differences give a silently wrong model rather than an error.  This module rewrites the
text of a formula before formulaic sees it, and refuses what it cannot translate:

======================  ==========================  =====================================
R                       here                        why
======================  ==========================  =====================================
``I(x^2)``              ``I(x**2)``                 Python's ``^`` is bitwise XOR: ``3 ^ 2 == 1``
``I(x %/% 2)``          ``I(x // 2)``               integer division (both round down)
``I(x %% 2)``           ``I(x % 2)``                remainder (both take the divisor's sign)
``TRUE``, ``FALSE``     ``True``, ``False``         e.g. ``poly(x, 2, raw = TRUE)``
``factor(x)``           ``C(x)``                    a categorical predictor (R's level order)
``C(x, poly)``          ``C(x, contr.poly)``        R's contrast functions (also ``sum``,
                                                    ``helmert``, ``treatment``)
``sqrt(x)``,            numpy's, and ``log(x, b)``  R's base-b logarithm
``log(x, b)``
``a %in% b``            error                       formulaic reads it as ``b/a``; write ``a:b``
``ns(x, k)``            error                       natural splines are not available
``pkg::f(x)``           error                       no package prefixes
======================  ==========================  =====================================

``^`` keeps its formula meaning outside function calls: ``(a + b)^2`` is all main effects
and two-way interactions, as in R.  Inside a call (``I()``, ``log()``, ``poly()``, ...) and
in the response it is a power.

Ordered factors get R's default polynomial contrasts (:func:`ordered_as_poly`), and the
``.`` shorthand means "all other columns" (:func:`expand_dot`); both need the data, so
:mod:`lmmlib.design` applies them.  Everything else (``-1``, ``+0``, ``scale()``, ``poly()``,
``log()`` of a non-positive value, which is an error naming the column) works as in R.

>>> r_to_python("I(Days^2) + (a + b)^2")
'I(Days**2) + (a + b)^2'
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from formulaic.transforms import TRANSFORMS

from lmmlib.errors import FormulaError

__all__ = ["r_to_python", "R_CONTEXT", "expand_dot", "replace_dot", "ordered_as_poly", "r_log",
           "check_scales", "SCALE_TOL"]

#: lme4's ``check.scaleX`` tolerance: predictors whose SDs differ by more than this factor,
#: or whose SD is beyond it from 1, are "on very different scales"
SCALE_TOL = 1e3

_CONTRASTS = {"poly": "contr.poly", "sum": "contr.sum", "helmert": "contr.helmert",
              "treatment": "contr.treatment"}
_IDENT = re.compile(r"[A-Za-z0-9_.\]]")


def r_log(x, base=np.e):
    """R's ``log(x, base)``: the natural logarithm, or the logarithm to ``base``.

    >>> float(r_log(8.0, 2))
    3.0
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log(x)
        return out if base is np.e else out / np.log(base)


#: names that formulas may use beyond formulaic's transforms (passed as formulaic's context)
R_CONTEXT = {"factor": TRANSFORMS["C"], "sqrt": np.sqrt, "log": r_log,
             "TRUE": True, "FALSE": False}


def r_to_python(text: str, *, all_python: bool = False) -> str:
    """``text`` (a side of an R formula) with R operators translated for Python evaluation.

    ``^`` becomes ``**`` inside function calls (everywhere when ``all_python``, as for a
    response such as ``y^2``); ``%/%`` becomes ``//`` and ``%%`` becomes ``%``; ``TRUE`` and
    ``FALSE`` are Python's; ``C(x, poly)`` names formulaic's ``contr.poly`` (also ``sum``,
    ``helmert``, ``treatment``).  ``%in%``, ``ns()`` and ``pkg::`` prefixes are a
    FormulaError that says what to write instead.

    >>> r_to_python("log(y^2)", all_python=True), r_to_python("I(x %/% 7)")
    ('log(y**2)', 'I(x // 7)')
    >>> r_to_python("C(dose, poly)")
    'C(dose, contr.poly)'
    """
    if "%in%" in text:
        raise FormulaError(
            f"R's %in% in {text!r} is not supported (formulaic would read 'a %in% b' as b/a): "
            "write a:b for the effect of a within each level of b, or b/a for b plus a "
            "within b"
        )
    if "::" in text:
        raise FormulaError(
            f"{text!r} uses a package prefix ('::'); write the function without it"
        )
    if re.search(r"(?<![A-Za-z0-9_.])ns\s*\(", text):
        raise FormulaError(
            f"natural splines ns() in {text!r} are not supported; use bs(x, df) for a cubic "
            "B-spline basis (as R's splines::bs) or poly(x, k) for orthogonal polynomials"
        )
    text = text.replace("%/%", "//").replace("%%", "%")
    if re.search(r"%[A-Za-z_.]*%", text):
        raise FormulaError(f"the R operator {re.search(r'%[A-Za-z_.]*%', text).group()!r} "
                           f"in {text!r} is not supported")
    out, stack, quote = [], [], None
    for i, char in enumerate(text):
        if quote:  # inside `name`, 'string' or "string": nothing to translate
            quote = None if char == quote else quote
        elif char in "`'\"":
            quote = char
        elif char == "(":
            before = text[:i].rstrip()
            stack.append(bool(before) and bool(_IDENT.match(before[-1])))
        elif char == ")" and stack:
            stack.pop()
        elif char == "^" and (all_python or any(stack)):
            out.append("**")
            continue
        elif char == "!" and text[i + 1 : i + 2] != "=":
            raise FormulaError(
                f"R's negation '!' in {text!r} is not supported; write (x == 0) or "
                "(x != value) instead"
            )
        out.append(char)
    # the word-level translations, applied outside quotes only ("TRUE" may be a level)
    pieces = re.split(r"""(`[^`]*`|'[^']*'|"[^"]*")""", "".join(out))
    for k in range(0, len(pieces), 2):
        piece = re.sub(r"(?<![A-Za-z0-9_.])TRUE(?![A-Za-z0-9_.])", "True", pieces[k])
        piece = re.sub(r"(?<![A-Za-z0-9_.])FALSE(?![A-Za-z0-9_.])", "False", piece)
        pieces[k] = re.sub(
            r"\b(C\(\s*[^,()]+?\s*,\s*)(?:contr\.)?(poly|sum|helmert|treatment)(\s*\))",
            lambda m: m.group(1) + _CONTRASTS[m.group(2)] + m.group(3), piece,
        )
    return "".join(pieces)


def _bare_names(rhs: str) -> list[tuple[int, int]]:
    """(start, end) of the names in ``rhs`` that are outside function calls and backticks."""
    spans, stack, i = [], [], 0
    while i < len(rhs):
        char = rhs[i]
        if char == "`":
            j = rhs.index("`", i + 1) if "`" in rhs[i + 1 :] else len(rhs) - 1
            if not any(stack):
                spans.append((i, j + 1))
            i = j + 1
            continue
        if char == "(":
            before = rhs[:i].rstrip()
            stack.append(bool(before) and bool(_IDENT.match(before[-1])))
        elif char == ")" and stack:
            stack.pop()
        elif re.match(r"[A-Za-z_.]", char) and not (i and _IDENT.match(rhs[i - 1])):
            m = re.match(r"[A-Za-z_.][A-Za-z0-9_.]*", rhs[i:])
            end = i + m.end()
            if not any(stack) and not rhs[end:].lstrip().startswith("("):
                spans.append((i, end))
            i = end
            continue
        i += 1
    return spans


def expand_dot(rhs: str, columns, exclude) -> str:
    """Replace the term ``.`` by the data columns not otherwise in the formula (R's rule).

    >>> expand_dot(". - x", ["y", "x", "z", "w"], {"y"})
    '(x + z + w) - x'
    """
    if replace_dot(rhs, "") == rhs:  # no "." term
        return rhs
    others = [str(c) for c in columns if str(c) not in set(exclude)]
    if not others:
        raise FormulaError("'.' in the formula stands for no column: every column is used")
    names = " + ".join(c if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", c) else f"`{c}`"
                       for c in others)
    return replace_dot(rhs, f"({names})")


def replace_dot(rhs: str, text: str) -> str:
    """``rhs`` with each term ``.`` replaced by ``text``.

    >>> replace_dot(". + log(x.1)", "1")
    '1 + log(x.1)'
    """
    for a, b in reversed([(a, b) for a, b in _bare_names(rhs) if rhs[a:b] == "."]):
        rhs = rhs[:a] + text + rhs[b:]
    return rhs


def ordered_as_poly(rhs: str, frame: pd.DataFrame) -> tuple[str, dict[str, str]]:
    """Wrap bare ordered-categorical columns in ``C(x, contr.poly)``, R's default contrasts
    for ordered factors; returns the new text and the map from the wrapper to the name
    (so that columns are named ``x.L``, ``x.Q`` as in R).

    >>> f = pd.DataFrame({"d": pd.Categorical(["lo", "hi"], ["lo", "hi"], ordered=True)})
    >>> ordered_as_poly("x * d", f)
    ('x * C(d, contr.poly)', {'C(d, contr.poly)': 'd'})
    """
    renames = {}
    for a, b in reversed(_bare_names(rhs)):
        name = rhs[a:b].strip("`")
        if name in frame.columns and isinstance(frame[name].dtype, pd.CategoricalDtype) \
                and frame[name].dtype.ordered:
            wrapped = f"C({rhs[a:b]}, contr.poly)"
            renames[wrapped] = name
            rhs = rhs[:a] + wrapped + rhs[b:]
    return rhs, renames


def check_scales(X: np.ndarray, names) -> str | None:
    """lme4's ``check.scaleX``: a message if the predictors are on very different scales.

    Among the columns of X that are not all 0/1, with sample SDs ``s_j``: warn if some
    ``|log(s_i / s_j)|`` or ``|log s_j|`` exceeds ``log(1000)`` (lme4, ``R/modular.R``).

    >>> X = np.column_stack([np.ones(4), [0.0, 1, 2, 3], [0.0, 1e4, 2e4, 3e4]])
    >>> check_scales(X, ["(Intercept)", "x", "z"])[:53]
    'Some predictor variables are on very different scales'
    """
    X = np.asarray(X, dtype=float)
    continuous = [j for j in range(X.shape[1]) if not np.isin(X[:, j], (0.0, 1.0)).all()]
    if not continuous or len(X) < 2:
        return None
    sd = X[:, continuous].std(axis=0, ddof=1)
    continuous, sd = [j for j, s in zip(continuous, sd) if s > 0], sd[sd > 0]
    if not len(sd):
        return None
    log_sd = np.log(sd)
    spread = np.abs(log_sd[:, None] - log_sd[None, :])
    if max(spread.max(), np.abs(log_sd).max()) <= np.log(SCALE_TOL):
        return None
    shown = ", ".join(f"{names[j]} (SD {s:.3g})" for j, s in zip(continuous, sd))
    return ("Some predictor variables are on very different scales: consider rescaling "
            f"({shown}); lmmlib's estimates do not suffer (it rescales internally), but "
            "coefficients and theta are easier to read on similar scales")
