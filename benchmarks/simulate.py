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


def _star_students(n_students: int, rng: np.random.Generator, enter, stay: float):
    """Entry grade (0-3) and number of consecutive years (>= 1, up to grade 3) per student."""
    entry = rng.choice(4, size=n_students, p=np.asarray(enter) / np.sum(enter))
    years = np.ones(n_students, dtype=np.int64)
    for _ in range(3):  # each further year with probability ``stay``, while grades remain
        more = (entry + years <= 3) & (rng.random(n_students) < stay)
        years += more
    return entry, years


def star_design(n_students: int = 11_598, n_teachers: int = 1_387, n_schools: int = 80,
                seed: int = 20240503, move: float = 0.02, beta_grade=(0.0, 45.0, 80.0, 105.0),
                sd_id=(35.0, 8.0), corr_id: float = 0.2, sd_tch: float = 15.0,
                sd_sch=(15.0, 5.0), corr_sch: float = -0.2,
                sigma: float = 20.0) -> tuple[pd.DataFrame, dict]:
    """A crossed design of the shape of the STAR class-size study (mlmRev's ``star``).

    ``n_schools`` schools (each of one of four types); ``n_teachers`` teachers, each teaching
    one grade (K = 0 to 3) in one school, at least one per school and grade; ``n_students``
    students, each entering at some grade and staying one to four consecutive years (about 2.3
    on average, so about 26,800 rows), with a teacher of their school and grade each year.  A
    fraction ``move`` of the students change to another school once, which links schools and
    teachers as in the real data.  ``yrs`` is the grade as a number (years of schooling).
    The model is

        math = fixed effects of gr, sx, eth, cltype, schtype, hdeg, exp and ses (20 columns)
               + b_0,id + b_1,id yrs + b_tch + b_0,sch + b_1,sch yrs + e,

    with correlated random intercepts and slopes in ``yrs`` for students and schools,
    random intercepts for teachers, all crossed: ``(yrs | id) + (1 | tch) + (yrs | sch)``.
    """
    rng = np.random.default_rng(seed)
    schtype = rng.choice(4, size=n_schools, p=[0.2, 0.2, 0.45, 0.15])
    # teachers: one school and grade each; every school-grade has at least one teacher
    cells = n_schools * 4
    per_cell = 1 + rng.multinomial(n_teachers - cells, np.full(cells, 1.0 / cells))
    tch_cell = np.repeat(np.arange(cells), per_cell)  # cell = school * 4 + grade
    cell_start = np.cumsum(per_cell) - per_cell
    tch_cltype = rng.choice(3, size=n_teachers, p=[0.3, 0.35, 0.35])
    tch_hdeg = rng.choice(4, size=n_teachers, p=[0.6, 0.3, 0.07, 0.03])
    tch_exp = rng.gamma(3.0, 3.5, size=n_teachers).round()
    # students: entry grade, years, school (and for movers a second school from some year)
    entry, years = _star_students(n_students, rng, enter=[0.5, 0.2, 0.18, 0.12], stay=0.565)
    school = rng.integers(0, n_schools, n_students)
    sx = rng.binomial(1, 0.48, n_students)
    eth = rng.choice(6, size=n_students, p=[0.66, 0.325, 0.004, 0.003, 0.002, 0.006])
    ses = rng.binomial(1, 0.5, n_students)
    rows = np.repeat(np.arange(n_students), years)
    first_row = np.cumsum(years) - years
    gr = entry[rows] + np.arange(len(rows)) - first_row[rows]
    sch = school[rows]
    movers = np.flatnonzero((rng.random(n_students) < move) & (years > 1))
    moved = np.isin(rows, movers) & (gr > entry[rows])
    shift = 1 + rng.integers(0, n_schools - 1, n_students)  # a mover's new school
    sch[moved] = (sch[moved] + shift[rows[moved]]) % n_schools
    cell = sch * 4 + gr
    tch = cell_start[cell] + (rng.random(len(rows)) * per_cell[cell]).astype(np.int64)
    n = len(rows)
    # truth
    cov = lambda sd, r: np.array([[sd[0] ** 2, r * sd[0] * sd[1]],  # noqa: E731
                                  [r * sd[0] * sd[1], sd[1] ** 2]])
    b_id = rng.multivariate_normal(np.zeros(2), cov(sd_id, corr_id), size=n_students)
    b_tch = rng.normal(0.0, sd_tch, n_teachers)
    b_sch = rng.multivariate_normal(np.zeros(2), cov(sd_sch, corr_sch), size=n_schools)
    effects = {"sx": -3.0, "eth": np.array([0.0, -25.0, 5.0, -5.0, -10.0, 0.0]),
               "cltype": np.array([0.0, -9.0, -8.0]), "schtype": np.array([0.0, 8.0, 5.0, 4.0]),
               "hdeg": np.array([0.0, 1.0, -2.0, 0.5]), "exp": 0.3, "ses": -15.0}
    mu = (480.0 + np.asarray(beta_grade)[gr] + effects["sx"] * sx[rows]
          + effects["eth"][eth[rows]] + effects["cltype"][tch_cltype[tch]]
          + effects["schtype"][schtype[sch]] + effects["hdeg"][tch_hdeg[tch]]
          + effects["exp"] * tch_exp[tch] + effects["ses"] * ses[rows])
    y = (mu + b_id[rows, 0] + b_id[rows, 1] * gr + b_tch[tch] + b_sch[sch, 0]
         + b_sch[sch, 1] * gr + rng.normal(0.0, sigma, n))
    cat = lambda codes, labels: pd.Categorical.from_codes(codes, labels)  # noqa: E731
    data = pd.DataFrame({
        "math": y,
        "gr": cat(gr, ["K", "1", "2", "3"]),
        "yrs": gr.astype(float),
        "sx": cat(sx[rows], ["M", "F"]),
        "eth": cat(eth[rows], ["W", "B", "A", "H", "I", "O"]),
        "cltype": cat(tch_cltype[tch], ["small", "reg", "reg+A"]),
        "schtype": cat(schtype[sch], ["inner", "suburb", "rural", "urban"]),
        "hdeg": cat(tch_hdeg[tch], ["BS", "MS", "MS+", "Spec"]),
        "exp": tch_exp[tch],
        "ses": cat(ses[rows], ["N", "F"]),
        "id": pd.Categorical(rows),
        "tch": pd.Categorical(tch),
        "sch": pd.Categorical(sch),
    })
    truth = {
        "n": n,
        "sdcor": {"sd_(Intercept)|id": sd_id[0], "cor_yrs.(Intercept)|id": corr_id,
                  "sd_yrs|id": sd_id[1], "sd_(Intercept)|tch": sd_tch,
                  "sd_(Intercept)|sch": sd_sch[0], "cor_yrs.(Intercept)|sch": corr_sch,
                  "sd_yrs|sch": sd_sch[1], "sigma": sigma},
    }
    return data, truth


