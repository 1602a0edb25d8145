"""Cost of fixed-effect inference: Satterthwaite and Kenward-Roger df, against mixedlm.

Measures, in one run on one machine:

- sleepstudy (``Reaction ~ Days + (Days | Subject)``, REML): the fit, then
  ``fit.coef_table(ddf="satterthwaite")`` and ``ddf="kenward-roger"`` on a fitted model whose
  cached df are cleared before each repetition (so each one is computed from scratch), and
  mixedlm's ``satterthwaite_df`` and ``kenward_roger_df`` on a fresh mixedlm fit each time
  (only the df call is timed);
- the df both libraries give, on sleepstudy and on an unbalanced subset of it (120 of the 180
  rows, numpy ``default_rng(3)``), as a cross-check;
- the simulated InstEval-size crossed design of ``benchmarks/simulate.py`` (73,421 rows, three
  crossed random intercepts): the fit and the Satterthwaite table (Kenward-Roger would form
  dense 4,114 x 4,114 matrices: not run), and mixedlm's fit and ``satterthwaite_df`` in a
  child process with a time limit.

Run from the repository root: ``.venv/bin/python benchmarks/inference.py`` (about two
minutes; ``--quick`` repeats less).  Writes ``benchmarks/results/inference.json``, which the
Performance page reads.  BLAS runs single-threaded (as lmmlib's fits do).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from simulate import crossed_design  # noqa: E402

from lmmlib import datasets, lmer  # noqa: E402


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("lmmlib", "numpy", "scipy", "mixedlm"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def timed(fn, repeat: int) -> dict:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "repeat": repeat}


def clear(fit) -> None:
    fit.__dict__.pop("_inference_cache", None)


def lmmlib_table(fit, ddf):
    clear(fit)
    return fit.coef_table(ddf)


def mixedlm_fit(data, formula):
    import mixedlm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mixedlm.lmer(formula, data, REML=True)


def mixedlm_df(fit, method):
    import mixedlm

    f = mixedlm.satterthwaite_df if method == "satterthwaite" else mixedlm.kenward_roger_df
    return np.asarray(f(fit).df, dtype=float)


def mixedlm_timed_df(data, formula, method, repeat):
    """Median time of the df call, each on a fresh fit (so nothing is cached)."""
    times = []
    for _ in range(repeat):
        fit = mixedlm_fit(data, formula)
        start = time.perf_counter()
        mixedlm_df(fit, method)
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "repeat": repeat}


def _mixedlm_large(queue, formula):
    data, _ = crossed_design()
    start = time.perf_counter()
    fit = mixedlm_fit(data, formula)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    df = mixedlm_df(fit, "satterthwaite")
    queue.put({"fit_s": fit_s, "satterthwaite_s": time.perf_counter() - start,
               "df": df.tolist()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--timeout", type=float, default=900, help="limit for mixedlm, large")
    parser.add_argument("--output", default=str(ROOT / "benchmarks/results/inference.json"))
    args = parser.parse_args()
    repeat = 5 if args.quick else 30
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
    load_before = os.getloadavg()
    formula = "Reaction ~ Days + (Days | Subject)"
    sleep = datasets.sleepstudy()
    fit = lmer(formula, sleep)
    lmmlib_table(fit, "satterthwaite")  # warm up
    lmmlib_table(fit, "kenward-roger")
    sleep_case = {
        "lmmlib": {
            "fit": timed(lambda: lmer(formula, sleep), repeat),
            "satterthwaite": timed(lambda: lmmlib_table(fit, "satterthwaite"), repeat),
            "kenward_roger": timed(lambda: lmmlib_table(fit, "kenward-roger"), repeat),
        },
    }
    rows = np.sort(np.random.default_rng(3).choice(len(sleep), 120, replace=False))
    subset = sleep.iloc[rows]
    sub_fit = lmer(formula, subset)
    df = {
        "sleepstudy": {
            "lmmlib_satterthwaite": fit.coef_table("satterthwaite")["df"].tolist(),
            "lmmlib_kenward_roger": fit.coef_table("kenward-roger")["df"].tolist(),
        },
        "sleepstudy_subset120": {
            "lmmlib_satterthwaite": sub_fit.coef_table("satterthwaite")["df"].tolist(),
            "lmmlib_kenward_roger": sub_fit.coef_table("kenward-roger")["df"].tolist(),
        },
    }
    try:
        import mixedlm  # noqa: F401

        have_mixedlm = True
    except ImportError:
        have_mixedlm = False
    if have_mixedlm:
        mixedlm_df(mixedlm_fit(sleep, formula), "satterthwaite")  # warm up
        sleep_case["mixedlm"] = {
            "fit": timed(lambda: mixedlm_fit(sleep, formula), repeat),
            "satterthwaite": mixedlm_timed_df(sleep, formula, "satterthwaite", repeat),
            "kenward_roger": mixedlm_timed_df(sleep, formula, "kenward-roger", repeat),
        }
        for key, data in (("sleepstudy", sleep), ("sleepstudy_subset120", subset)):
            m = mixedlm_fit(data, formula)
            df[key]["mixedlm_satterthwaite"] = mixedlm_df(m, "satterthwaite").tolist()
            df[key]["mixedlm_kenward_roger"] = mixedlm_df(m, "kenward-roger").tolist()

    large_formula = "y ~ service + (1 | s) + (1 | d) + (1 | dept)"
    data, _ = crossed_design()
    start = time.perf_counter()
    big = lmer(large_formula, data)
    large = {"rows": len(data), "lmmlib": {"fit_s": time.perf_counter() - start}}
    times = []
    for _ in range(1 if args.quick else 3):
        start = time.perf_counter()
        table = lmmlib_table(big, "satterthwaite")
        times.append(time.perf_counter() - start)
    large["lmmlib"]["satterthwaite_s"] = statistics.median(times)
    large["lmmlib"]["df"] = table["df"].tolist()
    large["lmmlib"]["kenward_roger"] = "not run: dense 4,114 x 4,114 matrices"
    if have_mixedlm:
        queue = mp.get_context("spawn").Queue()
        child = mp.get_context("spawn").Process(target=_mixedlm_large,
                                                args=(queue, large_formula))
        child.start()
        child.join(args.timeout)
        if child.is_alive():
            child.terminate()
            large["mixedlm"] = f"did not finish within {args.timeout:g} s"
        else:
            large["mixedlm"] = queue.get() if not queue.empty() else "failed"
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3},
        "versions": versions(),
        "quick": args.quick,
        "sleepstudy": sleep_case,
        "df": df,
        "insteval_sim": large,
    }
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
