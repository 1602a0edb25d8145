"""The blocked PLS engine against a dense, obviously correct computation, and recovery of
simulation truth on designs beyond the sleepstudy: crossed, nested, several slopes,
uncorrelated terms, categorical fixed effects with interactions and a boundary fit.
"""

import numpy as np
import pandas as pd
import pytest
import scipy.linalg as la

from lmmlib import lmer
from lmmlib.design import build_design
from lmmlib.errors import SingularFitWarning
from lmmlib.lmm import LinearMixedModel


# ----------------------------------------------------------------------------- dense reference
def dense_Z_Lambda(model, theta):
    """Z (n x q, dense) and Lambda(theta) (q x q, dense) in lme4's term order."""
    Zs, Lambdas = [], []
    for term, T in zip(model.terms, model.layout.templates(theta)):
        n, p = term.X.shape
        Z = np.zeros((n, term.nlevels * p))
        for a in range(p):
            Z[np.arange(n), term.codes * p + a] = term.X[:, a]
        Zs.append(Z)
        Lambdas.append(np.kron(np.eye(term.nlevels), T))
    return np.hstack(Zs), la.block_diag(*Lambdas)


def dense_objective(model, theta, reml):
    """-2 log-likelihood (or REML criterion) from the marginal y ~ N(X beta, sigma^2 V),
    V = Z Lambda Lambda' Z' + I, with beta (GLS) and sigma^2 profiled out."""
    X, y = model.design.X, model.design.y
    n, p = X.shape
    Z, Lam = dense_Z_Lambda(model, theta)
    V = Z @ Lam @ Lam.T @ Z.T + np.eye(n)
    Vinv_X, Vinv_y = np.linalg.solve(V, X), np.linalg.solve(V, y)
    XtViX = X.T @ Vinv_X
    beta = np.linalg.solve(XtViX, X.T @ Vinv_y)
    r2 = (y - X @ beta) @ np.linalg.solve(V, y - X @ beta)
    logdet_V = np.linalg.slogdet(V)[1]
    if reml:
        return (
            logdet_V
            + np.linalg.slogdet(XtViX)[1]
            + (n - p) * (1 + np.log(2 * np.pi * r2 / (n - p)))
        )
    return logdet_V + n * (1 + np.log(2 * np.pi * r2 / n))


def dense_solution(model, theta):
    """beta (GLS), b = Lambda Lambda' Z' V^-1 (y - X beta) and the diagonal of
    Lambda (Lambda'Z'Z Lambda + I)^-1 Lambda' (conditional variances over sigma^2)."""
    X, y = model.design.X, model.design.y
    Z, Lam = dense_Z_Lambda(model, theta)
    V = Z @ Lam @ Lam.T @ Z.T + np.eye(len(y))
    beta = np.linalg.solve(X.T @ np.linalg.solve(V, X), X.T @ np.linalg.solve(V, y))
    b = Lam @ Lam.T @ Z.T @ np.linalg.solve(V, y - X @ beta)
    M = Lam.T @ Z.T @ Z @ Lam + np.eye(Lam.shape[0])
    condvar = Lam @ np.linalg.solve(M, Lam.T)
    return beta, b, condvar


def small_data(seed, n=300):
    rng = np.random.default_rng(seed)
    data = pd.DataFrame(
        {
            "a": rng.integers(0, 25, n).astype(str),
            "b": rng.integers(0, 9, n).astype(str),
            "c": rng.integers(0, 40, n).astype(str),
            "x": rng.normal(size=n),
            "t": rng.choice(["ctl", "low", "high"], n),
        }
    )
    data["y"] = (
        1
        + data.x
        + rng.normal(size=n)
        + rng.normal(size=25)[data.a.astype(int)]
        + 0.5 * rng.normal(size=40)[data.c.astype(int)] * data.x
    )
    return data


