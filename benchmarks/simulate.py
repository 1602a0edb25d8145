"""Simulated data sets for the benchmarks (seeded, so every run fits the same numbers).

``crossed_design``: the shape of the InstEval data (lme4's course evaluations): 73,421 ratings,
random intercepts for students ``s`` (2,972 levels), lecturers ``d`` (1,128 levels, each in
one of 14 departments ``dept``), and a two-level fixed factor ``service``.  Every level is used;
a lecturer is rated at least 10 times and a student at least once, with skewed counts as in the
real data.  The model is

    y = beta_0 + beta_1 service + b_s + b_d + b_dept + e,

with normal random intercepts of SDs ``sd_s, sd_d, sd_dept`` and residual SD ``sigma``; the
defaults are close to lme4's estimates on the real InstEval ratings.

``random_slopes``: ``n`` rows spread evenly over ``subjects`` subjects, a covariate ``x`` uniform
on [0, 9] (like sleepstudy's Days), and a correlated random intercept and slope per subject:

    y = beta_0 + beta_1 x + b_0g + b_1g x + e,   (b_0g, b_1g) ~ N(0, Sigma).

Each function returns ``(data, truth)``: a DataFrame with categorical grouping factors, and the
parameters used, named as lmmlib's ``fit.fixef`` and ``fit.sdcor``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _counts(total: int, groups: int, minimum: int, rng: np.random.Generator,
            skew: float) -> np.ndarray:
    """``groups`` counts, each >= ``minimum``, summing to ``total``, with log-normal weights."""
    weights = rng.lognormal(0.0, skew, size=groups)
    return minimum + rng.multinomial(total - groups * minimum, weights / weights.sum())


def crossed_design(n: int = 73_421, n_students: int = 2_972, n_lecturers: int = 1_128,
                   n_departments: int = 14, seed: int = 20240501, beta=(3.28, -0.09),
                   sd_s: float = 0.33, sd_d: float = 0.52, sd_dept: float = 0.08,
                   sigma: float = 1.18) -> tuple[pd.DataFrame, dict]:
    """A crossed design of InstEval's size: ``y ~ service + (1|s) + (1|d) + (1|dept)``."""
    rng = np.random.default_rng(seed)
    # lecturers nested in departments; every department has at least one lecturer
    dept_of = np.concatenate([np.arange(n_departments),
                              rng.integers(0, n_departments, n_lecturers - n_departments)])
    d = rng.permutation(np.repeat(np.arange(n_lecturers), _counts(n, n_lecturers, 10, rng, 1.0)))
    s = rng.permutation(np.repeat(np.arange(n_students), _counts(n, n_students, 1, rng, 0.6)))
    service = rng.binomial(1, 0.43, size=n)
    b_s = rng.normal(0.0, sd_s, n_students)
    b_d = rng.normal(0.0, sd_d, n_lecturers)
    b_dept = rng.normal(0.0, sd_dept, n_departments)
    y = (beta[0] + beta[1] * service + b_s[s] + b_d[d] + b_dept[dept_of[d]]
         + rng.normal(0.0, sigma, n))
    data = pd.DataFrame({
        "y": y,
        "service": pd.Categorical(service),
        "s": pd.Categorical(s),
        "d": pd.Categorical(d),
        "dept": pd.Categorical(dept_of[d]),
    })
    truth = {
        "fixef": {"(Intercept)": beta[0], "service1": beta[1]},
        "sdcor": {"sd_(Intercept)|s": sd_s, "sd_(Intercept)|d": sd_d,
                  "sd_(Intercept)|dept": sd_dept, "sigma": sigma},
    }
    return data, truth


def random_slopes(n: int = 1_000_000, subjects: int = 10_000, seed: int = 20240502,
                  beta=(250.0, 10.0), sd=(25.0, 6.0), corr: float = 0.3,
                  sigma: float = 25.0) -> tuple[pd.DataFrame, dict]:
    """``n`` rows, ``subjects`` subjects (n/subjects rows each): ``y ~ x + (x | g)``."""
    if n % subjects:
        raise ValueError(f"n = {n} is not a multiple of subjects = {subjects}")
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(subjects), n // subjects)
    x = rng.uniform(0.0, 9.0, n)
    cov = np.array([[sd[0] ** 2, corr * sd[0] * sd[1]], [corr * sd[0] * sd[1], sd[1] ** 2]])
    b = rng.multivariate_normal(np.zeros(2), cov, size=subjects)
    y = beta[0] + beta[1] * x + b[g, 0] + b[g, 1] * x + rng.normal(0.0, sigma, n)
    data = pd.DataFrame({"y": y, "x": x, "g": pd.Categorical(g)})
    truth = {
        "fixef": {"(Intercept)": beta[0], "x": beta[1]},
        "sdcor": {"sd_(Intercept)|g": sd[0], "cor_x.(Intercept)|g": corr, "sd_x|g": sd[1],
                  "sigma": sigma},
    }
    return data, truth
