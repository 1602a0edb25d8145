"""The fast paths of the profiled criterion (lmmlib.pls, lmmlib.sparse_schur) against the dense
blocked Cholesky factor (``PenalizedLeastSquares.factorize``), and fits through them against
lme4's published numbers.

The dense path is the reference: it is the one the lme4 tests check.  Each fast path must give
the same ``log|L|^2``, ``log|R_X|^2`` and ``r^2`` to about 1e-10 relative (rounding only), and a
fit through it the same estimates.
"""

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from lmmlib import datasets
from lmmlib.design import build_design
from lmmlib.lmm import LinearMixedModel
from lmmlib.pls import PenalizedLeastSquares, small_block_factors
from lmmlib.sparse_schur import SparseSchurComplement, sparse_is_worthwhile


def star_like(n_students=600, n_schools=10, per_cell=3, seed=1, move=0.05):
    """A small design of the shape of STAR: students with 1-4 consecutive grades, a teacher of
    their school and grade each year, some students changing school; crossed random effects
    ``(yrs | id) + (1 | tch) + (yrs | sch)``."""
    rng = np.random.default_rng(seed)
    entry = rng.integers(0, 4, n_students)
    years = 1 + rng.binomial(3, 0.6, n_students)
    years = np.minimum(years, 4 - entry)
    rows = np.repeat(np.arange(n_students), years)
    first = np.cumsum(years) - years
    gr = entry[rows] + np.arange(len(rows)) - first[rows]
    school = rng.integers(0, n_schools, n_students)
    sch = school[rows]
    movers = rng.random(n_students) < move
    moved = movers[rows] & (gr > entry[rows])
    sch[moved] = (sch[moved] + 1) % n_schools
    tch = (sch * 4 + gr) * per_cell + rng.integers(0, per_cell, len(rows))
    b_id = rng.normal(0, [30.0, 6.0], (n_students, 2))
    b_sch = rng.normal(0, [12.0, 4.0], (n_schools, 2))
    b_tch = rng.normal(0, 10.0, n_schools * 4 * per_cell)
    x = rng.normal(size=len(rows))
    y = (500 + 30 * gr + 3 * x + b_id[rows, 0] + b_id[rows, 1] * gr + b_tch[tch]
         + b_sch[sch, 0] + b_sch[sch, 1] * gr + rng.normal(0, 20.0, len(rows)))
    return pd.DataFrame({
        "y": y, "x": x, "yrs": gr.astype(float), "gr": pd.Categorical(gr),
        "id": pd.Categorical(rows), "tch": pd.Categorical(tch), "sch": pd.Categorical(sch),
    })


STAR = "y ~ gr + x + (yrs | id) + (1 | tch) + (yrs | sch)"


def instevalish(n=3000, students=300, lecturers=120, departments=14, seed=2):
    """Three crossed random intercepts, as InstEval (students x lecturers in departments)."""
    rng = np.random.default_rng(seed)
    s = rng.integers(0, students, n)
    d = rng.integers(0, lecturers, n)
    dept = rng.integers(0, departments, lecturers)[d]
    service = rng.binomial(1, 0.4, n)
    y = (3 + 0.1 * service + rng.normal(0, 0.3, students)[s] + rng.normal(0, 0.5, lecturers)[d]
         + rng.normal(0, 0.1, departments)[dept] + rng.normal(0, 1.2, n))
    return pd.DataFrame({"y": y, "service": pd.Categorical(service), "s": pd.Categorical(s),
                         "d": pd.Categorical(d), "dept": pd.Categorical(dept)})


INSTEVAL = "y ~ service + (1 | s) + (1 | d) + (1 | dept)"


def with_sparse(pls: PenalizedLeastSquares) -> PenalizedLeastSquares:
    """The same model with the sparse second block switched on whatever its size."""
    pls.sparse_rest = SparseSchurComplement(sp.csr_matrix(pls.A_rr), pls.sandwich)
    return pls


def random_thetas(pls, count, seed=0):
    rng = np.random.default_rng(seed)
    lower = pls.layout.lower
    for _ in range(count):
        theta = np.where(lower == 0, rng.uniform(0.05, 3.0, lower.size),
                         rng.normal(0.0, 0.7, lower.size))
        yield theta


def dense_terms(pls, theta):
    f = pls.factorize(theta)
    return np.array([f.logdet_L, f.logdet_RX, f.r2])


@pytest.mark.parametrize("data, formula", [
    (star_like(), STAR),
    (instevalish(), INSTEVAL),
    (datasets.penicillin(), "diameter ~ 1 + (1|plate) + (1|sample)"),
])
def test_sparse_second_block_gives_the_dense_criterion(data, formula):
    pls = with_sparse(LinearMixedModel(build_design(formula, data)).pls)
    assert pls.q_rest > 0
    for theta in random_thetas(pls, 5):
        sparse = np.array(pls.criterion_terms(theta))
        dense = np.array(pls.criterion_terms(theta, sparse=False))
        np.testing.assert_allclose(dense, dense_terms(pls, theta), rtol=0)
        np.testing.assert_allclose(sparse, dense, rtol=1e-10)
        for reml in (True, False):
            assert pls.objective(theta, reml) == pytest.approx(
                LinearMixedModel(build_design(formula, data), reml=reml).pls.objective(
                    theta, reml), rel=1e-12)


