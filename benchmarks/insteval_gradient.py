"""Benchmark: the InstEval-sized crossed fit with the analytic gradient, against mixedlm.

    .venv/bin/python benchmarks/insteval_gradient.py            # results/insteval_gradient.json
    .venv/bin/python benchmarks/insteval_gradient.py --rounds 1 --output /tmp/x.json

Issue 15 (Speed): lmmlib needed about 107 evaluations of the REML criterion on a model of
InstEval's shape (73,421 rows; ``y ~ service + (1 | s) + (1 | d) + (1 | dept)``, the
``insteval_sim`` case of ``cases.py``) against mixedlm's 30, because its optimiser took
finite-difference gradients.  This times, in one process and in alternating rounds,

- ``lmmlib``: ``lmmlib.lmer`` as it is (the analytic gradient of :mod:`lmmlib.gradient`);
- ``lmmlib_fd``: the same with the gradient not passed to the optimiser, which then runs
  exactly as before this change (L-BFGS-B on finite differences in theta): the "before",
  measured in the same run;
- ``mixedlm``: ``mixedlm.lmer(formula, data, REML=True)`` (1.3.0, the Rust-backed port).

Each is timed from formula and in-memory DataFrame to fitted object; the median over
``--rounds`` is reported with the evaluations, the CPU seconds of this process, the cores
other processes kept busy meanwhile and the load average.  Both tools get one BLAS thread
(as ``benchmarks/bootstrap.py``), the machine's 2 cores being shared.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

import run  # the machine, versions and load helpers of the main benchmark suite
import simulate

HERE = Path(__file__).resolve().parent
FORMULA = "y ~ service + (1 | s) + (1 | d) + (1 | dept)"


def timed(function) -> dict:
    busy0, own0 = run._busy_seconds(), time.process_time()
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    out = function()
    wall = time.perf_counter() - t0
    own = time.process_time() - own0
    other = max(0.0, (run._busy_seconds() - busy0 - own) / wall)
    return {"wall_s": wall, "cpu_s": own, "background_cores": other, "load_1min": load,
            "out": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", type=Path, default=HERE / "results" / "insteval_gradient.json")
    args = parser.parse_args()

    import mixedlm
    from threadpoolctl import threadpool_limits

    import lmmlib
    import lmmlib.lmm

    threadpool_limits(limits=1)
    data, truth = simulate.crossed_design()
    sleep = lmmlib.datasets.sleepstudy()
    lmmlib.lmer("Reaction ~ Days + (Days | Subject)", sleep)  # warm-up: imports, caches
    mixedlm.lmer("Reaction ~ Days + (Days | Subject)", sleep, REML=True)

    optimize_theta = lmmlib.lmm.optimize_theta

    def without_gradient(*args, gradient=None, **options):  # the optimiser as it was before
        return optimize_theta(*args, **options)

    def lmmlib_fd():
        lmmlib.lmm.optimize_theta = without_gradient
        try:
            return lmmlib.lmer(FORMULA, data)
        finally:
            lmmlib.lmm.optimize_theta = optimize_theta

    calls = {
        "lmmlib": lambda: lmmlib.lmer(FORMULA, data),
        "lmmlib_fd": lmmlib_fd,
        "mixedlm": lambda: mixedlm.lmer(FORMULA, data, REML=True),
    }
    load_start = os.getloadavg()
    t_start = time.perf_counter()
    runs: dict[str, list] = {tool: [] for tool in calls}
    fits = {}
    for r in range(args.rounds):
        for tool, call in calls.items():
            m = timed(call)
            fits[tool] = m.pop("out")
            runs[tool].append(m)
            print(f"round {r + 1}: {tool} {m['wall_s']:.2f} s wall, {m['cpu_s']:.2f} s CPU, "
                  f"load {m['load_1min']:.1f}", flush=True)

    def estimates(tool, fit):
        if tool == "mixedlm":
            return {"n_evaluations": int(fit.function_evals),
                    "criterion": float(fit.deviance),  # the REML criterion for a REML fit
                    "theta": np.asarray(fit.theta, dtype=float).tolist()}
        return {"n_evaluations": int(fit.optinfo["n_evaluations"]),
                "n_gradients": int(fit.optinfo.get("n_gradients", 0)),
                "criterion": float(fit.optinfo["objective"]),
                "theta": fit.theta.tolist(), "converged": bool(fit.optinfo["converged"])}

    results = {}
    for tool, ms in runs.items():
        results[tool] = {
            "median_s": float(np.median([m["wall_s"] for m in ms])),
            "median_cpu_s": float(np.median([m["cpu_s"] for m in ms])),
            "runs": ms,
            **estimates(tool, fits[tool]),
        }
    record = {
        "title": "InstEval-sized crossed model (simulated), REML: analytic gradient vs mixedlm",
        "formula": FORMULA,
        "rows": int(len(data)),
        "rounds": args.rounds,
        **run.provenance(load_start, t_start),
        "results": results,
        "ratio_lmmlib_to_mixedlm": results["lmmlib"]["median_s"] / results["mixedlm"]["median_s"],
        "ratio_cpu_lmmlib_to_mixedlm": (results["lmmlib"]["median_cpu_s"]
                                        / results["mixedlm"]["median_cpu_s"]),
        "criterion_difference_lmmlib_fd": abs(results["lmmlib"]["criterion"]
                                              - results["lmmlib_fd"]["criterion"]),
        "truth": truth,
    }
    args.output.parent.mkdir(exist_ok=True)
    args.output.write_text(json.dumps(record, indent=2, default=float) + "\n")
    print(json.dumps({k: record[k] for k in ("ratio_lmmlib_to_mixedlm",
                                             "ratio_cpu_lmmlib_to_mixedlm")}))
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
