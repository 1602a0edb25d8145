r"""Ordinary least squares: the linear model of chapter 2.

The model is

.. math::

    \mathbf{y} = \mathbf{X}\boldsymbol\beta + \boldsymbol\varepsilon,
    \qquad \boldsymbol\varepsilon \sim \mathcal N(\mathbf 0, \sigma^2 \mathbf I_n),

with an :math:`n \times p` model matrix :math:`\mathbf X` of full column rank. It is fitted
through the thin QR decomposition :math:`\mathbf X = \mathbf Q \mathbf R`
(:math:`\mathbf Q^\top\mathbf Q = \mathbf I_p`, :math:`\mathbf R` upper triangular), never
by inverting :math:`\mathbf X^\top\mathbf X`:

* estimate: :math:`\hat{\boldsymbol\beta}` solves :math:`\mathbf R\boldsymbol\beta =
  \mathbf Q^\top\mathbf y` (back substitution);
* residual variance: :math:`\hat\sigma^2 = \lVert\mathbf y - \mathbf X\hat{\boldsymbol\beta}
  \rVert^2/(n-p)`;
* covariance: :math:`\widehat{\operatorname{Var}}(\hat{\boldsymbol\beta}) = \hat\sigma^2
  (\mathbf X^\top\mathbf X)^{-1} = \hat\sigma^2\,\mathbf R^{-1}\mathbf R^{-\top}`;
* a new row :math:`\mathbf x_0` has leverage :math:`h_0 = \mathbf x_0^\top(\mathbf X^\top
  \mathbf X)^{-1}\mathbf x_0 = \lVert\mathbf R^{-\top}\mathbf x_0\rVert^2` (one triangular
  solve), so the confidence band for the mean line is :math:`\mathbf x_0^\top
  \hat{\boldsymbol\beta} \pm q\,\hat\sigma\sqrt{h_0}` and the prediction band for a new
  observation is :math:`\mathbf x_0^\top\hat{\boldsymbol\beta} \pm q\,\hat\sigma
  \sqrt{1 + h_0}`, with :math:`q` the :math:`(1+\text{level})/2` quantile of Student's
  :math:`t_{n-p}` (exact under the model) or of the standard normal (the familiar 1.96).

Source: any regression text, e.g. Weisberg (2014), *Applied Linear Regression*, 4th ed.,
chapters 2-3 and appendix A.

>>> import lmmlib
>>> fit = lmmlib.ols("Reaction ~ Days", lmmlib.datasets.sleepstudy())
>>> fit.coef.round(3).to_dict()
{'(Intercept)': 251.405, 'Days': 10.467}
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import linalg, stats

from lmmlib.design import lme4_column_names
from lmmlib.errors import FormulaError, LmmInputError, MissingValuesWarning

__all__ = ["OLS", "ols"]

#: Relative tolerance below which a column is treated as a linear combination of the columns
#: before it (the value R's ``lm`` uses for its QR decomposition).
ALIAS_TOL = 1e-7


class OLS:
    r"""Ordinary least squares fit of :math:`\mathbf y = \mathbf X\boldsymbol\beta +
    \boldsymbol\varepsilon`, :math:`\boldsymbol\varepsilon \sim \mathcal N(\mathbf 0,
    \sigma^2\mathbf I)`.

    The constructor fits the model (see the module docstring for the formulas); use
    :func:`ols` to build ``y`` and ``X`` from a formula and a data frame.

    Parameters
    ----------
    y : array-like, shape (n,)
        Response.
    X : pandas.DataFrame or array-like, shape (n, p)
        Model matrix of full column rank, one column per coefficient (include a column of
        ones for an intercept). Column names of a DataFrame name the coefficients.
    names : sequence of str, optional
        Coefficient names when ``X`` is an array (default ``x0, x1, ...``).

    Attributes
    ----------
    coef, se, tvalues, pvalues : pandas.Series
        :math:`\hat\beta_j`, :math:`\mathrm{se}_j = \hat\sigma\sqrt{[(\mathbf X^\top
        \mathbf X)^{-1}]_{jj}}`, :math:`t_j = \hat\beta_j/\mathrm{se}_j` and the two-sided
        p-value :math:`2\,P(T_{n-p} > |t_j|)`.
    vcov : pandas.DataFrame
        :math:`\hat\sigma^2(\mathbf X^\top\mathbf X)^{-1}`.
    sigma : float
        Residual standard deviation :math:`\hat\sigma = \sqrt{\mathrm{RSS}/(n-p)}`.
    nobs, df_resid : int
        :math:`n` and :math:`n - p`.
    rss : float
        Residual sum of squares.
    fitted, residuals : pandas.Series
        :math:`\mathbf X\hat{\boldsymbol\beta}` and :math:`\mathbf y - \mathbf X
        \hat{\boldsymbol\beta}` (indexed like the rows used).
    R : numpy.ndarray
        The :math:`p\times p` triangular factor of :math:`\mathbf X`.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(5.0)
    >>> fit = OLS(1 + 2 * x + np.array([0.1, -0.1, 0.0, 0.1, -0.1]),
    ...           np.column_stack([np.ones(5), x]), names=["(Intercept)", "x"])
    >>> fit.coef.round(2).to_dict()
    {'(Intercept)': 1.04, 'x': 1.98}
    """

    def __init__(self, y, X, *, names: Sequence[str] | None = None):
        response = str(y.name) if isinstance(y, pd.Series) and y.name is not None else "y"
        y, X, names, index = _as_arrays(y, X, names)
        n, p = X.shape
        _check_rows(n, p)
        _check_full_rank(X, names)

        Q, R = np.linalg.qr(X)  # thin QR: Q is n x p, R is p x p upper triangular
        beta = linalg.solve_triangular(R, Q.T @ y)
        fitted = X @ beta
        resid = y - fitted
        rss = float(resid @ resid)
        df_resid = n - p
        sigma = float(np.sqrt(rss / df_resid))
        # (X'X)^{-1} = R^{-1} R^{-T}, with R^{-1} from one triangular solve
        R_inv = linalg.solve_triangular(R, np.eye(p))
        XtX_inv = R_inv @ R_inv.T
        se = sigma * np.sqrt(np.diag(XtX_inv))

        if sigma <= 1e-12 * max(1.0, float(np.max(np.abs(y)))):
            warnings.warn(
                "essentially perfect fit: the residual standard deviation is 0, so standard "
                "errors are 0 and t values infinite or undefined",
                RuntimeWarning,
                stacklevel=2,
            )
        with np.errstate(divide="ignore", invalid="ignore"):
            t = beta / se

        self.names = list(names)
        self.y = pd.Series(y, index=index, name=response)
        self.X = pd.DataFrame(X, index=index, columns=self.names)
        self.R = R
        self.nobs = n
        self.df_resid = df_resid
        self.rss = rss
        self.sigma = sigma
        self.coef = pd.Series(beta, index=self.names, name="coef")
        self.se = pd.Series(se, index=self.names, name="se")
        self.tvalues = pd.Series(t, index=self.names, name="t")
        self.pvalues = pd.Series(2 * stats.t.sf(np.abs(t), df_resid), index=self.names, name="p")
        self.vcov = pd.DataFrame(sigma**2 * XtX_inv, index=self.names, columns=self.names)
        self.fitted = pd.Series(fitted, index=index, name="fitted")
        self.residuals = pd.Series(resid, index=index, name="residuals")
        self.formula: str | None = None
        self.model_spec = None  # formulaic ModelSpec of the right-hand side (set by ols())

    # -- inference --------------------------------------------------------------------------
    def quantile(self, level: float = 0.95, quantile: str = "t") -> float:
        r"""The multiplier :math:`q` of a two-sided interval at ``level``.

        :math:`q = t_{n-p,\,(1+\text{level})/2}` for ``quantile="t"`` (exact when the errors
        are normal) or :math:`z_{(1+\text{level})/2}` for ``quantile="normal"`` (1.96 at
        95 %, the large-sample approximation).
        """
        if not 0 < level < 1:
            raise LmmInputError(f"level must be between 0 and 1 (exclusive), got {level!r}")
        if quantile == "t":
            return float(stats.t.ppf((1 + level) / 2, self.df_resid))
        if quantile == "normal":
            return float(stats.norm.ppf((1 + level) / 2))
        raise LmmInputError(f"quantile must be 't' or 'normal', got {quantile!r}")

    def conf_int(self, level: float = 0.95, quantile: str = "t") -> pd.DataFrame:
        r"""Confidence intervals :math:`\hat\beta_j \pm q\,\mathrm{se}_j` for the coefficients.

        Returns a DataFrame indexed by coefficient with columns ``lower`` and ``upper``; ``q``
        as in :meth:`quantile`.
        """
        q = self.quantile(level, quantile)
        return pd.DataFrame({"lower": self.coef - q * self.se, "upper": self.coef + q * self.se})

    def summary(self) -> pd.DataFrame:
        """The coefficient table, laid out like R's ``summary(lm(...))``."""
        return pd.DataFrame(
            {
                "Estimate": self.coef,
                "Std. Error": self.se,
                "t value": self.tvalues,
                "Pr(>|t|)": self.pvalues,
            }
        )

    def predict(
        self,
        newdata: pd.DataFrame | np.ndarray | None = None,
        interval: str | None = None,
        level: float = 0.95,
        quantile: str = "t",
    ) -> pd.DataFrame:
        r"""Fitted mean :math:`\hat\mu_0 = \mathbf x_0^\top\hat{\boldsymbol\beta}` at new rows,
        with an optional interval.

        Parameters
        ----------
        newdata : DataFrame or array, optional
            For a fit made by :func:`ols`, a data frame with the predictor columns of the
            formula. Otherwise a DataFrame with the columns of ``X`` or an (m, p) array.
            Default: the rows the model was fitted to.
        interval : {None, "confidence", "prediction"}
            ``"confidence"``: :math:`\hat\mu_0 \pm q\,\hat\sigma\sqrt{h_0}`, an interval for
            the mean line; ``"prediction"``: :math:`\hat\mu_0 \pm q\,\hat\sigma\sqrt{1+h_0}`,
            an interval for one new observation; with :math:`h_0 = \mathbf x_0^\top
            (\mathbf X^\top\mathbf X)^{-1}\mathbf x_0 = \lVert\mathbf R^{-\top}\mathbf x_0
            \rVert^2`.
        level : float
            Coverage of the interval (default 0.95).
        quantile : {"t", "normal"}
            Which distribution gives :math:`q` (see :meth:`quantile`).

        Returns
        -------
        pandas.DataFrame
            Column ``fit``; with an interval also ``se`` (the standard error the interval
            uses: :math:`\hat\sigma\sqrt{h_0}` or :math:`\hat\sigma\sqrt{1+h_0}`), ``lower``
            and ``upper``. Indexed like ``newdata``.
        """
        X0, index = self._new_matrix(newdata)
        out = pd.DataFrame({"fit": X0 @ self.coef.to_numpy()}, index=index)
        if interval is None:
            return out
        if interval not in ("confidence", "prediction"):
            raise LmmInputError(
                f"interval must be None, 'confidence' or 'prediction', got {interval!r}"
            )
        q = self.quantile(level, quantile)
        h0 = np.sum(linalg.solve_triangular(self.R, X0.T, trans="T") ** 2, axis=0)
        out["se"] = self.sigma * np.sqrt(h0 + (interval == "prediction"))
        out["lower"] = out["fit"] - q * out["se"]
        out["upper"] = out["fit"] + q * out["se"]
        return out

    def _new_matrix(self, newdata) -> tuple[np.ndarray, pd.Index]:
        if newdata is None:
            return self.X.to_numpy(), self.X.index
        if self.model_spec is not None:
            if not isinstance(newdata, pd.DataFrame):
                raise LmmInputError(
                    "newdata must be a pandas DataFrame with the predictor columns of "
                    f"{self.formula!r}, got {type(newdata).__name__}"
                )
            return _new_model_matrix(self.model_spec, newdata, self.names), newdata.index
        if isinstance(newdata, pd.DataFrame):
            missing = [c for c in self.names if c not in newdata.columns]
            if missing:
                raise LmmInputError(f"newdata lacks the model-matrix column(s) {missing}")
            X0 = _numeric_matrix(newdata[self.names], "newdata")
            return X0, newdata.index
        X0 = np.atleast_2d(np.asarray(newdata, dtype=float))
        if X0.shape[1] != len(self.names):
            raise LmmInputError(
                f"newdata has {X0.shape[1]} columns but the model has {len(self.names)} "
                f"coefficients ({', '.join(self.names)})"
            )
        return X0, pd.RangeIndex(X0.shape[0])

    def __repr__(self) -> str:
        head = f"OLS fit of {self.formula}" if self.formula else "OLS fit"
        return (
            f"{head}\n{self.summary().to_string(float_format=lambda v: f'{v:.6g}')}\n"
            f"Residual standard deviation: {self.sigma:.6g} on {self.df_resid} degrees of "
            f"freedom ({self.nobs} observations)"
        )


