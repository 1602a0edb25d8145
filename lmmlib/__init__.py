"""lmmlib: linear mixed models from scratch.

The library that the chapters of *Mixed Models from Scratch* import. Each module holds one
concept of the book: ``datasets`` (the data), ``ols`` (chapter 2), the mixed-model engine
(chapter 3), and ``plotting`` (one theme for every figure).
"""

from lmmlib import datasets
from lmmlib.anova import anova
from lmmlib.bootstrap import bootstrap, bootstrap_many
from lmmlib.bayes import BayesianMixedModel, blmer
from lmmlib.lmm import LinearMixedModel, lmer
from lmmlib.ols import OLS, ols

__version__ = "0.1.0"
__all__ = ["datasets", "ols", "OLS", "lmer", "LinearMixedModel", "anova", "bootstrap",
           "bootstrap_many", "blmer", "BayesianMixedModel"]
