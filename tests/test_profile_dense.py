"""Profile intervals of the variance parameters checked with an independent dense likelihood.

At each end of a profile interval the profiled deviance must equal the chi-square cut-off:
``min_{others} d(phi = end) - d_hat = qchisq(0.95, 1)``.  The check minimises the ML deviance
``log|V| + r'V^{-1}r + n log(2 pi)`` (V = Z (I ⊗ Sigma_b) Z' + sigma^2 I, beta by GLS), written
here from scratch with the n x n V, over the other parameters from a grid of starts that
includes the boundary (a standard deviation of 0, correlations of +-0.9); for a fixed effect,
over all four variance parameters with the other fixed effect by GLS.  A deficit means
lmmlib's inner minimisation stopped early (the bugs of issue 7: a sigma interval too short at
its upper end, a correlation interval short of [-1, 1]).  At an end on the parameter's bound
(an SD of 0, a correlation of +-1) the dense deviance there must be within the cut-off.
"""

import itertools
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

from lmmlib import datasets, lmer

CUT2 = float(stats.chi2.ppf(0.95, 1))
NAMES = ["sd0", "cor", "sd1", "sigma"]


def issue7_design(seed):
    """27 groups of 4 observations at x = 8, 10, 12, 14 (issue 7's reproducer)."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(27), 4)
    x = np.tile([8.0, 10.0, 12.0, 14.0], 27)
    b0 = rng.normal(0, 2.1, 27)[g]
    b1 = rng.normal(0, 0.15, 27)[g]
    y = 17 + 0.66 * x + b0 + b1 * x + rng.normal(0, 1.3, len(g))
    return pd.DataFrame({"y": y, "x": x, "g": [f"g{i:02d}" for i in g]})


class DenseSlopes:
    """ML deviance of ``y ~ x + (x | g)`` from the marginal covariance, written out densely
    for each group (V is block diagonal: ``V_g = Z_g Sigma_b Z_g' + sigma^2 I``; balanced
    designs, so the groups' blocks are stacked in arrays)."""

    def __init__(self, data, response, x, group):
        data = data.sort_values(group, kind="stable")
        sizes = data.groupby(group).size()
        assert sizes.nunique() == 1, "the dense check is written for equal group sizes"
        k, m = len(sizes), int(sizes.iloc[0])
        xv = data[x].to_numpy(float).reshape(k, m)
        self.y = data[response].to_numpy(float).reshape(k, m)
        self.X = np.stack([np.ones((k, m)), xv], axis=2)  # (k, m, 2); Z_g = X_g here
        self.n = k * m
        self.eye = np.eye(m)

    def deviance(self, sd0, cor, sd1, sigma, fixed=None):
        """-2 log-likelihood, beta by GLS; ``fixed = (j, value)`` holds beta_j at value."""
        S = np.array([[sd0**2, cor * sd0 * sd1], [cor * sd0 * sd1, sd1**2]])
        V = self.X @ S @ np.swapaxes(self.X, 1, 2) + sigma**2 * self.eye
        c = np.linalg.cholesky(V)
        Xs = np.linalg.solve(c, self.X)
        ys = np.linalg.solve(c, self.y[..., None])[..., 0]
        if fixed is not None:
            j, value = fixed
            ys = ys - value * Xs[..., j]
            Xs = np.delete(Xs, j, axis=2)
        XtX = np.einsum("gia,gib->ab", Xs, Xs)
        Xty = np.einsum("gia,gi->a", Xs, ys)
        beta = np.linalg.solve(XtX, Xty)
        r = ys - Xs @ beta
        logdet = 2 * np.log(np.diagonal(c, axis1=1, axis2=2)).sum()
        return logdet + np.sum(r * r) + self.n * np.log(2 * np.pi)

    def minimum(self, held: str, value: float, estimates: dict) -> float:
        """min of the deviance over the other parameters, from a grid of starts; ``held`` is
        a variance parameter or "beta0" / "beta1" (then all four variance parameters are
        free)."""
        fixed = {"beta0": (0, value), "beta1": (1, value)}.get(held)
        free = [nm for nm in NAMES if nm != held]
        bounds = {"sd0": (0, None), "cor": (-1, 1), "sd1": (0, None), "sigma": (1e-3, None)}
        grids = {"sd0": [0.0, estimates["sd0"], 2 * estimates["sd0"] + 0.1],
                 "cor": [-0.9, 0.0, 0.9],
                 "sd1": [0.0, estimates["sd1"], 2 * estimates["sd1"] + 0.05],
                 "sigma": [estimates["sigma"]]}

        def f(v):
            pars = dict(zip(free, v))
            if fixed is None:
                pars[held] = value
            try:
                return self.deviance(**pars, fixed=fixed)
            except np.linalg.LinAlgError:  # a trial point with V numerically singular
                return 1e10

        best = np.inf
        for start in itertools.product(*[grids[nm] for nm in free]):
            res = optimize.minimize(f, start, method="L-BFGS-B",
                                    bounds=[bounds[nm] for nm in free])
            best = min(best, res.fun)
        return best


CASES = {
    "issue7-seed0": (lambda: issue7_design(0), "y", "x", "g"),
    "issue7-seed1": (lambda: issue7_design(1), "y", "x", "g"),
    "issue7-seed2": (lambda: issue7_design(2), "y", "x", "g"),
    "sleepstudy": (datasets.sleepstudy, "Reaction", "Days", "Subject"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_profile_ends_are_where_the_dense_likelihood_crosses_the_cutoff(case):
    make, response, x, group = CASES[case]
    data = make()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some of these fits are singular, on purpose
        fit = lmer(f"{response} ~ {x} + ({x} | {group})", data)
        ci = fit.confint(method="profile")
        ml = fit.refit(reml=False)
    dense = DenseSlopes(data, response, x, group)
    sd = ml.sdcor.to_numpy()
    estimates = {"sd0": sd[0], "cor": 0.0 if np.isnan(sd[1]) else sd[1], "sd1": sd[2],
                 "sigma": sd[3]}
    d_hat = dense.deviance(**estimates)
    assert d_hat == pytest.approx(ml.deviance, abs=1e-6)
    rows = dict(zip(NAMES, ci.index[:4]))
    bounds = {"sd0": (0.0, np.inf), "cor": (-1.0, 1.0), "sd1": (0.0, np.inf),
              "sigma": (0.0, np.inf)}
    for name in NAMES:
        for end, bound in zip(ci.loc[rows[name]], bounds[name]):
            excess = dense.minimum(name, end, estimates) - d_hat
            if end == bound:  # the profile stays inside the cut-off up to the bound
                assert excess <= CUT2 + 1e-6, (name, end, excess)
            else:
                assert excess == pytest.approx(CUT2, abs=2e-3), (name, end, excess)
    for j, name in enumerate(["beta0", "beta1"]):
        for end in ci.iloc[4 + j]:
            excess = dense.minimum(name, end, estimates) - d_hat
            assert excess == pytest.approx(CUT2, abs=2e-3), (name, end, excess)
