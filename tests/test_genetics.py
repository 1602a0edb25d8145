"""lmmlib.genetics: simulated genotypes have the relatedness and structure their designs
promise (theory: kinship of full sibs 1/4, so A_ij ~ 1/2; Var(A_ij) ~ 1/m for unrelated pairs;
Balding-Nichols F_ST), phenotypes have the stated variance, and the scan equals statsmodels."""

import numpy as np
import pytest
import statsmodels.api as sm
from numpy.testing import assert_allclose

from lmmlib.errors import LmmInputError
from lmmlib.genetics import (grm, gwas, principal_components, simulate_genotypes,
                             simulate_phenotype, standardize_genotypes)


def test_allele_frequencies_and_hardy_weinberg():
    s = simulate_genotypes(2000, 400, seed=1)
    assert s.G.dtype == np.int8 and s.G.shape == (2000, 400)
    assert 0.05 <= s.freq.min() and s.freq.max() <= 0.5
    p_hat = s.G.mean(axis=0) / 2
    assert_allclose(p_hat, s.freq, atol=5 * np.sqrt(0.25 / 4000))
    het = np.mean(s.G == 1, axis=0)                 # Hardy-Weinberg: 2 p (1 - p)
    assert np.abs(het - 2 * s.freq * (1 - s.freq)).max() < 5 * np.sqrt(0.25 / 2000)


def test_grm_of_unrelated_individuals():
    m = 2000
    A = grm(simulate_genotypes(300, m, seed=2).G)
    off = A[np.triu_indices(300, 1)]
    assert abs(off.mean()) < 0.01                   # exactly -1/(n-1) in expectation here
    assert_allclose(off.var(), 1 / m, rtol=0.1)
    assert_allclose(np.diag(A).mean(), 1, atol=0.01)
    assert_allclose(A.sum(axis=1), 0, atol=1e-9)    # centred by the sample frequencies


def test_grm_of_siblings():
    s = simulate_genotypes(200, 3000, "siblings", seed=3)
    A = grm(s.G)
    sib = A[np.arange(0, 200, 2), np.arange(1, 200, 2)]
    assert_allclose(sib.mean(), 0.5, atol=0.02)
    assert sib.std() < 0.05       # unlinked SNPs: sharing varies little around 1/2
    i, j = np.triu_indices(200, 1)
    other = A[i, j][s.family[i] != s.family[j]]
    assert abs(other.mean()) < 0.01


def test_two_populations_structure_and_pcs():
    fst = 0.1
    s = simulate_genotypes(400, 3000, "two_populations", fst=fst, seed=4)
    pop = s.population
    assert pop.sum() == 200
    # Hudson's F_ST estimate from the two samples' allele frequencies
    p1, p2 = (s.G[pop == k].mean(axis=0) / 2 for k in (0, 1))
    keep = (p1 + p2 > 0) & (p1 + p2 < 2)
    num = (p1 - p2) ** 2 - p1 * (1 - p1) / 199 - p2 * (1 - p2) / 199
    den = p1 * (1 - p2) + p2 * (1 - p1)
    assert_allclose(num[keep].sum() / den[keep].sum(), fst, rtol=0.15)
    A = grm(s.G)
    within = A[np.ix_(pop == 0, pop == 0)][np.triu_indices(200, 1)].mean()
    between = A[np.ix_(pop == 0, pop == 1)].mean()
    assert within > 0.05 > 0 > -0.05 > between
    pc1 = principal_components(A, 2)[:, 0]
    assert np.all(np.sign(pc1[pop == 0]) == np.sign(pc1[pop == 0][0]))
    assert np.all(np.sign(pc1[pop == 1]) == -np.sign(pc1[pop == 0][0]))


def test_phenotype_variance():
    s = simulate_genotypes(4000, 500, seed=5)
    ph = simulate_phenotype(s.G, 0.4, 100, seed=6)
    assert ph.causal.size == 100 and np.all(np.diff(ph.causal) > 0)
    W, _ = standardize_genotypes(s.G)
    assert_allclose(ph.g, W[:, ph.causal] @ ph.effects)
    # Var(g) given the effects is sum(u^2) (W's columns have variance 1): close to h2 = 0.4
    assert_allclose(np.var(ph.g), np.sum(ph.effects**2), rtol=0.1)
    assert_allclose(np.sum(ph.effects**2), 0.4, rtol=0.35)
    assert_allclose(np.var(ph.y - ph.g), 0.6, rtol=0.06)


def test_gwas_equals_statsmodels():
    rng = np.random.default_rng(7)
    s = simulate_genotypes(150, 40, seed=8)
    x = rng.normal(size=150)
    y = 0.3 * s.G[:, 5] + x + rng.normal(size=150)
    scan = gwas(y, s.G, np.column_stack([np.ones(150), x]), block=16)
    for j in [0, 5, 39]:
        ols = sm.OLS(y, np.column_stack([np.ones(150), x, s.G[:, j]])).fit()
        assert_allclose(scan.loc[j, ["beta", "se", "t", "p"]].to_numpy(float),
                        [ols.params[2], ols.bse[2], ols.tvalues[2], ols.pvalues[2]], rtol=1e-8)
        # r2: the SNP's share of the variance left after x
        base = sm.OLS(y, np.column_stack([np.ones(150), x])).fit()
        assert_allclose(scan.loc[j, "r2"], 1 - ols.ssr / base.ssr, rtol=1e-8)


def test_bad_input():
    with pytest.raises(LmmInputError, match="design"):
        simulate_genotypes(10, 10, "cousins")
    with pytest.raises(LmmInputError, match="even n"):
        simulate_genotypes(11, 10, "siblings")
    with pytest.raises(LmmInputError, match="h2"):
        simulate_phenotype(np.ones((5, 3)) + np.eye(5, 3), 1.5, 1)
    with pytest.raises(LmmInputError, match="monomorphic"):
        grm(np.zeros((5, 3)))
    with pytest.raises(LmmInputError, match="n_causal"):
        simulate_phenotype(simulate_genotypes(20, 10, seed=1).G, 0.5, 11)
