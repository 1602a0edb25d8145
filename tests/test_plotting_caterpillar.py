"""lmmlib.plotting.caterpillar: the conditional modes and intervals it draws are the data's."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from matplotlib import pyplot as plt

from lmmlib.plotting import caterpillar


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "grpvar": "g",
            "term": ["(Intercept)"] * 3 + ["x"] * 3,
            "grp": ["a", "b", "c"] * 2,
            "condval": [2.0, -1.0, 0.5, 0.1, 0.3, -0.2],
            "condsd": [1.0, 1.0, 1.0, 0.5, 0.5, 0.5],
        }
    )


def test_levels_ordered_by_the_chosen_term_and_intervals_are_z_times_sd(frame):
    fig = caterpillar(frame, order_by="x", level=0.95)
    assert [ax.get_title() for ax in fig.axes] == ["(Intercept)", "x"]
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["c", "a", "b"]  # x modes: c -0.2 < a 0.1 < b 0.3
    # the error bars of the x panel: one segment per level, half-width 1.96 * 0.5
    segments = fig.axes[1].collections[0].get_segments()
    half_widths = sorted((seg[1][0] - seg[0][0]) / 2 for seg in segments)
    np.testing.assert_allclose(half_widths, 1.959964 * 0.5, rtol=1e-6)
    plt.close(fig)


def test_bad_input_is_named(frame):
    with pytest.raises(ValueError, match="condsd"):
        caterpillar(frame.drop(columns="condsd"))
    with pytest.raises(ValueError, match="order_by"):
        caterpillar(frame, order_by="z")
    with pytest.raises(ValueError, match="several grouping factors"):
        caterpillar(frame.assign(grpvar=["g", "h"] * 3))
    with pytest.raises(TypeError, match="DataFrame"):
        caterpillar(frame.to_numpy())
