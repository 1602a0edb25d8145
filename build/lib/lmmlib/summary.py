"""The printed summary of a fitted linear mixed model, laid out as lme4's ``summary()``.

>>> from lmmlib import datasets, lmer
>>> summary = lmer("Reaction ~ Days + (Days | Subject)", datasets.sleepstudy()).summary()
>>> summary.coefficients.round(3)
             Estimate  Std. Error  t value
(Intercept)   251.405       6.825   36.838
Days           10.467       1.546    6.771
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

from lmmlib.remat import group_labels

__all__ = ["LmmSummary", "percent_label", "singular_message"]


def percent_label(a: float) -> str:
    """R's name for the column of quantile ``a`` (as in ``confint``): 0.025 -> '2.5 %'.

    >>> percent_label(0.025), percent_label(0.975), percent_label(0.05)
    ('2.5 %', '97.5 %', '5 %')
    """
    return f"{100 * a:.3g} %"


def singular_message(groups) -> str:
    """The text of the singular-fit warning, naming the terms' labels (as in ``varcorr``).

    >>> singular_message(["Subject"])  # doctest: +NORMALIZE_WHITESPACE
    'boundary (singular) fit: the estimated covariance matrix of the random effects for
    Subject is singular (a standard deviation is near 0 or a correlation near +-1);
    see LinearMixedModel.singular'
    """
    which = ", ".join(map(str, groups)) or "some term"
    return (
        f"boundary (singular) fit: the estimated covariance matrix of the random effects for "
        f"{which} is singular (a standard deviation is near 0 or a correlation near +-1); "
        "see LinearMixedModel.singular"
    )


def _format_column(values, digits: int = 4) -> list[str]:
    """Format numbers as R prints a column: the smallest nonzero magnitude gets ``digits``
    significant digits and every entry the same number of decimals (e.g. 612.10, 35.07)."""
    values = np.asarray(values, dtype=float)
    finite = np.abs(values[np.isfinite(values) & (values != 0)])
    if finite.size == 0:
        return [f"{v:g}" for v in values]
    decimals = max(0, digits - 1 - int(np.floor(np.log10(finite.min()))))
    if decimals > 8 or finite.max() >= 1e10:
        return [f"{v:.{digits - 1}e}" for v in values]
    return [f"{v:.{decimals}f}" for v in values]


def _abbreviate(name: str, width: int = 6) -> str:
    """R's ``abbreviate``, simplified: drop lower-case vowels, then lower-case letters, from
    the right (never the first two characters) until ``name`` fits: '(Intercept)' -> '(Intr)'."""
    chars = list(name)
    for drop in ("aeiou", "abcdefghijklmnopqrstuvwxyz"):
        i = len(chars) - 1
        while len(chars) > width and i > 1:
            if chars[i] in drop:
                del chars[i]
            i -= 1
    return "".join(chars[:width])


def _table(rows: list[list[str]], align: list[str]) -> list[str]:
    """Format rows of strings as columns; ``align`` holds '<' or '>' per column."""
    widths = [max(len(r[c]) for r in rows) for c in range(len(align))]
    return [
        " ".join(f"{cell:{a}{w}}" for cell, a, w in zip(r, align, widths)).rstrip() for r in rows
    ]


class LmmSummary:
    """lme4-style summary of a fitted :class:`lmmlib.lmm.LinearMixedModel`.

    The pieces are available as data: ``coefficients`` (Estimate, Std. Error, t value),
    ``varcorr``, ``residual_quantiles`` (of the scaled residuals ``e / sigma``),
    ``fixef_correlation``; ``str(summary)`` is the text lme4 prints.
    """

    def __init__(self, fit):
        self.fit = fit
        self.coefficients = pd.DataFrame(
            {"Estimate": fit.fixef, "Std. Error": fit.se, "t value": fit.fixef / fit.se}
        )
        scaled = fit.residuals.to_numpy() / fit.sigma
        self.residual_quantiles = pd.Series(
            np.quantile(scaled, [0, 0.25, 0.5, 0.75, 1]), index=["Min", "1Q", "Median", "3Q", "Max"]
        )
        self.varcorr = fit.varcorr
        sd = fit.se.to_numpy()
        self.fixef_correlation = fit.vcov / np.outer(sd, sd)

    def _header(self) -> list[str]:
        fit = self.fit
        method = "REML" if fit.reml else "maximum likelihood "
        lines = [
            f"Linear mixed model fit by {method} ['lmerMod']",
            f"Formula: {fit.design.formula}",
            "",
        ]
        if fit.reml:
            lines.append(f"REML criterion at convergence: {fit.deviance:.1f}")
        else:
            head = ["AIC", "BIC", "logLik", "deviance", "df.resid"]
            values = [f"{v:.1f}" for v in (fit.aic, fit.bic, fit.loglik, fit.deviance)]
            lines += _table([head, [*values, str(fit.nobs - fit.npar)]], [">"] * 5)
        return lines

    def _random_effects(self) -> list[str]:
        fit = self.fit
        groups, names, variances, sds, corrs = [], [], [], [], []
        for label, term, T in zip(
            group_labels(fit.terms), fit.terms, fit.layout.templates(fit.theta)
        ):
            cov = fit.sigma**2 * (T @ T.T)
            sd = np.sqrt(np.diag(cov))
            for a, name in enumerate(term.names):
                groups.append(label if a == 0 else "")
                names.append(name)
                variances.append(cov[a, a])
                sds.append(sd[a])
                corrs.append(
                    " ".join(
                        f"{cov[a, c] / (sd[a] * sd[c]):5.2f}" if sd[a] * sd[c] > 0 else "  NaN"
                        for c in range(a)
                    )
                )
        groups.append("Residual")
        names.append("")
        variances.append(fit.sigma**2)
        sds.append(fit.sigma)
        corrs.append("")
        rows = [["Groups", "Name", "Variance", "Std.Dev.", "Corr"]]
        rows += [
            list(r)
            for r in zip(groups, names, _format_column(variances), _format_column(sds), corrs)
        ]
        lines = ["Random effects:"] + [
            " " + line for line in _table(rows, ["<", "<", ">", ">", "<"])
        ]
        counts = "; ".join(f"{g}, {n}" for g, n in fit.ngroups.items())
        lines.append(f"Number of obs: {fit.nobs}, groups:  {counts}")
        return lines

    def _fixed_effects(self) -> list[str]:
        coef = self.coefficients
        names = list(coef.index)
        if not names:
            return ["No fixed effect coefficients"]
        est_se = _format_column(np.r_[coef["Estimate"], coef["Std. Error"]])
        k = len(names)
        tval = [f"{t:.3f}" for t in coef["t value"]]
        rows = [["", "Estimate", "Std. Error", "t value"]]
        rows += [[nm, est_se[i], est_se[k + i], tval[i]] for i, nm in enumerate(names)]
        lines = ["Fixed effects:"] + _table(rows, ["<", ">", ">", ">"])
        if k > 1:
            corr = self.fixef_correlation.to_numpy()
            crow = [["", *[_abbreviate(nm) for nm in names[:-1]]]]
            for i, nm in enumerate(names[1:], start=1):
                crow.append([nm, *[f"{corr[i, j]:.3f}" if j < i else "" for j in range(k - 1)]])
            lines += ["", "Correlation of Fixed Effects:"] + _table(crow, ["<"] + [">"] * (k - 1))
        return lines

    def __str__(self) -> str:
        q = self.residual_quantiles
        quant = _table([list(q.index), [f"{v:.4f}" for v in q]], [">"] * 5)
        lines = self._header() + ["", "Scaled residuals:"] + quant + [""]
        lines += self._random_effects() + [""] + self._fixed_effects()
        if self.fit.singular:
            lines += ["", singular_message(self.fit.singular_groups)]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(str(self))}</pre>"