def ols(formula: str, data: pd.DataFrame, *, missing: str = "drop") -> OLS:
    """Fit a linear model given as a formula, e.g. ``"Reaction ~ Days"``, by least squares.

    The model matrix is built by formulaic with R's conventions: an intercept unless the
    formula says ``0 +`` or ``- 1``, treatment contrasts for categorical columns, ``a:b`` and
    ``a*b`` interactions. Coefficients get R's names: ``(Intercept)``, ``Days``,
    ``Subject309`` (level ``309`` of ``Subject``).

    Parameters
    ----------
    formula : str
        ``response ~ predictors``.
    data : pandas.DataFrame
        Numeric, boolean and categorical columns. A text column is used as categorical,
        except that a text column whose values all look like numbers (``"0"``, ``"1"``, ...)
        is an error unless the formula wraps it in ``C()``: it may be a numeric column read
        as text, and the two readings give different models.
    missing : {"drop", "raise"}
        What to do with rows that have a missing value in a column the formula uses:
        ``"drop"`` (default, like R's ``na.omit``) drops them with a warning that gives the
        count per column; ``"raise"`` raises an error. Infinite values are always an error.

    Returns
    -------
    OLS

    Examples
    --------
    >>> import lmmlib
    >>> fit = lmmlib.ols("Reaction ~ Days", lmmlib.datasets.sleepstudy())
    >>> round(fit.sigma, 2), fit.df_resid
    (47.71, 178)
    """
    if not isinstance(data, pd.DataFrame):
        raise LmmInputError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    if missing not in ("drop", "raise"):
        raise LmmInputError(f"missing must be 'drop' or 'raise', got {missing!r}")
    lhs, rhs = _parse(formula)
    used = sorted(lhs.required_variables | rhs.required_variables)
    absent = [v for v in used if v not in data.columns]
    if absent:
        raise FormulaError(
            f"column(s) {absent} of the formula {formula!r} not found in data; "
            f"available columns: {list(data.columns)}"
        )
    data = _drop_missing(data, used, missing)
    # Levels absent from the rows used carry no information (R's model.frame drops them too).
    data = data.assign(**{
        v: data[v].cat.remove_unused_categories()
        for v in used if isinstance(data[v].dtype, pd.CategoricalDtype)
    })
    _check_columns(data, used, response=sorted(lhs.required_variables), formula=formula)

    from formulaic import model_matrix
    from formulaic.errors import FormulaicError

    try:
        with np.errstate(all="ignore"):  # log(0) and the like: reported by _check_finite below
            mm = model_matrix(formula, data, na_action="ignore")
    except FormulaicError as err:
        raise FormulaError(f"cannot build the model matrix of {formula!r}: {err}") from None
    y = mm.lhs
    if y.shape[1] != 1 or not all(pd.api.types.is_numeric_dtype(t) for t in y.dtypes):
        raise LmmInputError(f"the response {str(lhs)!r} must be a single numeric column")
    X = mm.rhs
    _check_finite(X.to_numpy(dtype=float), list(X.columns), "the model matrix")
    fit = OLS(y.iloc[:, 0], X.set_axis(lme4_column_names(X, data), axis=1))
    fit.formula = formula
    fit.model_spec = X.model_spec
    return fit


