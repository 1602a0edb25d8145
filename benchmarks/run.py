"""Run lmmlib's benchmarks against its peers and save the results.

    .venv/bin/python benchmarks/run.py            # full run (a few minutes), results/latest.json
    .venv/bin/python benchmarks/run.py --quick    # smoke test on smaller data, results/quick.json

Every (case, tool) pair runs in a fresh Python process (``worker.py``), so that the peak memory
a process reports belongs to that case alone.  This script records the machine (CPU, cores,
memory, Python, numpy/scipy, BLAS and its environment variables), the versions of the tools, how
busy the machine was with other work while each case ran, whether lmmlib met each target, and
how far each peer's estimates are from lmmlib's (and from the truth, for simulated data).
The book's "Performance" page reads the JSON file written here; it never runs the benchmarks.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import cases
import tools

HERE = Path(__file__).resolve().parent
ENV_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS",
            "OMP_NUM_THREADS", "MKL_NUM_THREADS")


# --------------------------------------------------------------------------- the machine
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    return None


def _blas() -> list[dict]:
    import numpy  # noqa: F401  (loads numpy's BLAS)
    import scipy.linalg  # noqa: F401  (and scipy's)
    from threadpoolctl import threadpool_info

    keys = ("user_api", "internal_api", "version", "num_threads", "architecture", "filepath")
    return [{k: info.get(k) for k in keys} for info in threadpool_info()]


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(cases.ROOT), *args], capture_output=True,
                             text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def machine() -> dict:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "cores_available": affinity,
        "memory_gb": _memory_gb(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "blas": _blas(),
        "environment": {k: os.environ.get(k) for k in ENV_VARS},
    }


def versions() -> dict:
    names = ["lmmlib", "numpy", "scipy", "pandas", "formulaic", "statsmodels", "mixedlm",
             "threadpoolctl"]
    out = {name: tools.tool_version(name) for name in names}
    out["lmmlib_commit"] = _git("rev-parse", "--short", "HEAD")
    changes = _git("status", "--porcelain", "--", "lmmlib")
    out["lmmlib_uncommitted_changes"] = None if changes is None else bool(changes)
    return out



def provenance(load_start, t_start: float) -> dict:
    """What every results file records about its run: when, on what machine, with which
    versions, the load average at start and end, and how long it took (from ``t_start``, a
    ``time.perf_counter()`` reading)."""
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(),
        "load_average_at_start": load_start,
        "load_average_at_end": os.getloadavg(),
        "duration_s": time.perf_counter() - t_start,
    }

# --------------------------------------------------------------------------- background load
def _busy_seconds() -> float:
    """CPU seconds spent by all processes on this machine since boot (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def background_cores(seconds: float = 2.0) -> float:
    """How many cores other processes keep busy, measured over ``seconds``."""
    busy, t0 = _busy_seconds(), time.perf_counter()
    time.sleep(seconds)
    return (_busy_seconds() - busy) / (time.perf_counter() - t0)


def wait_until_quiet(max_wait: float, threshold: float = 0.25) -> float:
    """Wait (at most ``max_wait`` s) until other processes use less than ``threshold`` cores."""
    start = time.perf_counter()
    load = background_cores()
    while load > threshold and time.perf_counter() - start < max_wait:
        load = background_cores()
    return load


# --------------------------------------------------------------------------- one worker
def run_worker(case_id: str, tool: str, quick: bool, timeout: float) -> dict:
    cmd = [sys.executable, str(HERE / "worker.py"), case_id, tool] + (["--quick"] if quick else [])
    busy0, own0, t0 = _busy_seconds(), _children_cpu(), time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=HERE,
                              check=False)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "process_s": timeout}
    wall = time.perf_counter() - t0
    own = _children_cpu() - own0
    other = max(0.0, (_busy_seconds() - busy0 - own) / wall)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return {"status": "error", "returncode": proc.returncode, "stderr": proc.stderr[-3000:]}
    result = json.loads(lines[-1][len("RESULT "):])
    result["process_s"] = wall
    result["background_cores"] = other
    return result


# --------------------------------------------------------------------------- comparisons
def differences(ref: dict, other: dict) -> dict:
    """Largest absolute differences between two sets of estimates (see tools.py)."""
    fa, fb = list(ref["fixef"].values()), list(other["fixef"].values())
    sa, sb = ref["sdcor"], other["sdcor"]
    shared = [k for k in sa if k in sb]
    sds = [k for k in shared if k.startswith("sd_") or k == "sigma"]
    cors = [k for k in shared if k.startswith("cor_")]
    out = {
        "fixef": max(abs(a - b) for a, b in zip(fa, fb)) if len(fa) == len(fb) else None,
        "sd": max((abs(sa[k] - sb[k]) for k in sds), default=None),
        "sd_relative": max((abs(sa[k] - sb[k]) / abs(sa[k]) for k in sds if sa[k]), default=None),
        "cor": max((abs(sa[k] - sb[k]) for k in cors), default=None),
        "compared_sdcor": shared,
    }
    if ref.get("criterion") is not None and other.get("criterion") is not None:
        out["criterion"] = abs(ref["criterion"] - other["criterion"])
    return out


def lme4_sleepstudy() -> dict:
    """lme4's published REML fit of sleepstudy, in the shape of tools' estimates."""
    fit = json.loads(cases.LME4_REFERENCE.read_text())["fits"]["sleepstudy_slopes_reml"]
    sdcor = {}
    for row in fit["varcorr"]:
        if row["grp"] == "Residual":
            sdcor["sigma"] = row["sdcor"]
        elif row["var2"] is None:
            sdcor[f"sd_{row['var1']}|{row['grp']}"] = row["sdcor"]
        else:
            sdcor[f"cor_{row['var2']}.{row['var1']}|{row['grp']}"] = row["sdcor"]
    return {"source": json.loads(cases.LME4_REFERENCE.read_text())["source"],
            "fixef": fit["fixef"], "sdcor": sdcor, "criterion": fit["deviance"]}


