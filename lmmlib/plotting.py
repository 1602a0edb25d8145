"""Plotting helpers: one theme for every figure of the book.

Call :func:`set_theme` once at the top of a chapter; later helpers draw the recurring figures
(data by subject, fitted lines with bands) the same way everywhere.
"""

from __future__ import annotations

import matplotlib as mpl
import seaborn as sns

__all__ = ["set_theme", "PALETTE"]

#: Colour-blind-safe palette used throughout the book (seaborn's "colorblind").
PALETTE = sns.color_palette("colorblind")


def set_theme() -> None:
    """Apply the book's figure style: seaborn's whitegrid, colour-blind palette, crisp output."""
    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE)
    mpl.rcParams.update(
        {
            "figure.dpi": 110,
            "savefig.dpi": 110,
            "figure.figsize": (6.4, 4.0),
            "axes.titlesize": "medium",
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    )
