"""Errors and warnings raised by lmmlib.

Every problem with a user's input is reported with an :class:`LmmInputError` (a
``ValueError``) whose message names the offending column, level or row count, so that a reader
never has to decode a traceback from deep inside numpy.

>>> issubclass(FormulaError, ValueError)
True
"""


class LmmInputError(ValueError):
    """The data or the arguments given to a model cannot be used as they are."""


class FormulaError(LmmInputError):
    """A model formula is malformed or refers to something that does not exist."""


class MissingValuesWarning(UserWarning):
    """Rows with missing values were dropped before fitting (lme4's ``na.omit``)."""


class RankDeficiencyWarning(UserWarning):
    """Columns of the fixed-effects model matrix were dropped because they were collinear."""


class ConvergenceWarning(UserWarning):
    """The optimizer stopped without meeting its convergence criterion."""


class SingularFitWarning(UserWarning):
    """The fit lies on the boundary: a variance is (near) zero or a correlation is +-1."""


__all__ = ["LmmInputError", "FormulaError", "MissingValuesWarning", "RankDeficiencyWarning",
           "ConvergenceWarning", "SingularFitWarning"]