FORMULAS = [
    "y ~ x + (1 | a) + (1 | b)",  # crossed
    "y ~ x + (1 | a) + (1 | b) + (1 | c)",  # three crossed factors
    "y ~ x + (1 | a) + (1 | b) + (x | c)",  # largest term (c, 80 effects) not first
    "y ~ x + (1 | a/b)",  # nested
    "y ~ x * t + (x | a) + (1 | b)",  # categorical fixed effect, interaction
    "y ~ x + (x || a) + (1 | b)",  # uncorrelated: two terms on one factor
    "y ~ x + (x + t | a)",  # three correlated effects
    "y ~ x + (x | c)",  # single vector-valued term
]


def random_theta(model, rng):
    lower = model.layout.lower
    return np.where(lower == 0, rng.uniform(0.0, 1.5, lower.size), rng.normal(0, 0.5, lower.size))


@pytest.mark.parametrize("formula", FORMULAS)
def test_blocked_objective_equals_dense_marginal_likelihood(formula):
    rng = np.random.default_rng(len(formula))
    model = LinearMixedModel(build_design(formula, small_data(7)))
    for _ in range(3):
        theta = random_theta(model, rng)
        for reml in (True, False):
            blocked = model.pls.objective(theta, reml)
            assert blocked == pytest.approx(dense_objective(model, theta, reml), rel=1e-9)


