"""Plotting helpers: one theme for every figure of the book.

Call :func:`set_theme` once at the top of a chapter; later helpers draw the recurring figures
(data by subject, fitted lines with bands) the same way everywhere.
"""

from __future__ import annotations

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import pyplot as plt
from matplotlib.ticker import MaxNLocator

__all__ = ["set_theme", "PALETTE"]

#: Colour-blind-safe palette used throughout the book (seaborn's "colorblind").
PALETTE = sns.color_palette("colorblind")


def set_theme() -> None:
    """Apply the book's figure style: seaborn's whitegrid, colour-blind palette, crisp output.

    Figures are drawn on an opaque white background (readable on the site's dark theme too)
    and, in a notebook, sent as PNG at twice the display resolution ("retina"), so they stay
    sharp on high-DPI screens and when a phone zooms in.
    """
    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE)
    _retina_figures()
    mpl.rcParams.update(
        {
            "figure.facecolor": "white",
            "savefig.facecolor": "white",
            "savefig.transparent": False,
            "figure.dpi": 110,
            "savefig.dpi": 220,
            "figure.figsize": (6.4, 4.0),
            "axes.titlesize": "medium",
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    )


def _retina_figures() -> None:
    """In IPython/Jupyter, emit figures as 2x PNG (shown at 1x size); elsewhere do nothing."""
    try:
        from IPython import get_ipython
        from matplotlib_inline.backend_inline import set_matplotlib_formats
    except ImportError:
        return
    if get_ipython() is not None:
        set_matplotlib_formats("retina")


# --- Data by group (chapter 1): one panel per subject; points coloured by batch ------------

__all__ += ["panels_by_group", "scatter_by_group", "least_squares_line"]


def least_squares_line(x, y) -> tuple[float, float]:
    """Intercept and slope of the least-squares line of ``y`` on ``x``.

    ``slope = sum((x - xbar) (y - ybar)) / sum((x - xbar)^2)`` and
    ``intercept = ybar - slope * xbar`` (the simple-regression formulas; chapter 2 derives them).

    >>> least_squares_line([0, 1, 2], [1.0, 3.0, 5.0])
    (1.0, 2.0)
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-D of equal length, got shapes {x.shape} and {y.shape}")
    sxx = np.sum((x - x.mean()) ** 2)
    if x.size < 2 or sxx == 0:
        raise ValueError(f"a line needs at least two distinct x values, got {np.unique(x).size}")
    slope = float(np.sum((x - x.mean()) * (y - y.mean())) / sxx)
    return float(y.mean() - slope * x.mean()), slope


def _check_group_data(data: pd.DataFrame, columns: list[str], group: str, order) -> list:
    """Validate the columns and return the group levels to draw, in order."""
    if not isinstance(data, pd.DataFrame):
        raise TypeError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    missing = [c for c in columns if c not in data.columns]
    if missing:
        raise ValueError(f"data has no column(s) {missing}; it has {list(data.columns)}")
    col = data[group]
    if isinstance(col.dtype, pd.CategoricalDtype):
        levels = [lev for lev in col.cat.categories if (col == lev).any()]
    else:
        levels = list(pd.unique(col))
    if order is None:
        return levels
    order = list(order)
    unknown = [lev for lev in order if lev not in levels]
    left_out = [lev for lev in levels if lev not in order]
    if unknown or left_out:
        raise ValueError(
            f"order must list every level of {group!r} once: unknown {unknown}, missing {left_out}"
        )
    return order


def panels_by_group(
    data: pd.DataFrame,
    x: str,
    y: str,
    group: str,
    *,
    order=None,
    ncols: int = 6,
    fit_lines: bool = True,
    reference: tuple[float, float] | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    panel_size: tuple[float, float] = (1.65, 1.55),
):
    """One small panel per level of ``group``: its points and, optionally, its own line.

    Every panel shares both axes, so groups can be compared by eye (a "trellis" or
    small-multiples plot, as in lme4's figures of the sleepstudy data). With ``fit_lines``
    each panel shows the least-squares line of that group alone; ``reference`` =
    ``(intercept, slope)`` adds the same dashed grey line to every panel (e.g. the line
    fitted to all groups pooled).

    Returns the matplotlib Figure; ``fig.axes[i]`` is the panel of ``order[i]``.

    >>> import lmmlib
    >>> fig = panels_by_group(lmmlib.datasets.sleepstudy(), "Days", "Reaction", "Subject")
    >>> len(fig.axes), fig.axes[0].get_title()
    (18, '308')
    >>> plt.close(fig)
    """
    levels = _check_group_data(data, [x, y, group], group, order)
    nrows = int(np.ceil(len(levels) / ncols))
    fig, axes = plt.subplots(
        nrows, ncols, sharex=True, sharey=True, squeeze=False,
        figsize=(panel_size[0] * ncols, panel_size[1] * nrows),
    )
    xs_all = data[x].to_numpy(dtype=float)
    grid = np.linspace(xs_all.min(), xs_all.max(), 2)
    for ax, level in zip(axes.flat, levels):
        rows = data[data[group] == level]
        gx, gy = rows[x].to_numpy(dtype=float), rows[y].to_numpy(dtype=float)
        if reference is not None:
            ax.plot(grid, reference[0] + reference[1] * grid, ls="--", lw=1, color="0.55")
        ax.plot(gx, gy, "o", ms=3.2, color=PALETTE[0], alpha=0.85)
        if fit_lines:
            a, b = least_squares_line(gx, gy)
            ax.plot(grid, a + b * grid, lw=1.6, color=PALETTE[3])
        ax.set_title(str(level), fontsize="medium", pad=2)
        ax.tick_params(labelsize="medium")
        ax.yaxis.set_major_locator(MaxNLocator(3))
    for ax in axes.flat[len(levels):]:
        ax.remove()
    fig.supxlabel(xlabel or x, fontsize="large")
    fig.supylabel(ylabel or y, fontsize="large")
    fig.tight_layout(pad=0.6)
    return fig


def scatter_by_group(
    data: pd.DataFrame,
    x: str,
    y: str,
    group: str,
    *,
    order=None,
    ax=None,
    group_lines: bool = True,
    pooled_line: bool = True,
    xlabel: str | None = None,
    ylabel: str | None = None,
):
    """Scatter plot coloured by ``group``, with each group's own least-squares line and,
    dashed in black, the line fitted to all points pooled.

    The picture of Simpson's paradox: when groups (batches, subjects) differ in their means,
    the pooled line can run against every within-group line.

    Returns the Axes.

    >>> df = pd.DataFrame({"a": [0, 1, 2, 3], "b": [1.0, 2.0, 0.0, 1.0], "g": list("xxyy")})
    >>> ax = scatter_by_group(df, "a", "b", "g")
    >>> len(ax.lines)  # two group lines and the pooled line
    3
    >>> plt.close(ax.figure)
    """
    levels = _check_group_data(data, [x, y, group], group, order)
    if ax is None:
        _, ax = plt.subplots()
    for i, level in enumerate(levels):
        rows = data[data[group] == level]
        gx, gy = rows[x].to_numpy(dtype=float), rows[y].to_numpy(dtype=float)
        colour = PALETTE[i % len(PALETTE)]
        ax.scatter(gx, gy, s=18, color=colour, alpha=0.75, label=str(level), edgecolor="none")
        if group_lines:
            a, b = least_squares_line(gx, gy)
            grid = np.array([gx.min(), gx.max()])
            ax.plot(grid, a + b * grid, color=colour, lw=2)
    if pooled_line:
        px, py = data[x].to_numpy(dtype=float), data[y].to_numpy(dtype=float)
        a, b = least_squares_line(px, py)
        grid = np.array([px.min(), px.max()])
        ax.plot(grid, a + b * grid, color="black", ls="--", lw=2, label="all pooled")
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel or y)
    return ax


# --- Lines with interval bands (chapter 2): a fitted line and its confidence/prediction band -

__all__ += ["line_with_band"]


def line_with_band(
    ax,
    x,
    frame: pd.DataFrame,
    *,
    color=None,
    label: str | None = None,
    alpha: float = 0.25,
    band: str = "fill",
    lw: float = 2.0,
):
    """Draw a fitted line and its interval band on ``ax``.

    ``frame`` holds the columns ``fit``, ``lower`` and ``upper`` at the points ``x``, as
    returned by ``lmmlib.OLS.predict(newdata, interval=...)``. The band is shaded
    (``band="fill"``) or drawn as two thin dashed lines (``band="lines"``), so that two bands
    can be told apart on one axes.

    Returns the Line2D of the fitted line.

    >>> import pandas as pd
    >>> fig, ax = plt.subplots()
    >>> f = pd.DataFrame({"fit": [1.0, 2.0], "lower": [0.5, 1.5], "upper": [1.5, 2.5]})
    >>> line = line_with_band(ax, [0, 1], f, label="fit")
    >>> line.get_label(), len(ax.collections)
    ('fit', 1)
    >>> plt.close(fig)
    """
    missing = [c for c in ("fit", "lower", "upper") if c not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks column(s) {missing}; it has {list(frame.columns)}")
    if band not in ("fill", "lines"):
        raise ValueError(f"band must be 'fill' or 'lines', got {band!r}")
    x = np.asarray(x, dtype=float)
    if x.shape != (len(frame),):
        raise ValueError(f"x has shape {x.shape} but frame has {len(frame)} rows")
    (line,) = ax.plot(x, frame["fit"], color=color, lw=lw, label=label)
    color = line.get_color()
    if band == "fill":
        ax.fill_between(x, frame["lower"], frame["upper"], color=color, alpha=alpha, lw=0)
    else:
        ax.plot(x, frame["lower"], color=color, lw=1.2, ls="--")
        ax.plot(x, frame["upper"], color=color, lw=1.2, ls="--")
    return line


# --- Conditional modes (chapter 3): a "caterpillar plot" of random effects with intervals ---

__all__ += ["caterpillar"]


def caterpillar(frame: pd.DataFrame, *, order_by: str | None = None, level: float = 0.95,
                color=None, panel_size: tuple[float, float] = (3.2, 4.2)):
    """Conditional modes of random effects with intervals, one panel per term.

    ``frame`` is a long table with the columns ``term``, ``grp``, ``condval`` and ``condsd``
    (as returned by ``LinearMixedModel.ranef_frame()``) for one grouping factor. Each level
    is drawn as ``condval +- z condsd`` with ``z`` the normal quantile of ``level`` (1.96 at
    95 %); levels are ordered by their mode for the term ``order_by`` (default: the first
    term), the same order in every panel. A vertical line marks 0, the population value.

    Returns the matplotlib Figure; ``fig.axes[j]`` is the panel of the j-th term.

    >>> f = pd.DataFrame({"term": ["a", "a", "b", "b"], "grp": ["g1", "g2", "g1", "g2"],
    ...                   "condval": [1.0, -1.0, 0.5, 0.2], "condsd": [0.3, 0.3, 0.1, 0.1]})
    >>> fig = caterpillar(f)
    >>> [ax.get_title() for ax in fig.axes], fig.axes[0].get_yticklabels()[0].get_text()
    (['a', 'b'], 'g2')
    >>> plt.close(fig)
    """
    from scipy import stats

    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"frame must be a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in ("term", "grp", "condval", "condsd") if c not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks column(s) {missing}; it has {list(frame.columns)}")
    if "grpvar" in frame.columns and frame["grpvar"].nunique() > 1:
        raise ValueError(
            "frame holds several grouping factors "
            f"{sorted(frame['grpvar'].unique())}; select one before plotting"
        )
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level!r}")
    terms = list(pd.unique(frame["term"]))
    order_by = terms[0] if order_by is None else order_by
    if order_by not in terms:
        raise ValueError(f"order_by={order_by!r} is not a term of frame; terms are {terms}")
    z = stats.norm.ppf(0.5 + level / 2)
    key = frame[frame["term"] == order_by].set_index("grp")["condval"].sort_values()
    position = {grp: k for k, grp in enumerate(key.index)}
    fig, axes = plt.subplots(1, len(terms), sharey=True, squeeze=False,
                             figsize=(panel_size[0] * len(terms), panel_size[1]))
    for ax, term in zip(axes.flat, terms):
        rows = frame[frame["term"] == term]
        ypos = rows["grp"].map(position).to_numpy(dtype=float)
        ax.axvline(0.0, color="0.5", lw=1, ls="--")
        ax.errorbar(rows["condval"], ypos, xerr=z * rows["condsd"].to_numpy(), fmt="o", ms=3.5,
                    color=color or PALETTE[0], elinewidth=1.2, capsize=0)
        ax.set_title(str(term))
        ax.set_yticks(range(len(key)), [str(g) for g in key.index])
        ax.tick_params(axis="y", labelsize="small")
    fig.tight_layout()
    return fig


# --- Shrinkage (chapter 6): arrows from no pooling to partial pooling, covariance ellipses ---

__all__ += ["covariance_ellipse", "pooling_arrows"]


def covariance_ellipse(ax, mean, cov, *, level: float = 0.95, **kwargs):
    r"""Draw the ellipse :math:`\{\mathbf x: (\mathbf x - \boldsymbol\mu)^\top\boldsymbol
    \Sigma^{-1}(\mathbf x - \boldsymbol\mu) = \chi^2_{2,\text{level}}\}` on ``ax``: the region
    that holds ``level`` of a bivariate normal distribution with mean ``mean`` and covariance
    ``cov`` (e.g. the random intercepts and slopes of a fitted model around its fixed effects).

    Keyword arguments go to ``ax.plot``.  Returns the Line2D.

    >>> fig, ax = plt.subplots()
    >>> line = covariance_ellipse(ax, [0, 0], [[4.0, 0.0], [0.0, 1.0]], level=0.5)
    >>> x, y = line.get_data()
    >>> bool(np.allclose(x**2 / 4 + y**2, 2 * np.log(2)))  # chi2_2 quantile: -2 log(1 - p)
    True
    >>> plt.close(fig)
    """
    from scipy import stats

    mean = np.asarray(mean, dtype=float)
    cov = np.asarray(cov, dtype=float)
    if mean.shape != (2,) or cov.shape != (2, 2):
        raise ValueError(f"need a mean of length 2 and a 2 x 2 covariance, got {mean.shape} "
                         f"and {cov.shape}")
    if not np.allclose(cov, cov.T) or np.any(np.linalg.eigvalsh(cov) < 0):
        raise ValueError("cov must be symmetric and positive semi-definite")
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level!r}")
    values, vectors = np.linalg.eigh(cov)
    angle = np.linspace(0, 2 * np.pi, 200)
    circle = np.vstack([np.cos(angle), np.sin(angle)])
    radius = np.sqrt(stats.chi2.ppf(level, 2))
    points = mean[:, None] + radius * vectors @ (np.sqrt(values)[:, None] * circle)
    kwargs.setdefault("color", "0.3")
    kwargs.setdefault("lw", 1.2)
    (line,) = ax.plot(points[0], points[1], **kwargs)
    return line


def pooling_arrows(table: pd.DataFrame, x: str, y: str, *, ax=None, center=None, cov=None,
                   level: float = 0.95, label_groups: bool = False):
    """Arrows in the plane of two terms, from each group's own estimate (no pooling) to its
    mixed-model estimate (partial pooling), as in ``lmmlib.shrinkage.pooling(fit)``.

    ``table`` has the columns ``group, term, no_pooling, partial_pooling`` (and
    ``complete_pooling``, marked by a cross). ``center`` (the fixed effects of the two terms)
    is marked by a black dot and, with ``cov`` (their random-effects covariance), the
    ``level`` ellipse of the fitted population of groups is drawn around it
    (:func:`covariance_ellipse`). Groups whose own estimate is missing get no arrow.

    Returns the Axes.

    >>> t = pd.DataFrame({"group": ["a", "a", "b", "b"], "term": ["i", "s", "i", "s"],
    ...                   "no_pooling": [1.0, 2.0, -1.0, 0.0], "complete_pooling": 0.5,
    ...                   "partial_pooling": [0.8, 1.5, -0.6, 0.2]})
    >>> ax = pooling_arrows(t, "i", "s", center=[0.1, 0.9], cov=[[1, 0.2], [0.2, 1]])
    >>> len(ax.texts), len(ax.lines)  # two arrows; ellipse, centre, complete pooling
    (2, 3)
    >>> plt.close(ax.figure)
    """
    missing = [c for c in ("group", "term", "no_pooling", "partial_pooling")
               if c not in table.columns]
    if missing:
        raise ValueError(f"table lacks column(s) {missing}; it has {list(table.columns)}")
    terms = set(table["term"])
    if x not in terms or y not in terms:
        raise ValueError(f"x and y must be terms of the table, which has {sorted(terms)}")
    if ax is None:
        _, ax = plt.subplots()
    wide = table.pivot(index="group", columns="term")
    own_x, own_y = wide[("no_pooling", x)], wide[("no_pooling", y)]
    part_x, part_y = wide[("partial_pooling", x)], wide[("partial_pooling", y)]
    ok = own_x.notna() & own_y.notna()
    ax.scatter(own_x[ok], own_y[ok], s=16, color=PALETTE[3], zorder=3, label="no pooling")
    ax.scatter(part_x, part_y, s=16, color=PALETTE[0], zorder=3, label="partial pooling")
    for g in wide.index[ok.to_numpy()]:
        ax.annotate("", xy=(part_x[g], part_y[g]), xytext=(own_x[g], own_y[g]),
                    arrowprops={"arrowstyle": "->", "color": "0.45", "lw": 0.9})
        if label_groups:
            ax.annotate(str(g), (own_x[g], own_y[g]), fontsize="x-small",
                        xytext=(3, 3), textcoords="offset points")
    if cov is not None and center is not None:
        covariance_ellipse(ax, center, cov, level=level, ls="--",
                           label=f"{level:.0%} of the fitted population")
    if "complete_pooling" in table.columns:
        first = table.drop_duplicates("term").set_index("term")["complete_pooling"]
        ax.plot(first[x], first[y], "X", color=PALETTE[2], ms=9, zorder=4,
                label="complete pooling")
    if center is not None:  # drawn last: in a balanced design it sits on complete pooling
        ax.plot(*center, "o", color="black", ms=4, zorder=5, label="fixed effects")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    return ax
