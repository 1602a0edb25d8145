"""Cold-start speed of lmmlib.blmer on chapter 5's model, against brms's published run.

The measure is brms's: effective draws per second of wall time, from a cold start with
compilation included -- the smallest bulk ESS over the model's parameters (the fixed
effects, SDs, correlation and sigma) divided by the wall time of the whole run.

Each run is a fresh Python process with empty PyTensor and numba caches (a first run on a
new machine, as on Binder): it imports lmmlib, builds the model, compiles it, samples 4
chains of 1,000 draws after 1,000 warm-up iterations (seeded), and computes the summary.
The wall time is measured by this script from the start of the process to its end.
brms's number (83 s, smallest bulk ESS 483: 5.8 per second; 2 chains of 2,000 iterations)
is the one published with the issue and shipped in lmmlib's reference data; R is not
installed here, so brms is not rerun.

Usage (from the repository's root)::

    .venv/bin/python benchmarks/bayes.py            # results/bayes.json
    .venv/bin/python benchmarks/bayes.py --repeats 1 --output /tmp/b.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

#: the child process: one cold run; prints its own timings as JSON on the last line
CHILD = r"""
import json, time
t0 = time.perf_counter()
import lmmlib
from lmmlib import datasets
from lmmlib.bayes import blmer
t_import = time.perf_counter() - t0
sleep = datasets.sleepstudy()
t1 = time.perf_counter()
fit = blmer("Reaction ~ Days + (Days | Subject)", sleep, priors="brms", draws=1000,
            tune=1000, chains=4, seed=2018, cores=CORES)
t_fit = time.perf_counter() - t1
table = fit.summary()
t_all = time.perf_counter() - t0
stats = fit.idata["sample_stats"]
print(json.dumps({
    "import_s": t_import, "blmer_s": t_fit, "in_process_s": t_all,
    "min_ess_bulk": float(table["ess_bulk"].min()),
    "min_ess_bulk_parameter": str(table["ess_bulk"].idxmin()),
    "min_ess_tail": float(table["ess_tail"].min()),
    "max_r_hat": float(table["r_hat"].max()),
    "divergences": fit.divergences,
    "sampling_s": float(stats.attrs.get("sampling_time", float("nan"))),
    "means": table["mean"].round(4).to_dict(),
}))
"""


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cold_run(cores: int) -> dict:
    """One run in a fresh process with empty compilation caches; wall time measured here."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ)
        env["NUMBA_CACHE_DIR"] = str(Path(cache) / "numba")
        env["PYTENSOR_FLAGS"] = f"compiledir={Path(cache) / 'pytensor'}"
        before = load()
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", CHILD.replace("CORES", str(cores))],
                             env=env, cwd=ROOT, capture_output=True, text=True, check=True)
        wall = time.perf_counter() - start
        result = json.loads(out.stdout.strip().splitlines()[-1])
    result.update(cores=cores, wall_s=wall, ess_per_s=result["min_ess_bulk"] / wall,
                  load_before=before, load_after=load(), stderr_lines=len(out.stderr.split()))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cores", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--output", default=str(HERE / "results" / "bayes.json"))
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from lmmlib import datasets

    brms = datasets.reference("brms_sleepstudy")
    runs = []
    for _ in range(args.repeats):
        for cores in args.cores:
            run = cold_run(cores)
            print(f"cores={cores}: {run['wall_s']:.1f} s, smallest bulk ESS "
                  f"{run['min_ess_bulk']:.0f}, {run['ess_per_s']:.1f} per s, "
                  f"load {run['load_before']}", flush=True)
            runs.append(run)
    import arviz
    import numba
    import pymc
    import pytensor

    results = {
        "model": "Reaction ~ Days + (Days | Subject), sleepstudy, priors='brms'",
        "sampler": "PyMC NUTS, log density and gradient compiled by PyTensor's numba backend",
        "draws": {"chains": 4, "tune": 1000, "draws": 1000},
        "target_ess_per_s": 2 * brms["ess_per_second"],
        "brms": {"wall_s": brms["wall_seconds"], "min_ess_bulk": brms["smallest_bulk_ess"],
                 "ess_per_s": brms["ess_per_second"], "chains": brms["chains"],
                 "iter": brms["iter"], "warmup": brms["warmup"],
                 "note": "published with issue 9 (lmmlib reference 'brms_sleepstudy'); "
                         "not rerun here (no R)"},
        "runs": runs,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "pymc": pymc.__version__,
                    "pytensor": pytensor.__version__, "numba": numba.__version__,
                    "arviz": arviz.__version__,
                    "note": "shared machine: the load averages (1, 5, 15 min) before and after "
                            "each run are recorded with it"},
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
