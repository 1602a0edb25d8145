"""The analytic gradient of the profiled criteria (lmmlib.gradient) and its use in the fit.

The gradient is checked against central finite differences of the criterion itself
(``pls.objective``), which lme4's numbers pin down in the engine's other tests; the fits made
with it are checked against the optimum the finite-difference optimiser reaches.
"""

import warnings

import numpy as np
import pandas as pd
import pytest

from lmmlib import datasets, lmer
from lmmlib.design import build_design
from lmmlib.errors import SingularFitWarning
from lmmlib.gradient import criterion_gradient, value_and_gradient
from lmmlib.lmm import LinearMixedModel
from lmmlib.optimizer import optimize_theta

SLOPES = "Reaction ~ Days + (Days | Subject)"


def central_difference(pls, theta, reml, h=1e-5):
    """Central differences of the criterion, steps ``h max(1e-3, |theta_i|)``."""
    g = np.empty(len(theta))
    for i in range(len(theta)):
        e = np.zeros(len(theta))
        e[i] = h * max(1e-3, abs(theta[i]))
        g[i] = (pls.objective(theta + e, reml) - pls.objective(theta - e, reml)) / (2 * e[i])
    return g


def check(pls, theta, reml, rtol=1e-5):
    theta = np.asarray(theta, dtype=float)
    value, g = value_and_gradient(pls, theta, reml)
    assert value == pytest.approx(pls.objective(theta, reml), abs=1e-9)
    fd = central_difference(pls, theta, reml)
    # relative to the gradient's size: a component near 0 is compared on that scale
    np.testing.assert_allclose(g, fd, rtol=rtol, atol=rtol * np.abs(fd).max())
    return g


def model(formula, data, reml=True, **kw):
    return LinearMixedModel(build_design(formula, data, **kw), reml=reml)


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("theta", [[1.0, 0.0, 1.0], [0.97, 0.015, 0.23], [2.0, -0.5, 0.4],
                                   [0.5, 0.3, 0.01]])
def test_sleepstudy_slopes(sleep, reml, theta):
    check(model(SLOPES, sleep, reml).pls, theta, reml)


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("theta", [[1.0, 1.0], [1.54, 3.51], [0.3, 6.0]])
def test_penicillin_crossed(reml, theta):
    pen = datasets.dataset("Penicillin")
    check(model("diameter ~ 1 + (1 | plate) + (1 | sample)", pen, reml).pls, theta, reml)


@pytest.mark.parametrize("reml", [True, False])
def test_vector_term_after_the_first(sleep, reml):
    """A random-slopes term that is not the largest term sits in the dense block."""
    data = sleep.assign(block=pd.Categorical(np.arange(len(sleep)) % 45))
    pls = model("Reaction ~ Days + (Days | Subject) + (1 | block)", data, reml).pls
    # block (45 levels) is factored first, Subject's slopes sit in the dense block
    assert [len(pls.terms[k].names) for k in pls.rest] == [2]
    check(pls, [0.9, 0.1, 0.3, 0.5], reml)


@pytest.mark.parametrize("reml", [True, False])
def test_three_nested_and_crossed_intercepts(reml):
    """InstEval's shape in small: three scalar intercept terms, one nested in another."""
    rng = np.random.default_rng(7)
    n = 600
    lecturer = rng.integers(0, 40, n)
    data = pd.DataFrame({
        "y": rng.normal(size=n),
        "x": rng.binomial(1, 0.4, n).astype(float),
        "s": pd.Categorical(rng.integers(0, 90, n)),
        "d": pd.Categorical(lecturer),
        "dept": pd.Categorical(lecturer % 6),
    })
    data["y"] += (np.asarray(data["s"].cat.codes) % 5) * 0.3 + lecturer % 7 * 0.2
    pls = model("y ~ x + (1 | s) + (1 | d) + (1 | dept)", data, reml).pls
    check(pls, [0.4, 0.6, 0.2], reml)
    check(pls, [1.0, 1.0, 1.0], reml)


@pytest.mark.parametrize("reml", [True, False])
def test_weights_and_offset(sleep, reml):
    w = 1.0 + (sleep["Days"] % 3)
    data = sleep.assign(w=w, o=0.5 * sleep["Days"])
    m = model(SLOPES, data, reml, weights="w", offset="o")
    check(m.pls, [0.8, 0.05, 0.3], reml)


