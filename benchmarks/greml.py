"""Speed of lmmlib.greml against GCTA's algorithm, and its scaling in n.

    .venv/bin/python benchmarks/greml.py              # results/greml.json (several minutes)
    .venv/bin/python benchmarks/greml.py --sizes 500 1000 --output /tmp/quick.json

For each number of individuals n: simulate n unrelated individuals at ``M_SNPS`` SNPs, form the
GRM (timed, but not part of the target: it depends on the number of SNPs), then time

- ``lmmlib.greml``: the eigendecomposition of K (``eigen_relationship``: checks and LAPACK's
  ``syevd``, O(n^3), once) and the fit (rotation of y and X, O(n^2), and the search over h2 with
  the information matrix and the profile interval, O(n) per evaluation), median of 3 fits;
- the peer: GCTA's algorithm, AI-REML on a dense V (Yang et al. 2011; Gilmour et al. 1995),
  written here in numpy: every iteration forms V = s_g K + s_e I, its Cholesky factor and
  V^-1 (O(n^3) each), P, the score and the average-information matrix, and takes a Newton
  step; it stops when the REML log-likelihood changes by less than 1e-4 (GCTA's rule). It runs
  up to ``PEER_MAX_N`` individuals; its estimates are compared with lmmlib's.

GCTA itself (a compiled program) is not installed here; the peer reproduces its algorithm, not
its code or its speed. The target of issue 11: n = 5,000 in under 30 s including the
eigendecomposition, on the project's 2-core machine. The load average of the machine is
recorded before and after every measurement: other jobs share the two cores, so the CPU time of
the process is recorded too (with one BLAS thread it is about the time on an idle core). BLAS runs with
one thread unless ``--threads`` says otherwise (measured on the loaded machine: two OpenBLAS
threads made ``eigh`` of a 2000 x 2000 matrix 7.7 times slower, 36.9 s against 4.8 s).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from scipy import linalg
from threadpoolctl import threadpool_limits

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import lmmlib  # noqa: E402
from lmmlib.genetics import grm, simulate_genotypes, simulate_phenotype  # noqa: E402
from lmmlib.heritability import eigen_relationship, greml  # noqa: E402

SIZES = (500, 1000, 2000, 3000, 5000)
M_SNPS = 5000
N_CAUSAL = 500
H2 = 0.5
PEER_MAX_N = 3000
TARGET_N, TARGET_S = 5000, 30.0
SEED = 20261201


def load() -> float:
    return os.getloadavg()[0]


def ai_reml_dense(y, K, X, tol=1e-4, max_iter=50):
    """GCTA's AI-REML on a dense V: returns (sigma_g2, sigma_e2, iterations)."""
    n = y.size
    theta = np.full(2, y.var() / 2)
    derivs = [K, np.eye(n)]
    old = -np.inf
    for it in range(1, max_iter + 1):
        V = theta[0] * K + theta[1] * np.eye(n)
        c = linalg.cho_factor(V, lower=True)
        Vi = linalg.cho_solve(c, np.eye(n))
        ViX = Vi @ X
        XViX = X.T @ ViX
        P = Vi - ViX @ np.linalg.solve(XViX, ViX.T)
        Py = P @ y
        loglik = -0.5 * (2 * np.log(np.diag(c[0])).sum() + np.linalg.slogdet(XViX)[1] + y @ Py)
        a = [Vk @ Py for Vk in derivs]
        score = np.array([-0.5 * np.sum(P * Vk) + 0.5 * Py @ ak for Vk, ak in zip(derivs, a)])
        AI = 0.5 * np.array([[ak @ P @ al for al in a] for ak in a])
        theta = np.maximum(theta + np.linalg.solve(AI, score), 1e-6 * y.var())
        if abs(loglik - old) < tol:
            break
        old = loglik
    return theta[0], theta[1], it


def measure(n: int, peer: bool) -> dict:
    sample = simulate_genotypes(n, M_SNPS, seed=SEED + n)
    t = time.perf_counter()
    K = grm(sample.G)
    grm_s = time.perf_counter() - t
    y = simulate_phenotype(sample.G, H2, N_CAUSAL, seed=SEED + n + 1).y
    load_before = load()
    t, c = time.perf_counter(), time.process_time()
    eig = eigen_relationship(K)
    eigen_s, eigen_cpu_s = time.perf_counter() - t, time.process_time() - c
    fit_times, fit_cpu = [], []
    for _ in range(3):
        t, c = time.perf_counter(), time.process_time()
        fit = greml(y, eig)
        fit.confint()
        fit_times.append(time.perf_counter() - t)
        fit_cpu.append(time.process_time() - c)
    out = {
        "n": n, "m_snps": M_SNPS, "grm_s": grm_s, "eigen_s": eigen_s,
        "fit_s": float(np.median(fit_times)), "total_s": eigen_s + float(np.median(fit_times)),
        "fit_cpu_s": float(np.median(fit_cpu)),
        # CPU time of this process: with one BLAS thread, about the wall time on an idle core
        "eigen_cpu_s": eigen_cpu_s, "total_cpu_s": eigen_cpu_s + float(np.median(fit_cpu)),
        "h2": fit.h2, "se_h2": fit.se_h2, "load_before": load_before, "load_after": load(),
    }
    if peer:
        load_before = load()
        t, c = time.perf_counter(), time.process_time()
        s_g, s_e, iterations = ai_reml_dense(y, K, np.ones((n, 1)))
        out["peer"] = {"algorithm": "AI-REML on a dense V (GCTA's)",
                       "time_s": time.perf_counter() - t, "cpu_s": time.process_time() - c,
                       "iterations": iterations,
                       "h2": s_g / (s_g + s_e), "abs_diff_h2": abs(s_g / (s_g + s_e) - fit.h2),
                       "load_before": load_before, "load_after": load()}
    print(json.dumps(out), flush=True)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--output", type=Path, default=HERE / "results" / "greml.json")
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS threads (default 1: on the shared 2-core machine two OpenBLAS "
                             "threads made a 2000 x 2000 eigendecomposition 8 times slower)")
    args = parser.parse_args(argv)
    import run  # the machine description of the main suite

    with threadpool_limits(limits=args.threads, user_api="blas"):
        results = [measure(n, n <= PEER_MAX_N) for n in args.sizes]
    by_n = {r["n"]: r for r in results}
    sizes = np.array([r["n"] for r in results], dtype=float)
    big = sizes >= 1000
    slope = (np.polyfit(np.log(sizes[big]), np.log([r["eigen_s"] for r in results if
                                                     r["n"] >= 1000]), 1)[0]
             if big.sum() >= 2 else None)
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": run._git("rev-parse", "HEAD"),
        "machine": run.machine(),
        "lmmlib_version": lmmlib.__version__,
        "settings": {"blas_threads": args.threads, "m_snps": M_SNPS, "n_causal": N_CAUSAL, "h2": H2, "seed": SEED,
                     "peer_max_n": PEER_MAX_N},
        "target": {"n": TARGET_N, "seconds": TARGET_S,
                   "met": (by_n[TARGET_N]["total_s"] < TARGET_S) if TARGET_N in by_n else None,
                   "met_in_cpu_time": (by_n[TARGET_N]["total_cpu_s"] < TARGET_S)
                   if TARGET_N in by_n else None},
        "eigen_scaling_exponent": slope,
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
