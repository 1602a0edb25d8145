"""The model matrices of a linear mixed model: y, X and the random-effects terms.

A linear mixed model (Bates et al. 2015, section 1) is

.. math::

    y = X\\beta + Zb + \\varepsilon, \\qquad b \\sim N(0, \\Sigma_\\theta),
    \\qquad \\varepsilon \\sim N(0, \\sigma^2 I_n).

:func:`build_design` turns an lme4 formula and a data frame into the pieces of this equation:
the response ``y``, the fixed-effects model matrix ``X`` (full column rank), and one
:class:`RandomTerm` per bar term ``(expr | g)``. A term stores the raw model matrix
:math:`X_i` of ``expr`` (n x p_i) and the level :math:`j(r)` of the grouping factor in each
row r; its block of Z is the row-wise Khatri-Rao product of the indicator matrix
:math:`J_i` of the levels with :math:`X_i` (Bates et al. 2015, section 2.3), so row r of
:math:`Z_i` holds :math:`X_i[r, :]` in the columns of level :math:`j(r)` and zeros elsewhere.

Model matrices are built by formulaic with treatment contrasts (first level as reference);
their column names are rewritten the way lme4 writes them: ``(Intercept)``, ``Days``,
``Treatmentb``, ``Days:Treatmentb``.

>>> import pandas as pd
>>> df = pd.DataFrame({"y": [1.0, 3.0, 2.0, 5.0, 4.0, 6.0], "x": [0, 1, 0, 1, 0, 1],
...                    "g": ["a", "a", "b", "b", "c", "c"]})
>>> d = build_design("y ~ x + (1 | g)", df)
>>> d.fixef_names, d.X.shape, d.terms[0].names, list(d.terms[0].levels)
(['(Intercept)', 'x'], (6, 2), ('(Intercept)',), ['a', 'b', 'c'])
>>> d.terms[0].codes
array([0, 0, 1, 1, 2, 2])
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from formulaic import Formula, ModelSpec
from formulaic.errors import DataMismatchWarning, FormulaicError

from lmmlib.errors import LmmInputError, MissingValuesWarning, RankDeficiencyWarning
from lmmlib.formula import formula_variables, group_components, parse_rhs, split_formula

__all__ = ["RandomTerm", "Design", "build_design", "MissingValuesWarning",
           "RankDeficiencyWarning"]

#: Relative tolerance of lme4's rank check (``lmerControl(check.rankX)`` uses ``qr(X, tol=1e-7)``).
RANK_TOL = 1e-7


@dataclass(frozen=True, eq=False)
class RandomTerm:
    """One random-effects term ``(expr | group)``: its grouping factor and raw model matrix."""

    group: str
    levels: pd.Index
    codes: np.ndarray
    names: tuple[str, ...]
    X: np.ndarray
    expr: str = ""  # the left of the bar, for messages: "Days", "0 + Days"

    @property
    def nlevels(self) -> int:
        """Number of levels of the grouping factor, :math:`\\ell_i`."""
        return len(self.levels)

    @property
    def p(self) -> int:
        """Number of columns of the term's model matrix, :math:`p_i`."""
        return self.X.shape[1]

    def __str__(self) -> str:
        return f"({self.expr or ' + '.join(self.names)} | {self.group})"


@dataclass(frozen=True)
class _Recipe:
    """What :class:`Design` needs to build the same matrices for new data."""

    fixed_spec: ModelSpec
    fixed_columns: tuple[str, ...]
    kept: tuple[int, ...]
    term_specs: tuple[ModelSpec, ...]
    term_columns: tuple[tuple[str, ...], ...]


