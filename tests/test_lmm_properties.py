"""Invariances of a linear mixed-model fit, checked on random small data sets (hypothesis).

* The order of the rows carries no information: permuting them changes nothing.
* Measuring y in other units (y -> c y) multiplies beta by c, sigma and every random-effect
  standard deviation by |c|, leaves correlations alone, and shifts the log-likelihood by
  -n log|c| (the density of c y is that of y divided by |c|^n); the REML log-likelihood, a
  density of n - p error contrasts, shifts by -(n - p) log|c|.
"""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmmlib import lmer

SETTINGS = settings(max_examples=20, deadline=None)


def make_data(seed, groups, per):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(groups), per)
    x = rng.normal(size=g.size)
    y = (
        1
        + 0.5 * x
        + rng.normal(0, 1.0, groups)[g]
        + rng.normal(0, 0.4, groups)[g] * x
        + rng.normal(size=g.size)
    )
    return pd.DataFrame({"y": y, "x": x, "g": [f"s{j}" for j in g]})


def quietly(formula, data, reml):
    """Fit, ignoring the singular-fit warning that some random data sets rightly raise."""
    import warnings

    from lmmlib.errors import SingularFitWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularFitWarning)
        return lmer(formula, data, reml=reml)


FORMULAS = st.sampled_from(["y ~ x + (1 | g)", "y ~ x + (x | g)"])


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    groups=st.integers(4, 10),
    per=st.integers(3, 8),
    formula=FORMULAS,
    reml=st.booleans(),
)
def test_row_permutation_invariance(seed, groups, per, formula, reml):
    data = make_data(seed, groups, per)
    shuffled = data.sample(frac=1.0, random_state=np.random.default_rng(seed + 1))
    a, b = quietly(formula, data, reml), quietly(formula, shuffled, reml)
    assert b.deviance == pytest.approx(a.deviance, rel=1e-9)
    np.testing.assert_allclose(b.fixef.to_numpy(), a.fixef.to_numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(b.sigma, a.sigma, rtol=1e-4)
    # fitted values follow their rows
    np.testing.assert_allclose(b.fitted.loc[data.index], a.fitted, rtol=1e-4, atol=1e-5)


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    groups=st.integers(4, 10),
    per=st.integers(3, 8),
    formula=FORMULAS,
    reml=st.booleans(),
    log10c=st.floats(-6, 6),
    sign=st.sampled_from([1, -1]),
)
def test_scaling_the_response(seed, groups, per, formula, reml, log10c, sign):
    c = sign * 10.0**log10c
    data = make_data(seed, groups, per)
    a = quietly(formula, data, reml)
    b = quietly(formula, data.assign(y=c * data["y"]), reml)
    dof = len(data) - (2 if reml else 0)  # n - p under REML
    assert b.loglik == pytest.approx(a.loglik - dof * np.log(abs(c)), rel=1e-8, abs=1e-6)
    np.testing.assert_allclose(
        b.fixef.to_numpy(),
        c * a.fixef.to_numpy(),
        rtol=1e-4,
        atol=1e-5 * abs(c) * np.abs(a.fixef.to_numpy()).max(),
    )
    assert b.sigma == pytest.approx(abs(c) * a.sigma, rel=1e-4)
    sd_a, sd_b = a.varcorr["sdcor"].to_numpy(), b.varcorr["sdcor"].to_numpy()
    is_cor = a.varcorr["var2"].notna().to_numpy()
    np.testing.assert_allclose(
        sd_b[~is_cor], abs(c) * sd_a[~is_cor], rtol=1e-3, atol=1e-3 * abs(c) * a.sigma
    )
    if not (a.singular or b.singular):  # at a boundary a correlation can be undefined (0/0)
        np.testing.assert_allclose(sd_b[is_cor], sd_a[is_cor], atol=1e-3)
