"""lmmlib: linear mixed models from scratch.

The library that the chapters of *Mixed Models from Scratch* import. Each module holds one
concept of the book: ``datasets`` (the data), ``ols`` (chapter 2), the mixed-model engine
(chapter 3, with ``inference`` for its t and F tests), ``bootstrap`` (chapter 4), ``bayes``
(chapter 5), ``shrinkage`` (chapter 6), ``genetics`` and ``heritability`` (chapter 7), and
``plotting`` (one theme for every figure).
"""

from lmmlib import datasets, genetics, inference, shrinkage
from lmmlib.anova import anova, drop1
from lmmlib.bootstrap import bootstrap, bootstrap_many
from lmmlib.bayes import BayesianMixedModel, blmer
from lmmlib.diagnostics import cooks_distance, hatvalues
from lmmlib.effects import coef, fixef
from lmmlib.heritability import GremlFit, eigen_relationship, greml
from lmmlib.lmm import LinearMixedModel, lmer
from lmmlib.ols import OLS, ols

__version__ = "0.1.0"
__all__ = [
    "datasets", "ols", "OLS", "lmer", "LinearMixedModel", "anova", "drop1", "coef", "fixef",
    "hatvalues", "cooks_distance", "inference", "bootstrap", "bootstrap_many", "blmer",
    "BayesianMixedModel", "shrinkage",
    "genetics", "greml", "GremlFit", "eigen_relationship",
]