def test_sparse_fit_of_penicillin_as_published():
    # lme4 book ch. 2, fm03: REML 330.9; plate 0.8467, sample 1.9316, Residual 0.5499
    model = LinearMixedModel(build_design("diameter ~ 1 + (1|plate) + (1|sample)",
                                          datasets.penicillin()))
    with_sparse(model.pls)
    fit = model.fit()
    assert f"{fit.deviance:.1f}" == "330.9"
    assert f"{fit.sdcor['sd_(Intercept)|plate']:.4f}" == "0.8467"
    assert f"{fit.sdcor['sd_(Intercept)|sample']:.4f}" == "1.9316"
    assert f"{fit.sigma:.4f}" == "0.5499"


@pytest.mark.parametrize("data, formula", [(star_like(), STAR), (instevalish(), INSTEVAL)])
def test_sparse_and_dense_fits_agree(data, formula):
    design = build_design(formula, data)
    dense = LinearMixedModel(design)
    dense.pls.sparse_rest = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dense.fit()
        sparse = LinearMixedModel(design)
        with_sparse(sparse.pls)
        sparse.fit()
    assert sparse.deviance == pytest.approx(dense.deviance, rel=1e-10, abs=1e-7)
    np.testing.assert_allclose(sparse.theta, dense.theta, atol=1e-4)
    np.testing.assert_allclose(sparse.fixef, dense.fixef, rtol=1e-5)


def test_sparse_second_block_is_chosen_only_when_large_and_sparse():
    small = LinearMixedModel(build_design(INSTEVAL, instevalish())).pls
    assert small.sparse_rest is None  # 134 random effects after the first term
    data = star_like(n_students=3000, n_schools=40)
    big = LinearMixedModel(build_design(STAR, data)).pls
    assert big.q_rest == data["tch"].nunique() + 2 * 40  # teachers, two effects per school
    assert big.q_rest >= 400
    assert big.sparse_rest is not None
    assert big.sparse_rest.nnz_lower < 0.1 * big.q_rest * (big.q_rest + 1) / 2
    assert sparse_is_worthwhile(1000, 10_000) and not sparse_is_worthwhile(1000, 400_000)
    theta = next(random_thetas(big, 1, seed=3))
    np.testing.assert_allclose(big.criterion_terms(theta), dense_terms(big, theta), rtol=1e-10)


def test_sparse_matrix_is_the_dense_sandwich():
    pls = LinearMixedModel(build_design(STAR, star_like())).pls
    schur = with_sparse(pls).sparse_rest
    theta = next(random_thetas(pls, 1))
    N = pls.factorize(theta).N
    np.testing.assert_allclose(schur.matrix(N).toarray(), pls.A_rr - pls.sandwich.dense(N),
                               rtol=1e-13, atol=1e-12)


@pytest.mark.parametrize("p", [1, 2, 3])
def test_small_block_factors_match_lapack(p):
    rng = np.random.default_rng(p)
    G = rng.normal(size=(50, p, p + 2))
    A = G @ np.swapaxes(G, 1, 2)  # positive semidefinite blocks
    T = np.tril(rng.normal(size=(p, p)))
    L, L_inv, N = small_block_factors(A.reshape(50, -1).T.copy(), T)
    M = T.T @ A @ T + np.eye(p)
    np.testing.assert_allclose(L, np.linalg.cholesky(M), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(L_inv, np.linalg.inv(np.linalg.cholesky(M)), rtol=1e-11,
                               atol=1e-13)
    np.testing.assert_allclose(N, T @ np.linalg.inv(M) @ T.T, rtol=1e-11, atol=1e-13)


def test_small_block_factors_refuse_a_block_that_is_not_positive_definite():
    A = -4.0 * np.eye(2).reshape(1, 4).T.copy()  # T'AT + I = -3 I
    with pytest.raises(np.linalg.LinAlgError):
        small_block_factors(A, np.eye(2))


@pytest.mark.parametrize("subjects, per_subject", [(18, 10), (100, 4), (400, 3)])
def test_one_term_paths_give_the_dense_criterion(subjects, per_subject):
    """One term: the one-shot factor (18 x 2 effects), numpy's batched LAPACK (100 x 2) and the
    entrywise factors (400 x 2) against factorize()."""
    rng = np.random.default_rng(subjects)
    g = np.repeat(np.arange(subjects), per_subject)
    x = rng.uniform(0, 9, g.size)
    y = 250 + 10 * x + rng.normal(0, 25, subjects)[g] + rng.normal(0, 6, subjects)[g] * x
    data = pd.DataFrame({"y": y + rng.normal(0, 25, g.size), "x": x, "g": pd.Categorical(g)})
    pls = LinearMixedModel(build_design("y ~ x + (x | g)", data)).pls
    for theta in random_thetas(pls, 5):
        np.testing.assert_allclose(pls.criterion_terms(theta), dense_terms(pls, theta),
                                   rtol=1e-10)


def test_one_term_path_fits_sleepstudy_as_lme4(sleep):
    # the one-shot path (18 subjects x 2 effects) against lme4 1.1-31's fit (package data)
    ref = datasets.reference("lme4_sleepstudy")["fits"]["sleepstudy_slopes_reml"]
    model = LinearMixedModel(build_design(ref["formula"], sleep))
    assert model.pls.levels1 * model.pls.p1 <= 120 and model.pls.q_rest == 0
    theta = np.array(list(ref["theta"].values()))
    assert model.objective(theta) == pytest.approx(ref["deviance"], rel=1e-12)
    fit = model.fit()
    assert fit.objective(fit.theta) <= ref["deviance"]
    np.testing.assert_allclose(fit.theta, theta, rtol=1e-4, atol=1e-4)  # lme4's own accuracy
    np.testing.assert_allclose(fit.fixef, list(ref["fixef"].values()), rtol=1e-5)
