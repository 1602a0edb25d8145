"""Simulated genotypes and phenotypes, the genomic relationship matrix, and a single-SNP scan.

The data of chapter 7. Genotypes are counts ``x_ij`` in {0, 1, 2} of one allele of SNP ``j``
in individual ``i``, drawn under Hardy-Weinberg equilibrium (two independent draws of an allele
with frequency ``p_j``); SNPs are independent (no linkage). Three designs:

- ``"unrelated"``: every individual is drawn from one population;
- ``"siblings"``: ``n / 2`` families of two full siblings, whose (unrelated) parents are drawn
  from the population and who each receive one of the two alleles of each parent, at random;
- ``"two_populations"``: half of the individuals from each of two populations whose allele
  frequencies have drifted apart from common ancestral ones by the Balding-Nichols model,
  ``p_kj ~ Beta(p_j (1 - F) / F, (1 - p_j)(1 - F) / F)``, so that ``F`` is Wright's F_ST
  (Balding and Nichols 1995).

The (ancestral) allele frequencies are drawn from the uniform distribution on
``[maf_low, 0.5]`` (default ``[0.05, 0.5]``), a common choice in simulation studies of
GREML (for instance Yang et al. 2010 draw them from a uniform distribution as well).

>>> sample = simulate_genotypes(6, 50, seed=1)
>>> sample.G.shape, sorted(set(sample.G.ravel().tolist())) == [0, 1, 2]
((6, 50), True)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import linalg, stats

from lmmlib.errors import LmmInputError

__all__ = ["GenotypeSample", "Phenotype", "simulate_genotypes", "standardize_genotypes", "grm",
           "simulate_phenotype", "principal_components", "gwas"]

DESIGNS = ("unrelated", "siblings", "two_populations")


class GenotypeSample(NamedTuple):
    """Simulated genotypes: ``G`` (n x m counts, int8), the allele frequencies ``freq`` (m,
    ancestral ones for two populations), and per individual its ``population`` (0 or 1) and
    ``family`` (an id shared by siblings; every unrelated individual has its own)."""

    G: np.ndarray
    freq: np.ndarray
    population: np.ndarray
    family: np.ndarray


class Phenotype(NamedTuple):
    """A simulated phenotype ``y = g + e``: the genetic values ``g``, the indices of the causal
    SNPs and their effects on the standardised genotypes."""

    y: np.ndarray
    g: np.ndarray
    causal: np.ndarray
    effects: np.ndarray


def _hwe_genotypes(rng, freq: np.ndarray, n: int) -> np.ndarray:
    """n x m allele counts: two independent Bernoulli(p_j) draws per SNP (Hardy-Weinberg)."""
    return rng.binomial(2, freq, size=(n, freq.size)).astype(np.int8)


def simulate_genotypes(n: int, m: int, design: str = "unrelated", *, maf_low: float = 0.05,
                       fst: float = 0.1, seed=None) -> GenotypeSample:
    """Simulate ``n`` individuals genotyped at ``m`` independent SNPs (see the module docstring).

    Allele frequencies: ``p_j ~ Uniform(maf_low, 0.5)``. For ``design="two_populations"``,
    the frequencies of each population are ``Beta(p_j (1 - F)/F, (1 - p_j)(1 - F)/F)`` with
    ``F = fst`` (Balding and Nichols 1995); for ``"siblings"``, ``n`` must be even and rows
    ``2k`` and ``2k + 1`` are the two children of family ``k``.

    >>> s = simulate_genotypes(4, 1000, "siblings", seed=2)
    >>> s.family.tolist()
    [0, 0, 1, 1]
    """
    if design not in DESIGNS:
        raise LmmInputError(f"design must be one of {DESIGNS}, got {design!r}")
    if n < 2 or m < 1:
        raise LmmInputError(f"need at least 2 individuals and 1 SNP, got n={n}, m={m}")
    if not 0 < maf_low < 0.5:
        raise LmmInputError(f"maf_low must lie in (0, 0.5), got {maf_low}")
    rng = np.random.default_rng(seed)
    freq = rng.uniform(maf_low, 0.5, m)
    population = np.zeros(n, dtype=int)
    family = np.arange(n)
    if design == "unrelated":
        G = _hwe_genotypes(rng, freq, n)
    elif design == "siblings":
        if n % 2:
            raise LmmInputError(f"the siblings design needs an even n (pairs), got n={n}")
        n_fam = n // 2
        parents = _hwe_genotypes(rng, freq, 2 * n_fam).reshape(n_fam, 2, m)
        # each child receives one allele of each parent: allele 1 with probability count / 2
        transmitted = rng.binomial(1, np.repeat(parents, 2, axis=0) / 2.0)  # (2 n_fam, 2, m)
        G = transmitted.sum(axis=1).astype(np.int8)
        family = np.repeat(np.arange(n_fam), 2)
    else:
        if not 0 < fst < 1:
            raise LmmInputError(f"fst must lie in (0, 1), got {fst}")
        a = freq * (1 - fst) / fst
        b = (1 - freq) * (1 - fst) / fst
        population = (np.arange(n) >= n // 2).astype(int)
        G = np.empty((n, m), dtype=np.int8)
        for k in (0, 1):
            rows = population == k
            G[rows] = _hwe_genotypes(rng, rng.beta(a, b), int(rows.sum()))
    return GenotypeSample(G, freq, population, family)


def _genotype_matrix(G) -> np.ndarray:
    G = np.asarray(G)
    if G.ndim != 2:
        raise LmmInputError(f"genotypes must be an n x m matrix, got shape {G.shape}")
    if not np.issubdtype(G.dtype, np.number) or not np.all(np.isfinite(G)):
        raise LmmInputError("genotypes must be finite numbers (allele counts 0, 1, 2)")
    return G


def standardize_genotypes(G) -> tuple[np.ndarray, np.ndarray]:
    """Standardised genotypes ``w_ij = (x_ij - 2 p_j) / sqrt(2 p_j (1 - p_j))`` (Yang et al.
    2010), with ``p_j`` the sample allele frequency; monomorphic SNPs are dropped.

    Returns ``(W, kept)``: the n x m' matrix and the indices of the SNPs kept.

    >>> W, kept = standardize_genotypes([[0, 2], [1, 2], [2, 2]])
    >>> kept.tolist(), W[:, 0].round(3).tolist()
    ([0], [-1.414, 0.0, 1.414])
    """
    G = _genotype_matrix(G)
    p = G.mean(axis=0) / 2.0
    kept = np.flatnonzero((p > 0) & (p < 1))
    p = p[kept]
    W = (G[:, kept] - 2 * p) / np.sqrt(2 * p * (1 - p))
    return W, kept


def grm(G, block: int = 2000) -> np.ndarray:
    """The standardised genomic relationship matrix ``A = W W' / m`` (Yang et al. 2010, 2011).

    ``W`` holds the standardised genotypes of :func:`standardize_genotypes` (sample allele
    frequencies; monomorphic SNPs dropped, ``m`` counts the SNPs kept). ``A_ij`` estimates the
    genomic relationship of individuals ``i`` and ``j`` relative to the sample: about 0 for
    unrelated pairs (with variance about ``1 / m`` for independent SNPs), about 0.5 for full
    siblings, about 1 on the diagonal. (GCTA computes the diagonal with a slightly different
    estimator, ``1 + F_i``; the off-diagonal elements are these.) Centring by the sample
    frequencies makes ``A 1 = 0``: ``A`` has rank at most ``n - 1``. The SNPs are processed in
    blocks of ``block`` columns to bound the memory.

    >>> A = grm(simulate_genotypes(5, 2000, seed=3).G)
    >>> A.shape, bool(np.allclose(A, A.T)), bool(abs(A.sum()) < 1e-8)
    ((5, 5), True, True)
    """
    G = _genotype_matrix(G)
    n, m = G.shape
    A = np.zeros((n, n))
    m_used = 0
    for start in range(0, m, block):
        W, kept = standardize_genotypes(G[:, start:start + block])
        A += W @ W.T
        m_used += kept.size
    if m_used == 0:
        raise LmmInputError("every SNP is monomorphic in this sample: the GRM is undefined")
    A /= m_used
    return (A + A.T) / 2


def simulate_phenotype(G, h2: float, n_causal: int, *, seed=None) -> Phenotype:
    """A phenotype with heritability ``h2`` from ``n_causal`` SNPs chosen at random.

    ``y = g + e`` with ``g = W_c u``, ``W_c`` the standardised genotypes of the causal SNPs,
    ``u_j ~ N(0, h2 / n_causal)`` and ``e_i ~ N(0, 1 - h2)``, so that ``Var(g_i) = h2`` and
    ``Var(y_i) = 1`` in expectation, and ``g ~ N(0, h2 A_c)`` given the genotypes, where
    ``A_c`` is the GRM of the causal SNPs (the model of Yang et al. 2010).

    >>> pheno = simulate_phenotype(simulate_genotypes(200, 300, seed=4).G, 0.5, 30, seed=5)
    >>> pheno.y.shape, pheno.causal.size
    ((200,), 30)
    """
    G = _genotype_matrix(G)
    if not 0 <= h2 <= 1:
        raise LmmInputError(f"h2 must lie in [0, 1], got {h2}")
    p = G.mean(axis=0) / 2.0
    kept = np.flatnonzero((p > 0) & (p < 1))
    if not 1 <= n_causal <= kept.size:
        raise LmmInputError(f"n_causal must be between 1 and the {kept.size} polymorphic SNPs, "
                            f"got {n_causal}")
    rng = np.random.default_rng(seed)
    causal = kept[np.sort(rng.choice(kept.size, n_causal, replace=False))]
    effects = rng.normal(0.0, np.sqrt(h2 / n_causal), n_causal)
    W_causal, _ = standardize_genotypes(G[:, causal])    # only the causal columns
    g = W_causal @ effects
    y = g + rng.normal(0.0, np.sqrt(1 - h2), G.shape[0])
    return Phenotype(y, g, causal, effects)


def principal_components(K, k: int) -> np.ndarray:
    """The ``k`` leading eigenvectors of a relationship matrix ``K`` (n x k, largest first):
    the principal components of the genotypes used to adjust for population structure
    (Price et al. 2006), ready to enter ``X`` as covariates.

    >>> K = np.diag([3.0, 1.0, 2.0])
    >>> np.abs(principal_components(K, 2)).tolist()
    [[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]
    """
    K = np.asarray(K, dtype=float)
    n = K.shape[0]
    if K.ndim != 2 or K.shape != (n, n) or not 1 <= k <= n:
        raise LmmInputError(f"need a square K and 1 <= k <= n, got shape {K.shape} and k={k}")
    _, vectors = linalg.eigh(K, subset_by_index=[n - k, n - 1])
    return vectors[:, ::-1]


def gwas(y, G, X=None, block: int = 2000) -> pd.DataFrame:
    """A single-SNP scan: for every SNP ``j``, the least-squares fit of ``y = X b + x_j beta_j
    + e`` (``X`` defaults to an intercept), with ``beta_j``, its standard error, the t-test of
    ``beta_j = 0`` on ``n - p - 1`` degrees of freedom and ``r2``, the share of the variance of
    ``y`` (after ``X``) that the SNP explains. By the Frisch-Waugh-Lovell theorem each fit is
    the regression of the ``X``-residuals of ``y`` on those of ``x_j``.

    >>> scan = gwas([1.0, 2.0, 3.0, 4.5], [[0, 1], [1, 1], [1, 0], [2, 0]])
    >>> scan.columns.tolist()
    ['beta', 'se', 't', 'p', 'r2']
    """
    G = _genotype_matrix(G)
    y = np.asarray(y, dtype=float)
    n = y.size
    if y.shape != (n,) or G.shape[0] != n or not np.all(np.isfinite(y)):
        raise LmmInputError(f"y must be a finite vector with one entry per row of G "
                            f"({G.shape[0]}), got shape {y.shape}")
    X = np.ones((n, 1)) if X is None else np.asarray(X, dtype=float).reshape(n, -1)
    Q, _ = np.linalg.qr(X)
    df = n - X.shape[1] - 1

    def resid(M):
        return M - Q @ (Q.T @ M)

    ry = resid(y)
    syy = ry @ ry
    rows = []
    for start in range(0, G.shape[1], block):
        R = resid(G[:, start:start + block].astype(float))
        sxx = np.einsum("ij,ij->j", R, R)
        with np.errstate(invalid="ignore", divide="ignore"):
            beta = (R.T @ ry) / sxx
            r2 = beta**2 * sxx / syy
            se = np.sqrt((syy - beta**2 * sxx) / df / sxx)
        rows.append(pd.DataFrame({"beta": beta, "se": se, "t": beta / se, "r2": r2}))
    out = pd.concat(rows, ignore_index=True)
    out.insert(3, "p", 2 * stats.t.sf(np.abs(out["t"]), df))
    return out
