"""lmmlib.plotting's group helpers draw what they claim: the right panels, the right lines."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from matplotlib import pyplot as plt

from lmmlib import datasets
from lmmlib.plotting import least_squares_line, panels_by_group, scatter_by_group


def test_least_squares_line_matches_polyfit():
    rng = np.random.default_rng(1)
    x = rng.normal(size=50)
    y = 2.0 - 0.7 * x + rng.normal(size=50)
    slope, intercept = np.polyfit(x, y, 1)
    assert least_squares_line(x, y) == pytest.approx((intercept, slope), rel=1e-12)


def test_least_squares_line_needs_two_distinct_x():
    with pytest.raises(ValueError, match="two distinct x"):
        least_squares_line([1.0, 1.0, 1.0], [0.0, 1.0, 2.0])


def test_panels_by_group_one_panel_per_subject_with_its_own_line():
    sleep = datasets.sleepstudy()
    order = list(reversed(sleep["Subject"].cat.categories))
    fig = panels_by_group(sleep, "Days", "Reaction", "Subject", order=order, reference=(250.0, 10.0))
    assert [ax.get_title() for ax in fig.axes] == [str(s) for s in order]
    # The last line of each panel is that subject's least-squares line: check its end points.
    rows = sleep[sleep["Subject"] == order[0]]
    slope, intercept = np.polyfit(rows["Days"], rows["Reaction"], 1)
    xd, yd = fig.axes[0].lines[-1].get_data()
    np.testing.assert_allclose(yd, intercept + slope * np.asarray(xd), rtol=1e-10)
    np.testing.assert_allclose(xd, [0.0, 9.0])
    # The reference line is the same in every panel.
    ref = fig.axes[5].lines[0].get_ydata()
    np.testing.assert_allclose(ref, [250.0, 340.0])
    plt.close(fig)


def test_panels_by_group_rejects_incomplete_order_and_missing_column():
    sleep = datasets.sleepstudy()
    with pytest.raises(ValueError, match="missing"):
        panels_by_group(sleep, "Days", "Reaction", "Subject", order=["308", "309"])
    with pytest.raises(ValueError, match="Reactions"):
        panels_by_group(sleep, "Days", "Reactions", "Subject")


def test_scatter_by_group_pooled_line_runs_against_group_lines():
    df = pd.DataFrame(
        {"a": [0.0, 1.0, 3.0, 4.0], "b": [3.0, 4.0, 0.0, 1.0], "g": ["u", "u", "v", "v"]}
    )
    ax = scatter_by_group(df, "a", "b", "g")
    slopes = []
    for line in ax.lines:
        xd, yd = (np.asarray(v, dtype=float) for v in line.get_data())
        slopes.append((yd[1] - yd[0]) / (xd[1] - xd[0]))
    assert slopes[:2] == pytest.approx([1.0, 1.0])  # within each group: +1
    assert slopes[2] == pytest.approx(np.polyfit(df["a"], df["b"], 1)[0])
    assert slopes[2] < 0  # pooled: negative
    plt.close(ax.figure)
