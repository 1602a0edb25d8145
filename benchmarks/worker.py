"""Measure one case with one tool, in this (fresh) process; print the result as JSON.

    python benchmarks/worker.py CASE TOOL [--quick]

The last line of standard output is ``RESULT <json>``.  Times are wall-clock seconds
(``time.perf_counter``) from formula and DataFrame to fitted object; the data are in memory
before the clock starts.  ``peak_rss_mb`` is this process's peak resident memory
(``getrusage(RUSAGE_SELF).ru_maxrss``), i.e. Python, the libraries, the data and the fits;
``baseline_rss_mb`` is the same peak just before the first fit of the case's data.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import cases
import numpy as np
import pandas as pd
import simulate
import tools


def peak_rss_mb() -> float:
    """Peak resident set size of this process, in MB (10^6 bytes); Linux reports KiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def summarise(times: list[float]) -> dict:
    return {
        "times_s": [round(t, 6) for t in times],
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
    }


def warm_up(tool: str, case: dict, data) -> None:
    """One untimed fit, so that imports, caches and compiled code are ready.

    Small cases repeat their own fit; large ones fit sleepstudy with the same kind of model."""
    if case["warmup"] == "same":
        tools.fit_quietly(tool, case["spec"], data)
    else:
        sleep = cases.CASES["sleepstudy"]
        tools.fit_quietly(tool, sleep["spec"], cases.load_data("sleepstudy")[0])


def lmmlib_phases(spec: dict, data) -> dict:
    """One lmmlib fit split into its phases (the same steps as ``lmmlib.lmer``)."""
    from lmmlib.design import build_design
    from lmmlib.lmm import LinearMixedModel

    t0 = time.perf_counter()
    design = build_design(spec["formula"], data)
    t1 = time.perf_counter()
    model = LinearMixedModel(design, reml=True)
    t2 = time.perf_counter()
    model.fit()
    t3 = time.perf_counter()
    evals = []
    for _ in range(20):
        s = time.perf_counter()
        model.objective(model.theta)
        evals.append(time.perf_counter() - s)
    n_eval = int(model.optinfo["n_evaluations"])
    objective_s = statistics.median(evals)
    return {
        "design_s": t1 - t0,
        "crossproducts_s": t2 - t1,
        "optimize_and_estimates_s": t3 - t2,
        "total_s": t3 - t0,
        "n_evaluations": n_eval,
        "objective_s": objective_s,
        "evaluations_s": n_eval * objective_s,
    }


def measure_fit(case_id: str, tool: str, quick: bool) -> dict:
    case = cases.CASES[case_id]
    repeats = case["quick_repeats"] if quick else case["repeats"]
    data, truth = cases.load_data(case_id, quick)
    out = {"n_rows": len(data), "repeats": repeats, "truth": truth}

    if tool == "statsmodels" and case_id == "million":
        # too slow to run blindly: time a tenth of the data first and extrapolate linearly
        small, _ = cases.smaller_data(case_id, quick)
        warm_up(tool, case, data)
        t0 = time.perf_counter()
        tools.fit_quietly(tool, case["spec"], small)
        t_small = time.perf_counter() - t0
        group = case["spec"]["sm_groups"]
        out["smaller"] = {"n_rows": len(small), "n_groups": int(small[group].nunique()),
                          "seconds": t_small}
        out["estimated_s"] = 10 * t_small
        if quick or out["estimated_s"] > cases.STATSMODELS_LIMIT_S:
            out["status"] = "not run"
            out["peak_rss_mb"] = peak_rss_mb()
            return out
        repeats = out["repeats"] = 1
    else:
        warm_up(tool, case, data)

    out["baseline_rss_mb"] = peak_rss_mb()
    if tool == "lmmlib" and case["warmup"] != "same" and not quick:
        out["phases"] = lmmlib_phases(case["spec"], data)
    times, messages = [], set()
    for _ in range(repeats):
        t0 = time.perf_counter()
        fitted, caught = tools.fit_quietly(tool, case["spec"], data)
        times.append(time.perf_counter() - t0)
        messages.update(caught)
    out.update(summarise(times))
    out["peak_rss_mb"] = peak_rss_mb()
    out["estimates"] = tools.ESTIMATES[tool](fitted, case["spec"])
    out["warnings"] = sorted(messages)
    out["status"] = "ok"
    return out


def measure_scaling(quick: bool) -> dict:
    """Cross-products and one objective evaluation at n = 10^4, 10^5, 10^6 rows.

    The terms are built directly (not through a formula): with 10^4 rows and 10^4 subjects
    there is one row per subject, which lmmlib's ``build_design`` rightly refuses for a model
    (more random effects than rows) but which is fine for timing the objective at a given theta.
    """
    from lmmlib.design import RandomTerm
    from lmmlib.pls import PenalizedLeastSquares

    case = cases.CASES["scaling"]
    sizes = case["quick_sizes"] if quick else case["sizes"]
    subjects = case["quick_subjects"] if quick else case["subjects"]
    rows = []
    for n in sizes:
        data, truth = simulate.random_slopes(n=n, subjects=subjects)
        x = data["x"].to_numpy()
        X = np.column_stack([np.ones(n), x])
        codes = data["g"].cat.codes.to_numpy().astype(np.int64)
        term = RandomTerm("g", pd.Index(range(subjects)), codes, ("(Intercept)", "x"), X, "x")
        y = data["y"].to_numpy()
        crossprod = []
        for _ in range(case["crossprod_repeats"]):
            t0 = time.perf_counter()
            pls = PenalizedLeastSquares(X, y, [term])
            crossprod.append(time.perf_counter() - t0)
        # the true theta: lower triangle of chol(Sigma) / sigma (lme4's relative factor)
        sd = truth["sdcor"]
        s0, s1, rho = sd["sd_(Intercept)|g"], sd["sd_x|g"], sd["cor_x.(Intercept)|g"]
        cov = np.array([[s0**2, rho * s0 * s1], [rho * s0 * s1, s1**2]])
        T = np.linalg.cholesky(cov) / sd["sigma"]
        theta = np.array([T[0, 0], T[1, 0], T[1, 1]])
        for _ in range(3):
            pls.objective(theta, True)
        evals = []
        for _ in range(case["objective_repeats"]):
            t0 = time.perf_counter()
            value = pls.objective(theta, True)
            evals.append(time.perf_counter() - t0)
        rows.append({
            "n_rows": n, "subjects": subjects,
            "crossproducts_s": statistics.median(crossprod),
            "objective_s": statistics.median(evals),
            "objective_min_s": min(evals),
            "objective_value": float(value),
        })
    return {"status": "ok", "rows": rows, "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", choices=sorted(cases.CASES))
    parser.add_argument("tool", choices=tools.TOOLS)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.case == "scaling":
        result = measure_scaling(args.quick)
    else:
        result = measure_fit(args.case, args.tool, args.quick)
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