# -- helpers: validation ----------------------------------------------------------------------
def _parse(formula: str):
    from formulaic import Formula
    from formulaic.errors import FormulaicError

    if not isinstance(formula, str) or "~" not in formula:
        raise FormulaError(f"a formula needs a response: 'response ~ predictors', got {formula!r}")
    try:
        parsed = Formula(formula)
        lhs, rhs = parsed.lhs, parsed.rhs
    except FormulaicError as err:
        raise FormulaError(f"cannot parse the formula {formula!r}: {err}") from None
    except AttributeError:
        raise FormulaError(
            f"a formula needs a response: 'response ~ predictors', got {formula!r}"
        ) from None
    return lhs, rhs


def _drop_missing(data: pd.DataFrame, used: list[str], missing: str) -> pd.DataFrame:
    na = data[used].isna()
    bad = na.any(axis=1)
    if not bad.any():
        return data
    counts = ", ".join(f"{c!r}: {int(k)}" for c, k in na.sum().items() if k)
    what = f"{int(bad.sum())} of {len(data)} rows with missing values (per column: {counts})"
    if missing == "raise":
        raise LmmInputError(f"{what}; drop them or pass missing='drop'")
    warnings.warn(f"dropped {what}", MissingValuesWarning, stacklevel=3)
    return data.loc[~bad]