@pytest.mark.parametrize("formula", FORMULAS)
def test_blocked_solution_equals_dense_gls_and_blups(formula):
    rng = np.random.default_rng(len(formula) + 1)
    model = LinearMixedModel(build_design(formula, small_data(8)))
    theta = random_theta(model, rng)
    beta, b, condvar = dense_solution(model, theta)
    sol = model.pls.solve(theta)
    np.testing.assert_allclose(sol.beta, beta, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(
        np.concatenate([bk.ravel() for bk in sol.b]), b, rtol=1e-7, atol=1e-9
    )
    # conditional covariances, per grouping factor (terms on one factor merged)
    groups = model._groups()
    blocks = model.pls.conditional_covariances(theta, list(groups.values()))
    offsets = np.cumsum([0] + [t.nlevels * t.p for t in model.terms])
    for ks, V in zip(groups.values(), blocks):
        for j in range(model.terms[ks[0]].nlevels):
            idx = np.concatenate(
                [offsets[k] + j * model.terms[k].p + np.arange(model.terms[k].p) for k in ks]
            )
            np.testing.assert_allclose(V[j], condvar[np.ix_(idx, idx)], rtol=1e-7, atol=1e-12)


# ----------------------------------------------------------------------------- recovery
def test_crossed_random_intercepts_recovered_at_large_n():
    rng = np.random.default_rng(2024)
    n, na, nb = 30_000, 300, 120
    a, b = rng.integers(0, na, n), rng.integers(0, nb, n)
    sd_a, sd_b, sigma = 1.2, 0.6, 1.0
    y = 5.0 + rng.normal(0, sd_a, na)[a] + rng.normal(0, sd_b, nb)[b] + rng.normal(0, sigma, n)
    fit = lmer(
        "y ~ 1 + (1 | a) + (1 | b)", pd.DataFrame({"y": y, "a": a.astype(str), "b": b.astype(str)})
    )
    sd = fit.varcorr.set_index("grp")["sdcor"]
    assert [t.group for t in fit.terms] == ["a", "b"]
    assert sd["a"] == pytest.approx(sd_a, rel=0.12)
    assert sd["b"] == pytest.approx(sd_b, rel=0.2)
    assert sd["Residual"] == pytest.approx(sigma, rel=0.02)
    assert fit.fixef["(Intercept)"] == pytest.approx(5.0, abs=4 * fit.se["(Intercept)"])
    assert fit.ngroups == {"a": na, "b": nb}
    assert not fit.singular and fit.optinfo["converged"]


def test_nested_random_intercepts_recovered():
    rng = np.random.default_rng(99)
    schools, classes, pupils = 80, 6, 15
    school = np.repeat(np.arange(schools), classes * pupils)
    klass = np.repeat(np.arange(schools * classes), pupils)
    x = rng.normal(size=school.size)
    u_school, u_class = rng.normal(0, 1.0, schools), rng.normal(0, 0.5, schools * classes)
    y = 2.0 + 0.7 * x + u_school[school] + u_class[klass] + rng.normal(0, 0.8, school.size)
    data = pd.DataFrame(
        {"y": y, "x": x, "school": school.astype(str), "klass": (klass % classes).astype(str)}
    )  # class labels repeat across schools
    fit = lmer("y ~ x + (1 | school/klass)", data)
    sd = fit.varcorr.set_index("grp")["sdcor"]
    assert fit.ngroups["klass:school"] == schools * classes
    # compared with the standard deviations of the effects actually drawn
    assert sd["klass:school"] == pytest.approx(u_class.std(), rel=0.1)
    assert sd["school"] == pytest.approx(u_school.std(), rel=0.1)
    assert sd["Residual"] == pytest.approx(0.8, rel=0.03)
    assert fit.fixef["x"] == pytest.approx(0.7, abs=4 * fit.se["x"])


def test_categorical_fixed_effect_with_interaction_recovered():
    rng = np.random.default_rng(5)
    groups, per = 150, 20
    g = np.repeat(np.arange(groups), per)
    treat = rng.choice(["a", "b", "c"], g.size)
    x = rng.uniform(0, 4, g.size)
    effect = {"a": 0.0, "b": 1.0, "c": -0.5}
    slope = {"a": 0.3, "b": 0.8, "c": 0.3}
    y = (
        1.0
        + np.vectorize(effect.get)(treat)
        + np.vectorize(slope.get)(treat) * x
        + rng.normal(0, 0.7, groups)[g]
        + rng.normal(0, 0.5, g.size)
    )
    fit = lmer("y ~ treat * x + (1 | g)", pd.DataFrame({"y": y, "treat": treat, "x": x, "g": g}))
    truth = pd.Series(
        {
            "(Intercept)": 1.0,
            "treatb": 1.0,
            "treatc": -0.5,
            "x": 0.3,
            "treatb:x": 0.5,
            "treatc:x": 0.0,
        }
    )
    assert set(fit.fixef.index) == set(truth.index)
    z = (fit.fixef - truth[fit.fixef.index]) / fit.se
    assert np.all(np.abs(z) < 4)
    assert fit.sigma == pytest.approx(0.5, rel=0.05)


def test_uncorrelated_slopes_recovered():
    rng = np.random.default_rng(31)
    groups, per = 200, 25
    g = np.repeat(np.arange(groups), per)
    x = rng.normal(size=g.size)
    y = (
        3
        + 2 * x
        + rng.normal(0, 1.5, groups)[g]
        + rng.normal(0, 0.5, groups)[g] * x
        + rng.normal(size=g.size)
    )
    fit = lmer("y ~ x + (x || g)", pd.DataFrame({"y": y, "x": x, "g": g}))
    vc = fit.varcorr
    assert len(fit.theta) == 2 and vc["var2"].isna().all()  # no correlation parameter
    assert vc["var1"].tolist()[:2] == ["(Intercept)", "x"]
    assert vc["grp"].tolist() == ["g", "g.1", "Residual"]  # lme4 labels a repeated factor g.1
    np.testing.assert_allclose(vc["sdcor"].to_numpy(), [1.5, 0.5, 1.0], rtol=0.15)
    assert fit.ranef["g"].shape == (groups, 2)
    assert fit.condvar["g"].shape == (groups, 2, 2)


def test_singular_fit_detected():
    rng = np.random.default_rng(8)
    groups, per = 30, 10
    g = np.repeat(np.arange(groups), per)
    x = rng.normal(size=g.size)
    noise = rng.normal(size=g.size)
    noise -= np.bincount(g, noise)[g] / per  # no group effect, and group means exactly equal
    y = 1 + x + noise
    data = pd.DataFrame({"y": y, "x": x, "g": g})
    with pytest.warns(SingularFitWarning, match="boundary \\(singular\\) fit"):
        fit = lmer("y ~ x + (1 | g)", data)
    assert fit.singular
    assert fit.theta[0] < 1e-4
    assert fit.varcorr["sdcor"].iloc[0] < 1e-3
    assert fit.optinfo["converged"]
    assert "boundary (singular) fit" in str(fit.summary())
    # at the boundary the fit is ordinary least squares
    beta_ols = np.linalg.lstsq(np.column_stack([np.ones(len(x)), x]), y, rcond=None)[0]
    np.testing.assert_allclose(fit.fixef.to_numpy(), beta_ols, rtol=1e-6)


def test_three_crossed_factors_with_a_vector_term_recovered():
    """The term with most random effects, (x | c), is second in lme4's order: the blocked
    algorithm puts it first, and the answer must not depend on that."""
    rng = np.random.default_rng(77)
    n, na, nb, nc = 12_000, 300, 15, 200
    a, b, c = rng.integers(0, na, n), rng.integers(0, nb, n), rng.integers(0, nc, n)
    x = rng.normal(size=n)
    L = np.linalg.cholesky(np.array([[1.0, 0.3], [0.3, 0.25]]))
    u_c = rng.normal(size=(nc, 2)) @ L.T
    y = (
        2
        - x
        + rng.normal(0, 0.8, na)[a]
        + rng.normal(0, 0.4, nb)[b]
        + u_c[c, 0]
        + u_c[c, 1] * x
        + rng.normal(0, 1.0, n)
    )
    data = pd.DataFrame(
        {"y": y, "x": x, "a": a.astype(str), "b": b.astype(str), "c": c.astype(str)}
    )
    fit = lmer("y ~ x + (1 | a) + (1 | b) + (x | c)", data)
    assert [t.group for t in fit.terms] == ["a", "c", "b"]
    assert fit.pls.first == 1  # (x | c): 400 random effects
    vc = fit.varcorr
    sd = dict(
        zip(vc["grp"] + ":" + vc["var1"].fillna("") + ":" + vc["var2"].fillna(""), vc["sdcor"])
    )
    assert sd["a:(Intercept):"] == pytest.approx(0.8, rel=0.1)
    assert sd["c:(Intercept):"] == pytest.approx(1.0, rel=0.15)
    assert sd["c:x:"] == pytest.approx(0.5, rel=0.15)
    assert sd["c:(Intercept):x"] == pytest.approx(0.6, abs=0.15)
    assert sd["b:(Intercept):"] == pytest.approx(0.4, rel=0.4)
    assert sd["Residual::"] == pytest.approx(1.0, rel=0.02)
    # the estimate is a local minimum: the criterion rises along every coordinate
    best = fit.objective(fit.theta)
    for step in np.eye(len(fit.theta)) * 1e-3:
        assert best < fit.objective(fit.theta + step)
        if np.all(fit.theta - step >= fit.layout.lower):
            assert best < fit.objective(fit.theta - step)


# ----------------------------------------------------------------------------- optimizer
def test_optimizer_finds_interior_and_boundary_minima():
    from lmmlib.lmm import optimize_theta

    H = np.array([[4.0, 1.0, 0.0], [1.0, 3.0, 0.5], [0.0, 0.5, 2.0]])
    target = np.array([0.7, -0.4, -0.3])  # third coordinate's bound (0) is active
    lower = np.array([0.0, -np.inf, 0.0])

    def quadratic(t):
        return 100.0 + 0.5 * (t - target) @ H @ (t - target)

    theta, info = optimize_theta(quadratic, np.ones(3), lower)
    # minimum on the face theta_3 = 0: solve the first two equations with theta_3 fixed
    free = np.linalg.solve(H[:2, :2], H[:2, :2] @ target[:2] + H[:2, 2] * target[2])
    np.testing.assert_allclose(theta, [*free, 0.0], atol=1e-6)
    assert info["converged"] and info["n_evaluations"] > 0


def test_convergence_failure_is_reported(monkeypatch):
    import lmmlib.lmm
    from lmmlib.errors import ConvergenceWarning

    def stalled(objective, start, lower, max_passes=4, **options):  # options: gradient
        return np.asarray(start, dtype=float), {
            "optimizer": "stub",
            "n_evaluations": 1,
            "converged": False,
            "message": "stopped",
            "objective": objective(start),
            "passes": 1,
        }

    monkeypatch.setattr(lmmlib.lmm, "optimize_theta", stalled)
    with pytest.warns(ConvergenceWarning, match="did not converge \\(stopped\\)"):
        fit = lmer("y ~ x + (1 | a)", small_data(1))
    assert fit.optinfo["converged"] is False


@pytest.mark.parametrize("offset", [0.0, 1e7])
@pytest.mark.parametrize("curvature", [1.0, 1e4])
def test_optimizer_convergence_does_not_depend_on_the_size_of_the_criterion(offset, curvature):
    """A criterion near 1e7 (a million rows) has rounding errors near 1e-9: a forward difference
    with a tiny step can then be 0 and wrongly look like a stationary point.  The accepted point
    must be the minimum to the same accuracy whatever the constant added."""
    from lmmlib.optimizer import optimize_theta

    H = np.diag([curvature, 10.0, 1.0])
    H[0, 1] = H[1, 0] = 0.5
    target = np.array([0.7, -0.4, 0.3])

    def quadratic(t):
        return offset + 0.5 * (t - target) @ H @ (t - target)

    theta, info = optimize_theta(quadratic, np.ones(3), np.array([0.0, -np.inf, 0.0]))
    excess = 0.5 * (theta - target) @ H @ (theta - target)  # criterion above its minimum
    assert info["converged"] and excess < 1e-8
    assert info["decrement"] < 1e-8


def test_optimizer_uses_a_given_hessian_for_a_near_start():
    from lmmlib.optimizer import optimize_theta

    H = np.array([[4.0, 1.0, 0.0], [1.0, 3.0, 0.5], [0.0, 0.5, 2.0]])
    target = np.array([0.7, -0.4, 0.3])
    lower = np.array([0.0, -np.inf, 0.0])

    def criterion(t):
        d = t - target
        return 100.0 + 0.5 * d @ H @ d + 0.1 * np.sum(d**4)

    near = target + 0.05
    plain, info_plain = optimize_theta(criterion, near, lower)
    quasi, info_quasi = optimize_theta(criterion, near, lower, hessian=H)
    # a decrement below 1e-8 puts theta within sqrt(2e-8 / smallest eigenvalue) of the minimum
    np.testing.assert_allclose(quasi, target, atol=2e-4)
    assert criterion(quasi) - 100.0 < 1e-8 and criterion(plain) - 100.0 < 1e-8
    assert info_quasi["converged"] and info_quasi["passes"] == 0  # no L-BFGS-B pass needed
    assert info_quasi["n_evaluations"] < info_plain["n_evaluations"]
    # a Hessian that is not positive definite falls back to L-BFGS-B
    fallback, info = optimize_theta(criterion, near, lower, hessian=-H)
    assert info["converged"] and info["passes"] >= 1 and criterion(fallback) - 100.0 < 1e-8


def test_blas_runs_single_threaded_during_a_fit():
    """lmer limits BLAS to one thread while it fits (threadpoolctl, a dependency)."""
    from threadpoolctl import threadpool_info

    import lmmlib.lmm

    seen = []
    model = LinearMixedModel(build_design("y ~ x + (1 | a)", small_data(2)))
    factorize = model.pls.factorize  # every evaluation (value, or value and gradient)

    def spy(theta):
        seen.append({lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"})
        return factorize(theta)

    model.pls.factorize = spy
    model.fit()
    assert seen and all(threads == {1} for threads in seen)
    after = {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}
    assert lmmlib.lmm._threadpool_controller() is not None
    assert after == {lib["num_threads"] for lib in lmmlib.lmm._threadpool_controller().info()
                     if lib["user_api"] == "blas"}  # restored after the fit