@pytest.mark.parametrize("reml", [True, False])
def test_near_the_boundary(sleep, reml):
    check(model(SLOPES, sleep, reml).pls, [0.9, 0.02, 1e-3], reml)
    pen = datasets.dataset("Penicillin")
    check(model("diameter ~ 1 + (1 | plate) + (1 | sample)", pen, reml).pls, [1e-3, 3.5], reml)


def test_on_the_boundary():
    """A scalar term at theta = 0: the criteria are even in theta, so the derivative is 0;
    a vector-valued term with a singular template has none in this form (None)."""
    pen = datasets.dataset("Penicillin")
    pls = model("diameter ~ 1 + (1 | plate) + (1 | sample)", pen).pls
    g = criterion_gradient(pls, np.array([0.0, 3.5]), reml=True)
    assert g[0] == 0.0
    fd = central_difference(pls, np.array([0.0, 3.5]), True)
    assert g[1] == pytest.approx(fd[1], rel=1e-5)
    # f(h) - f(0) grows as h^2 (four times as much at 2h), so the slope at 0 is 0
    f0 = pls.objective(np.array([0.0, 3.5]), True)
    rise = [pls.objective(np.array([h, 3.5]), True) - f0 for h in (1e-3, 2e-3)]
    assert rise[1] / rise[0] == pytest.approx(4.0, rel=1e-2)
    sleep_pls = model(SLOPES, datasets.sleepstudy()).pls
    assert criterion_gradient(sleep_pls, np.array([1.0, 0.2, 0.0]), reml=True) is None


def test_gradient_is_with_respect_to_theta_in_the_units_of_the_data(sleep):
    """Days in hours: the template entries of the slope change by 1/24; the gradient with
    respect to them by 24, and the optimiser's (scaled) gradient not at all."""
    hours = sleep.assign(Days=sleep["Days"] * 24.0)
    a = model(SLOPES, sleep).pls
    b = model(SLOPES, hours).pls
    theta = np.array([0.9, 0.05, 0.3])
    ga = criterion_gradient(a, theta, True)
    gb = check(b, theta / np.array([1.0, 24.0, 24.0]), True)
    np.testing.assert_allclose(gb, ga * np.array([1.0, 24.0, 24.0]), rtol=1e-7)


# ------------------------------------------------------------------- fits with the gradient
FITS = [
    (SLOPES, "sleepstudy", True, {}),
    (SLOPES, "sleepstudy", False, {}),
    ("diameter ~ 1 + (1 | plate) + (1 | sample)", "Penicillin", True, {}),
    ("strength ~ 1 + (1 | batch) + (1 | batch:cask)", "Pastes", True, {}),
    ("Yield ~ 1 + (1 | Batch)", "Dyestuff2", True, {}),  # singular: theta = 0
    ("Yield ~ 1 + (1 | Batch)", "Dyestuff", False, {}),
    (SLOPES, "sleepstudy", True, {"weights": "w", "offset": "o"}),
]


@pytest.mark.parametrize("formula, name, reml, kw", FITS)
def test_fit_reaches_the_finite_difference_optimum(formula, name, reml, kw):
    data = datasets.dataset(name)
    if kw:
        data = data.assign(w=1.0 + (data["Days"] % 3), o=0.5 * data["Days"])
    with warnings.catch_warnings():
        # Dyestuff2's fit is singular, as lme4's: the warning is expected there
        warnings.simplefilter("ignore", SingularFitWarning)
        fit = lmer(formula, data, reml=reml, **kw)
    assert fit.singular == (name == "Dyestuff2")
    assert fit.optinfo["converged"]
    assert fit.optinfo["n_gradients"] > 0  # the analytic gradient was used
    # the same model minimised by the finite-difference path (no gradient)
    m = LinearMixedModel(fit.design, reml=reml)
    scale = m.pls.theta_scale
    theta_s, info = optimize_theta(m._scaled_objective, m.layout.start, m.layout.lower)
    assert info["converged"] and info["n_gradients"] == 0
    criterion = fit.optinfo["objective"]
    assert criterion == pytest.approx(info["objective"], abs=1e-6)
    assert criterion <= info["objective"] + 1e-8
    np.testing.assert_allclose(fit.theta, theta_s / scale, atol=2e-4)


def test_fewer_evaluations_than_finite_differences(sleep):
    """Each finite-difference gradient costs p evaluations; the analytic one none extra."""
    fit = lmer(SLOPES, sleep)
    m = LinearMixedModel(fit.design)
    _, info = optimize_theta(m._scaled_objective, m.layout.start, m.layout.lower)
    assert fit.optinfo["n_evaluations"] < info["n_evaluations"] / 2