def _check_columns(data: pd.DataFrame, used: list[str], response: list[str], formula: str) -> None:
    for name in used:
        col = data[name]
        numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
        if name in response and not numeric:
            raise LmmInputError(f"the response column {name!r} is not numeric (dtype {col.dtype})")
        if numeric:
            _check_finite(col.to_numpy(dtype=float), [name], "data")
        elif col.nunique() < 2:
            raise LmmInputError(
                f"column {name!r} has a single value ({col.iloc[0]!r}) in the {len(col)} rows "
                "used; a categorical predictor needs at least two levels"
            )
        elif isinstance(col.dtype, pd.CategoricalDtype) or pd.api.types.is_bool_dtype(col):
            continue
        elif pd.to_numeric(col, errors="coerce").notna().all() and not re.search(
            rf"\bC\(\s*{re.escape(name)}\s*[,)]", formula
        ):
            raise LmmInputError(
                f"column {name!r} holds numbers stored as text (dtype {col.dtype}): write "
                f"C({name}) in the formula (or convert it with .astype('category')) to use it "
                f"as categorical, or convert it with pd.to_numeric for a numeric predictor"
            )


def _check_finite(values: np.ndarray, names: list[str], where: str) -> None:
    values = values.reshape(len(values), -1)
    bad = ~np.isfinite(values)
    if bad.any():
        detail = ", ".join(
            f"{names[j]!r}: {int(k)} row(s)" for j, k in enumerate(bad.sum(axis=0)) if k
        )
        raise LmmInputError(f"non-finite values (inf or NaN) in {where}: {detail}")