@dataclass(frozen=True, eq=False)
class Design:
    """Response, fixed-effects matrix and random-effects terms of one model and data set."""

    formula: str
    response: str
    y: np.ndarray
    X: np.ndarray
    fixef_names: list[str]
    terms: list[RandomTerm]
    row_index: pd.Index
    n_dropped: int
    dropped_columns: list[str]
    recipe: _Recipe | None = field(default=None, repr=False)

    def new_fixed_matrix(self, newdata: pd.DataFrame) -> np.ndarray:
        """X for ``newdata`` with the columns, contrasts and levels of the fit.

        A level of a categorical predictor that the fit did not see is an LmmInputError.
        """
        recipe = self._recipe()
        frame = _new_frame(newdata, recipe.fixed_columns, recipe.fixed_spec)
        return _matrix(recipe.fixed_spec, frame, "the fixed effects")[:, list(recipe.kept)]

    def new_random_terms(self, newdata: pd.DataFrame) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per term, ``(codes, X_term)`` for ``newdata``; a level not seen in the fit
        (or a missing grouping value) gets code -1.

        >>> df = pd.DataFrame({"y": [1.0, 2.0, 4.0, 3.0, 5.0], "x": [0, 1, 2, 3, 4],
        ...                    "g": ["a", "a", "b", "b", "b"]})
        >>> d = build_design("y ~ x + (1 | g)", df)
        >>> d.new_fixed_matrix(pd.DataFrame({"x": [10]}))
        array([[ 1., 10.]])
        >>> [codes.tolist() for codes, _ in d.new_random_terms(pd.DataFrame({"g": ["b", "z"]}))]
        [[1, -1]]
        """
        recipe = self._recipe()
        out = []
        for term, spec, columns in zip(self.terms, recipe.term_specs, recipe.term_columns):
            frame = _new_frame(newdata, columns, spec, group=term.group)
            out.append((_new_codes(frame, term), _matrix(spec, frame, f"the term {term}")))
        return out

    def _recipe(self) -> _Recipe:
        if self.recipe is None:
            raise LmmInputError(
                "this Design was not made by build_design and cannot transform new data"
            )
        return self.recipe


def build_design(formula: str, data: pd.DataFrame, *, reorder_terms: bool = True) -> Design:
    """Build y, X and the random-effects terms of an lme4 formula on ``data``.

    Rows with a missing value in any column the model uses are dropped with a
    :class:`MissingValuesWarning`; collinear columns of X are dropped with a
    :class:`RankDeficiencyWarning`, as lme4 does. With ``reorder_terms`` (lme4's default) the
    terms are put in decreasing order of their number of levels whenever a later term has
    more levels than an earlier one (lme4's ``mkReTrms``), so that theta follows lme4's order.

    Raises
    ------
    LmmInputError
        For data that is not a DataFrame or is empty, a missing column, a non-numeric or
        constant response, infinite values, a grouping factor with one level, or more
        random effects than observations. A malformed formula raises FormulaError.
    """
    if not isinstance(data, pd.DataFrame):
        raise LmmInputError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    response, fixed_rhs, bars = split_formula(formula)
    if len(data) == 0:
        raise LmmInputError("data has 0 rows")
    if response.strip("`") in data.columns:  # a plain column name, possibly in backticks
        response = response.strip("`")
    response_columns = (
        [response] if response in data.columns else formula_variables(f"I({response})")
    )
    fixed_columns = formula_variables(fixed_rhs)
    term_columns = [formula_variables(bar.expr) + group_components(bar.group) for bar in bars]
    used = list(dict.fromkeys(response_columns + fixed_columns + sum(term_columns, [])))
    missing = [c for c in used if c not in data.columns]
    if missing:
        raise LmmInputError(
            f"column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} of formula "
            f"{formula!r} not in data; available columns: {', '.join(map(str, data.columns))}"
        )
    if response in data.columns:
        _check_numeric_response(data[response], response)
    _check_finite(data, used)
    frame, n_dropped = _drop_missing(data, used)

    y = _response(frame, response)
    if np.all(y == y[0]):
        raise LmmInputError(
            f"the response {response!r} is constant (every value is {y[0]:g}); "
            "a variance cannot be estimated"
        )
    fixed_mm = _evaluate(parse_rhs(fixed_rhs), frame, "the fixed effects")
    X_full = _matrix(fixed_mm.model_spec, frame, "the fixed effects", fixed_mm)
    names_full = lme4_column_names(fixed_mm, frame)
    kept = _independent_columns(X_full)
    dropped = [n for j, n in enumerate(names_full) if j not in kept]
    if dropped:
        warnings.warn(
            f"fixed-effect model matrix is rank deficient so dropping {len(dropped)} "
            f"column{'s' if len(dropped) > 1 else ''} / coefficient"
            f"{'s' if len(dropped) > 1 else ''}: {', '.join(map(repr, dropped))}",
            RankDeficiencyWarning, stacklevel=2,
        )

    terms, specs = [], []
    for bar in bars:
        mm = _evaluate(parse_rhs(bar.expr), frame, f"the term {bar}")
        if mm.shape[1] == 0:
            raise LmmInputError(f"the random-effects term {bar} has no columns")
        levels, codes = _grouping_factor(frame, bar.group)
        terms.append(RandomTerm(bar.group, levels, codes, tuple(lme4_column_names(mm, frame)),
                                _matrix(mm.model_spec, frame, f"the term {bar}", mm), bar.expr))
        specs.append(mm.model_spec)
    _check_terms(terms, len(y))
    order = _lme4_order([t.nlevels for t in terms]) if reorder_terms else range(len(terms))
    recipe = _Recipe(fixed_mm.model_spec, tuple(fixed_columns), tuple(kept),
                     tuple(specs[i] for i in order),
                     tuple(tuple(term_columns[i]) for i in order))
    return Design(
        formula=formula, response=response, y=y, X=X_full[:, kept],
        fixef_names=[names_full[j] for j in kept], terms=[terms[i] for i in order],
        row_index=frame.index, n_dropped=n_dropped, dropped_columns=dropped, recipe=recipe,
    )


# ---------------------------------------------------------------------------- checks on data


def _check_numeric_response(column: pd.Series, name: str) -> None:
    if pd.api.types.is_bool_dtype(column) or not pd.api.types.is_numeric_dtype(column):
        raise LmmInputError(
            f"the response {name!r} must be numeric, but column {name!r} has dtype {column.dtype}"
        )


def _check_finite(data: pd.DataFrame, columns: list[str]) -> None:
    for name in columns:
        column = data[name]
        if pd.api.types.is_float_dtype(column):
            n_inf = int(np.isinf(column.to_numpy(dtype=float, na_value=np.nan)).sum())
            if n_inf:
                raise LmmInputError(
                    f"column {name!r} has {n_inf} infinite value{'s' if n_inf > 1 else ''} "
                    "(inf or -inf); remove or replace those rows"
                )


def _drop_missing(data: pd.DataFrame, columns: list[str]) -> tuple[pd.DataFrame, int]:
    """The used columns of ``data`` without rows that have a missing value (lme4's na.omit)."""
    frame = data[columns]
    na = {name: frame[name].isna().to_numpy() for name in columns}
    drop = np.logical_or.reduce(list(na.values()))
    n_dropped = int(drop.sum())
    if n_dropped:
        detail = ", ".join(f"{name!r} in {int(k)} row{'s' if k > 1 else ''}"
                           for name, k in ((name, m.sum()) for name, m in na.items()) if k)
        warnings.warn(
            f"dropped {n_dropped} of {len(frame)} rows with missing values ({detail})",
            MissingValuesWarning, stacklevel=3,
        )
        frame = frame.loc[~drop]
    if len(frame) < 2:
        raise LmmInputError(
            f"a mixed model needs at least 2 observations, but {len(frame)} row"
            f"{' is' if len(frame) == 1 else 's are'} left"
            f"{' after dropping rows with missing values' if n_dropped else ''}"
        )
    for name in columns:  # drop unused categories, as R's model.frame(drop.unused.levels=TRUE)
        column = frame[name]
        if isinstance(column.dtype, pd.CategoricalDtype):
            if _has_unused_categories(column):
                frame = frame.assign(**{name: column.cat.remove_unused_categories()})
    return frame, n_dropped


def _has_unused_categories(column: pd.Series) -> bool:
    codes = column.cat.codes.to_numpy()
    return not np.bincount(codes[codes >= 0], minlength=len(column.cat.categories)).all()


def _response(frame: pd.DataFrame, response: str) -> np.ndarray:
    if response in frame.columns:
        return frame[response].to_numpy(dtype=np.float64)
    mm = _evaluate(parse_rhs(f"0 + I({response})"), frame, f"the response {response!r}",
                   output="pandas")
    if mm.shape[1] != 1:
        raise LmmInputError(f"the response {response!r} must be one numeric column")
    _check_numeric_response(mm.iloc[:, 0], response)
    return _matrix(mm.model_spec, frame, f"the response {response!r}", mm)[:, 0]


# ---------------------------------------------------------------------------- model matrices


def _evaluate(spec: Formula | ModelSpec, frame: pd.DataFrame, what: str, output="numpy"):
    """A formulaic model matrix of ``frame``, with formulaic's errors made readable.

    The matrix is a numpy array (formulaic's ``output="numpy"``, a third faster than a
    DataFrame); its column names are in ``mm.model_spec.column_names``.
    """
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("error", DataMismatchWarning)
        try:
            if isinstance(spec, ModelSpec):
                return spec.get_model_matrix(frame, context={})
            return spec.get_model_matrix(frame, context={}, na_action="ignore", output=output)
        except (FormulaicError, DataMismatchWarning, TypeError, ValueError, NameError) as exc:
            raise LmmInputError(f"cannot build the model matrix of {what}: {exc}") from exc


def _matrix(spec: ModelSpec, frame: pd.DataFrame, what: str, mm=None) -> np.ndarray:
    """The model matrix as float64, with an error naming any column that is not finite."""
    mm = _evaluate(spec, frame, what) if mm is None else mm
    X = np.asarray(mm, dtype=np.float64)
    bad = ~np.isfinite(X)
    if bad.any():
        j = int(np.flatnonzero(bad.any(axis=0))[0])
        raise LmmInputError(
            f"the column {mm.model_spec.column_names[j]!r} of {what} has "
            f"{int(bad[:, j].sum())} non-finite "
            "values (NaN or inf, e.g. the log of a value <= 0)"
        )
    return X


def lme4_column_names(mm, frame: pd.DataFrame) -> list[str]:
    """formulaic's column names written as lme4 writes them.

    ``Intercept`` -> ``(Intercept)``, ``T[T.b]`` and ``T[b]`` -> ``Tb``, ``x:T[T.b]`` ->
    ``x:Tb``, a logical column ``b`` -> ``bTRUE``. Used for lmer's and ols's coefficients alike.
    """
    names = {}
    for structure in mm.model_spec.structure:
        factors = sorted((factor.expr for factor in structure.term.factors), key=len, reverse=True)
        for column in structure.columns:
            if column == "Intercept":
                names[column] = "(Intercept)"
            else:
                names[column] = ":".join(_lme4_piece(piece, factors, frame)
                                         for piece in _split_interaction(column))
    return [names.get(column, column) for column in mm.model_spec.column_names]


def _split_interaction(column: str) -> list[str]:
    """Split ``'x:T[T.b]'`` at the colons that are outside brackets and parentheses."""
    pieces, depth, start = [], 0, 0
    for i, char in enumerate(column):
        if char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        elif char == ":" and depth == 0:
            pieces.append(column[start:i])
            start = i + 1
    return pieces + [column[start:]]


def _lme4_piece(piece: str, factors: list[str], frame: pd.DataFrame) -> str:
    """One factor of a column name: ``'T[T.b]'`` -> ``'Tb'`` (``factors`` longest first)."""
    for factor in factors:
        if piece.startswith(factor + "[") and piece.endswith("]"):
            level = piece[len(factor) + 1 : -1]
            level = level[2:] if level.startswith("T.") else level
            return factor + re.sub(r"^(-?\d+)\.0$", r"\1", level)  # R prints 2.0 as 2
        if piece == factor and factor in frame.columns:
            return factor + ("TRUE" if pd.api.types.is_bool_dtype(frame[factor]) else "")
    return piece


def _independent_columns(X: np.ndarray, tol: float = RANK_TOL) -> list[int]:
    """Columns of X kept by a QR decomposition with R's limited pivoting (LINPACK dqrdc2).

    Columns are taken in order; column j is kept unless its residual after projection on the
    kept columns has norm below ``tol`` times its own norm. So of two collinear columns the
    later one is dropped, as in lme4 (a norm-pivoted QR would drop the shorter one instead).
    """
    n, p = X.shape
    Q = np.zeros((n, 0))
    kept = []
    for j in range(p):
        x = X[:, j]
        norm = np.linalg.norm(x)
        r = x - Q @ (Q.T @ x)
        r = r - Q @ (Q.T @ r)  # a second Gram-Schmidt pass for numerical orthogonality
        if norm > 0 and np.linalg.norm(r) > tol * norm:
            kept.append(j)
            Q = np.column_stack([Q, r / np.linalg.norm(r)])
    return kept


# ---------------------------------------------------------------------------- grouping factors


def _label(value) -> str:
    """A level as R prints it: ``True`` -> ``'TRUE'``, ``3.0`` -> ``'3'``."""
    if isinstance(value, (bool, np.bool_)):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _factor(column: pd.Series) -> tuple[pd.Index, np.ndarray]:
    """Levels and integer codes of one column: category order for a categorical (unused
    categories dropped), sorted unique values otherwise (as R's ``factor``)."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        if _has_unused_categories(column):
            column = column.cat.remove_unused_categories()
        return pd.Index(column.cat.categories), column.cat.codes.to_numpy(dtype=np.int64)
    uniques = list(pd.unique(column.to_numpy()))
    try:
        levels = pd.Index(sorted(uniques))
    except TypeError:  # mixed types: sort by their printed form
        levels = pd.Index(sorted(uniques, key=_label), dtype=object)
    return levels, levels.get_indexer(column).astype(np.int64)


def _grouping_factor(frame: pd.DataFrame, group: str) -> tuple[pd.Index, np.ndarray]:
    """Levels and codes of a grouping factor; ``a:b`` is the factor of the observed
    combinations, with levels ``'a1:b1'`` ordered with ``a`` varying slowest (R's ``a:b``)."""
    factors = [_factor(frame[name]) for name in group_components(group)]
    if len(factors) == 1:
        return factors[0]
    dims = [len(levels) for levels, _ in factors]
    combined = np.ravel_multi_index([codes for _, codes in factors], dims)
    observed, codes = np.unique(combined, return_inverse=True)
    parts = np.unravel_index(observed, dims)
    labels = [":".join(_label(levels[k]) for (levels, _), k in zip(factors, ks))
              for ks in zip(*parts)]
    return pd.Index(labels, dtype=object), codes.astype(np.int64)


def _check_terms(terms: list[RandomTerm], n: int) -> None:
    """lme4's checks: each grouping factor has > 1 level and fewer levels than observations,
    and each term has fewer random effects than observations (``check.nobs.vs.nRE``)."""
    for term in terms:
        if term.nlevels < 2:
            raise LmmInputError(
                f"the grouping factor {term.group!r} has only one level "
                f"({_label(term.levels[0])!r}); a random effect needs at least 2 levels"
            )
    for term in terms:
        if term.nlevels >= n:
            raise LmmInputError(
                "number of levels of each grouping factor must be < number of observations: "
                f"{term.group!r} has {term.nlevels} levels for {n} observations in term {term}"
            )
    for term in terms:
        if term.nlevels * term.p >= n:
            raise LmmInputError(
                f"number of observations (={n}) <= number of random effects "
                f"(={term.nlevels * term.p}) for term {term}; the random-effects parameters "
                "and the residual variance are probably unidentifiable"
            )


def _lme4_order(nlevels: list[int]) -> list[int]:
    """lme4's term order: if any term has more levels than the one before it, sort by
    decreasing number of levels (R's ``rev(order(nl))``, which reverses ties)."""
    if not any(b > a for a, b in zip(nlevels, nlevels[1:])):
        return list(range(len(nlevels)))
    return list(np.argsort(nlevels, kind="stable")[::-1])


# ---------------------------------------------------------------------------- new data


def _new_frame(newdata: pd.DataFrame, columns, spec: ModelSpec, group: str | None = None):
    """The columns of ``newdata`` needed by one model matrix, checked against the fit."""
    if not isinstance(newdata, pd.DataFrame):
        raise LmmInputError(f"newdata must be a pandas DataFrame, got {type(newdata).__name__}")
    missing = [c for c in columns if c not in newdata.columns]
    if missing:
        raise LmmInputError(
            f"newdata lacks column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(map(repr, missing))}; it has: {', '.join(map(str, newdata.columns))}"
        )
    predictors = [c for c in columns if group is None or c not in group_components(group)]
    for name in predictors:
        n_na = int(newdata[name].isna().sum())
        if n_na:
            raise LmmInputError(
                f"column {name!r} of newdata has {n_na} missing value{'s' if n_na > 1 else ''}; "
                "drop or fill those rows before predicting"
            )
    for name, (kind, state) in spec.encoder_state.items():
        kind = str(getattr(kind, "value", kind))
        if kind == "numerical" and name in newdata.columns and not _is_numeric(newdata[name]):
            raise LmmInputError(
                f"column {name!r} of newdata has dtype {newdata[name].dtype}, but it was a "
                "numeric predictor in the fit"
            )
        if kind == "categorical" and name in newdata.columns:
            known = set(state.get("categories", []))
            new = [v for v in pd.unique(newdata[name].to_numpy()) if v not in known]
            if new:
                raise LmmInputError(
                    f"column {name!r} of newdata has level {_label(new[0])!r} that was not in the "
                    f"data of the fit (levels: {', '.join(map(_label, state['categories']))})"
                )
    frame = newdata[list(columns)]
    for name in columns:  # unused categories would trip formulaic's re-coding of the levels
        if isinstance(frame[name].dtype, pd.CategoricalDtype):
            frame = frame.assign(**{name: frame[name].cat.remove_unused_categories()})
    return frame


def _is_numeric(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)


def _new_codes(frame: pd.DataFrame, term: RandomTerm) -> np.ndarray:
    """Codes of the rows of ``frame`` into ``term.levels``; -1 for unseen or missing levels."""
    components = group_components(term.group)
    if len(frame) == 0:
        return np.zeros(0, dtype=np.int64)
    keys = frame[components[0]].astype(object).map(_label)
    for name in components[1:]:
        keys = keys + ":" + frame[name].astype(object).map(_label)
    codes = pd.Index([_label(v) for v in term.levels]).get_indexer(keys)
    codes[frame[components].isna().any(axis=1).to_numpy()] = -1
    return codes.astype(np.int64)