STAR_FORMULA = ("math ~ gr + sx + eth + cltype + schtype + hdeg + exp + ses"
                " + (yrs | id) + (1 | tch) + (yrs | sch)")


def quadratic_slopes(groups: int = 20, per_group: int = 10, seed: int = 20240504,
                     beta=(10.0, 2.0, -0.3), sd=(1.0, 0.5, 0.1), corr: float = 0.2,
                     sigma: float = 1.0) -> tuple[pd.DataFrame, dict]:
    """``groups`` groups of ``per_group`` rows, x uniform on [0, 5], and a random quadratic per
    group: ``y ~ x + I(x^2) + (x + I(x^2) | g)``, 6 covariance parameters."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(groups), per_group)
    x = rng.uniform(0.0, 5.0, len(g))
    R = np.full((3, 3), corr) + (1 - corr) * np.eye(3)
    b = rng.multivariate_normal(np.zeros(3), R * np.outer(sd, sd), size=groups)
    X = np.column_stack([np.ones_like(x), x, x**2])
    y = X @ np.asarray(beta) + np.einsum("ij,ij->i", X, b[g]) + rng.normal(0.0, sigma, len(g))
    data = pd.DataFrame({"y": y, "x": x, "g": pd.Categorical(g)})
    truth = {"fixef": dict(zip(["(Intercept)", "x", "I(x^2)"], beta)), "sigma": sigma}
    return data, truth


QUADRATIC_FORMULA = "y ~ x + I(x^2) + (x + I(x^2) | g)"