def _numeric_matrix(X: pd.DataFrame, what: str) -> np.ndarray:
    for name, dtype in X.dtypes.items():
        if not pd.api.types.is_numeric_dtype(dtype):
            raise LmmInputError(f"column {name!r} of {what} is not numeric (dtype {dtype})")
    values = X.to_numpy(dtype=float)
    _check_finite(values, [str(c) for c in X.columns], what)
    return values


def _as_arrays(y, X, names):
    if isinstance(X, pd.DataFrame):
        names = [str(c) for c in X.columns] if names is None else list(names)
        index = X.index
        X = _numeric_matrix(X, "X")
    else:
        X = np.asarray(X)
        if X.ndim == 1:
            X = X[:, None]
        if X.ndim != 2:
            raise LmmInputError(f"X must be 2-dimensional, got shape {X.shape}")
        if not np.issubdtype(X.dtype, np.number) or np.issubdtype(X.dtype, np.complexfloating):
            raise LmmInputError(f"X must be numeric, got dtype {X.dtype}")
        names = [f"x{j}" for j in range(X.shape[1])] if names is None else list(names)
        index = y.index if isinstance(y, pd.Series) else pd.RangeIndex(X.shape[0])
        X = X.astype(float)
        _check_finite(X, names, "X")
    if len(names) != X.shape[1]:
        raise LmmInputError(f"{len(names)} names given for {X.shape[1]} columns of X")
    if isinstance(y, pd.DataFrame):
        if y.shape[1] != 1:
            raise LmmInputError(f"y must be one column, got {y.shape[1]}")
        y = y.iloc[:, 0]
    y_name = y.name if isinstance(y, pd.Series) else "y"
    if isinstance(y, pd.Series) and not pd.api.types.is_numeric_dtype(y):
        raise LmmInputError(f"the response {y_name!r} is not numeric (dtype {y.dtype})")
    y_arr = np.asarray(y)
    if not np.issubdtype(y_arr.dtype, np.number):
        raise LmmInputError(f"the response must be numeric, got dtype {y_arr.dtype}")
    y_arr = y_arr.astype(float).ravel()
    if y_arr.shape[0] != X.shape[0]:
        raise LmmInputError(f"y has {y_arr.shape[0]} rows but X has {X.shape[0]}")
    _check_finite(y_arr, [str(y_name)], "the response")
    return y_arr, X, names, index