def meets(result: dict, target: dict) -> bool | None:
    if result.get("status") != "ok" or "median_s" not in result:
        return None
    ok = result["median_s"] <= target["seconds"]
    if "memory_mb" in target:
        ok = ok and result["peak_rss_mb"] <= target["memory_mb"]
    return bool(ok)


def compare(case_id: str, record: dict) -> None:
    """Targets met, and differences from lmmlib (and from the truth) of each tool's estimates."""
    results = record["results"]
    truths = [truth for res in results.values() if (truth := res.pop("truth", None))]
    if truths:
        record["truth"] = truths[0]
    ref = results.get("lmmlib", {}).get("estimates")
    for tool, res in results.items():
        if "target" in record:
            res["meets_target"] = meets(res, record["target"])
        est = res.get("estimates")
        if est is None:
            continue
        if ref is not None and tool != "lmmlib":
            res["difference_from_lmmlib"] = differences(ref, est)
        if truths:
            res["difference_from_truth"] = differences(truths[0], est)
    if case_id == "sleepstudy" and ref is not None:
        lme4 = lme4_sleepstudy()
        record["reference"] = {"lme4": lme4, "difference_from_lmmlib": differences(ref, lme4)}


# --------------------------------------------------------------------------- output
def _rounded(obj, digits: int = 10):
    if isinstance(obj, float):
        return float(f"{obj:.{digits}g}")
    if isinstance(obj, dict):
        return {k: _rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rounded(v, digits) for v in obj]
    return obj


def print_summary(record: dict) -> None:
    for case_id, case in record["cases"].items():
        print(f"\n{case_id}: {case['title']}")
        for tool, res in case["results"].items():
            if case_id == "scaling":
                for row in res.get("rows", []):
                    print(f"  n={row['n_rows']:>9,}  cross-products {row['crossproducts_s']:.4f} s"
                          f"  one evaluation {1e3 * row['objective_s']:.3f} ms")
                continue
            if "median_s" in res:
                extra = f"median {res['median_s']:.4f} s, peak {res['peak_rss_mb']:.0f} MB"
            else:
                extra = res.get("status", "?") + (
                    f" (estimated {res['estimated_s']:.0f} s)" if "estimated_s" in res else "")
            diff = res.get("difference_from_lmmlib")
            if diff:
                extra += (f"; |diff| fixef {diff['fixef']:.2g}, sd {diff['sd']:.2g}, "
                          f"criterion {diff.get('criterion', float('nan')):.2g}")
            print(f"  {tool:<12} {extra}  target met: {res.get('meets_target')}")


def main() -> None:
    parser = argparse.ArgumentParser(description="Run lmmlib's benchmarks against its peers.")
    parser.add_argument("--quick", action="store_true", help="smoke test on smaller data")
    parser.add_argument("--cases", nargs="+", choices=list(cases.CASES), default=list(cases.CASES))
    parser.add_argument("--output", type=Path, help="JSON file (default results/latest.json; "
                        "results/quick.json with --quick, results/partial.json with --cases)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per case and tool")
    parser.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                        help="before each case, wait up to SECONDS for other processes to "
                        "leave the CPU idle (useful on a shared machine)")
    args = parser.parse_args()
    if args.output:
        output = args.output
    elif args.quick:
        output = HERE / "results" / "quick.json"
    elif set(args.cases) != set(cases.CASES):  # the book reads latest.json: all cases or none
        output = HERE / "results" / "partial.json"
    else:
        output = HERE / "results" / "latest.json"

    start = time.perf_counter()
    record = {
        "schema": 1,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "command": "python benchmarks/run.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "versions": versions(),
        "load_average_at_start": list(os.getloadavg()),
        "cases": {},
    }
    for case_id in args.cases:
        case = cases.CASES[case_id]
        entry = {k: case[k] for k in ("title", "description", "target", "note") if k in case}
        if "spec" in case:
            entry["formula"] = case["spec"]["formula"]
        entry["results"] = {}
        for tool in case["tools"]:
            quiet = wait_until_quiet(args.wait_quiet) if args.wait_quiet else None
            print(f"[{time.perf_counter() - start:6.0f} s] {case_id} / {tool} ...",
                  file=sys.stderr, flush=True)
            if case_id == "insteval" and args.quick:
                entry["results"][tool] = {"status": "not run (quick)"}
                continue
            res = run_worker(case_id, tool, args.quick, args.timeout)
            res["version"] = tools.tool_version(tool)
            if quiet is not None:
                res["background_cores_before"] = quiet
            entry["results"][tool] = res
        compare(case_id, entry)
        record["cases"][case_id] = entry
    record["duration_s"] = time.perf_counter() - start
    record["load_average_at_end"] = list(os.getloadavg())
    failed = [f"{case_id}/{tool}" for case_id, case in record["cases"].items()
              for tool, res in case["results"].items() if res.get("status") in ("error", "timeout")]
    if failed:  # keep the last good results (the book reads them); save this run aside
        output = output.with_name("failed.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(_rounded(record), indent=1) + "\n")
    print_summary(record)
    print(f"\nwrote {output} in {record['duration_s']:.0f} s", file=sys.stderr)
    if failed:
        sys.exit(f"failed: {', '.join(failed)} (see 'stderr' in {output})")


if __name__ == "__main__":
    main()
