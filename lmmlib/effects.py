"""lme4's extractors of the fixed and per-group effects: ``fixef(fit, add.dropped)`` and
``coef(fit)``.

``coef(fit)`` gives, for each grouping factor and each of its levels j, the coefficients of
the model for that level: the fixed effects plus the level's conditional modes,
``beta_a + b_ja`` for a column ``a`` that has a random effect and ``beta_a`` for the others
(lme4's ``coefMer``).  A random-effect column with no fixed effect is added with fixed part 0,
placed before the fixed effects, as lme4 does.  These are the shrunken per-group lines of a
partial-pooling model.

>>> from lmmlib import datasets, lmer
>>> fit = lmer("Reaction ~ Days + (Days | Subject)", datasets.sleepstudy())
>>> coef(fit)["Subject"].loc["308"].round(3).tolist()
[253.664, 19.666]
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["coef", "fixef"]


def fixef(fit, add_dropped: bool = False) -> pd.Series:
    """The fixed effects; with ``add_dropped`` the columns dropped for rank deficiency come
    back in their places with the value NaN (lme4's ``fixef(fit, add.dropped = TRUE)``, NA).

    >>> import pandas as pd
    >>> from lmmlib import datasets, lmer
    >>> import warnings
    >>> sleep = datasets.sleepstudy().assign(Days2=lambda d: 2 * d["Days"])
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     fit = lmer("Reaction ~ Days + Days2 + (1 | Subject)", sleep)
    >>> fixef(fit, add_dropped=True).index.tolist()
    ['(Intercept)', 'Days', 'Days2']
    """
    beta = fit.fixef.copy()
    names = getattr(fit.design, "all_fixef_names", None)
    if not add_dropped or names is None:
        return beta
    return beta.reindex(names)


def coef(fit) -> dict[str, pd.DataFrame]:
    """Per grouping factor, a DataFrame (levels x coefficients) of fixed plus random effects
    (lme4's ``coef()``; see the module docstring)."""
    beta = fit.fixef
    out = {}
    for group, ranef in fit.ranef.items():
        extra = [c for c in ranef.columns if c not in beta.index]
        base = pd.concat([pd.Series(0.0, index=extra), beta]) if extra else beta
        table = pd.DataFrame(np.tile(base.to_numpy(), (len(ranef), 1)), index=ranef.index,
                             columns=base.index)
        for column in ranef.columns:
            table[column] += ranef[column].to_numpy()
        out[group] = table
    return out