def _check_rows(n: int, p: int) -> None:
    if p == 0:
        raise LmmInputError("the model has no coefficients (X has no columns)")
    if n <= p:
        raise LmmInputError(
            f"{n} row(s) for {p} coefficient(s): least squares needs more rows than "
            f"coefficients (at least {p + 1}) to estimate the residual variance"
        )


def _check_full_rank(X: np.ndarray, names: list[str]) -> None:
    """Raise if a column of X is (numerically) a linear combination of the columns before it.

    Columns are scaled to unit length; column j is aliased when the part of it orthogonal to
    the columns before it, |R_jj| of an unpivoted QR, is below ``ALIAS_TOL`` (as R's ``lm``).
    The message names each aliased column and the combination it equals.
    """
    norms = np.linalg.norm(X, axis=0)
    scaled = X / np.where(norms > 0, norms, 1.0)
    R = np.linalg.qr(scaled, mode="r")
    aliased = [j for j in range(X.shape[1]) if norms[j] == 0 or abs(R[j, j]) < ALIAS_TOL]
    if not aliased:
        return
    kept = [j for j in range(X.shape[1]) if j not in aliased]
    lines = []
    for j in aliased:
        before = [k for k in kept if k < j]
        if norms[j] == 0 or not before:
            lines.append(f"{names[j]!r} is all zeros")
            continue
        b, *_ = np.linalg.lstsq(X[:, before], X[:, j], rcond=None)
        combo = " + ".join(f"{b[i]:.4g}*{names[k]}" for i, k in enumerate(before)
                           if abs(b[i]) > 1e-8 * np.abs(b).max())
        lines.append(f"{names[j]!r} = {combo}")
    raise LmmInputError(
        f"the predictors are collinear: the model matrix has {len(kept)} independent columns "
        f"out of {X.shape[1]}; aliased column(s) {[names[j] for j in aliased]} "
        f"({'; '.join(lines)}); remove them from the model"
    )


def _new_model_matrix(spec, newdata: pd.DataFrame, names: list[str]) -> np.ndarray:
    """The model matrix of ``newdata`` with the columns, contrasts and levels of the fit."""
    from formulaic.errors import DataMismatchWarning

    needed = sorted(spec.required_variables)
    absent = [v for v in needed if v not in newdata.columns]
    if absent:
        raise LmmInputError(f"newdata lacks the column(s) {absent} used by the model")
    na = newdata[needed].isna().sum()
    if na.any():
        counts = ", ".join(f"{c!r}: {int(k)} row(s)" for c, k in na.items() if k)
        raise LmmInputError(f"newdata has missing values ({counts}); predictions need them all")
    # Only the levels present matter (formulaic re-codes against the fitted levels).
    newdata = newdata.assign(**{
        v: newdata[v].cat.remove_unused_categories()
        for v in needed if isinstance(newdata[v].dtype, pd.CategoricalDtype)
    })
    for factor, (kind, state) in spec.encoder_state.items():
        if getattr(kind, "value", kind) != "categorical":
            continue
        match = re.fullmatch(r"(?:C\()?\s*(\w+).*", factor)
        column = match.group(1) if match else None
        if column in newdata.columns:
            new = sorted(set(newdata[column].astype(str)) - {str(c) for c in state["categories"]})
            if new:
                raise LmmInputError(
                    f"newdata column {column!r} has level(s) {new} not seen in the fit"
                )
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataMismatchWarning)
        try:
            X0 = spec.get_model_matrix(newdata, na_action="ignore")
        except DataMismatchWarning as err:
            raise LmmInputError(f"newdata does not match the fitted model: {err}") from None
    X0 = X0.to_numpy(dtype=float)
    _check_finite(X0, names, "the model matrix of newdata")
    return X0
