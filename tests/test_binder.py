"""binder/ is the readers' environment on Binder (repo2docker reads it instead of the
repository's requirements.txt): every package the chapters import, and every dependency of
lmmlib (postBuild installs lmmlib with --no-deps), pinned as in requirements.txt; no Jupyter
packages (the image brings its own, and pinning ours conflicts with them); no build or test
tooling; no editable install."""

from __future__ import annotations

import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import make_notebooks as mk  # noqa: E402

JUPYTER = {"jupyterlab", "notebook", "ipykernel", "ipython", "jupyter-server", "jupyter-client",
           "jupyter-core", "jupyter-book", "jupytext", "myst-nb", "pytest", "hypothesis",
           "sphinx"}


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line)
        assert m, f"{path.name}: {line!r} is not a pinned requirement"
        pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


def _locked() -> dict[str, str]:
    return {k.replace("_", "-"): v for k, v in mk._pins().items()}


def test_binder_pins_what_the_chapters_and_lmmlib_need():
    jupytext = pytest.importorskip("jupytext")
    binder = _pins(ROOT / "binder" / "requirements.txt")
    locked = _locked()
    dists = packages_distributions()
    needed = {d.replace("_", "-") for d in mk._lmmlib_dependencies()}
    for docname in mk.chapters():
        nb = jupytext.read(ROOT / f"{docname}.md")
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            for module in mk.imported_modules(cell.source):
                if module in sys.stdlib_module_names or module in ("lmmlib", "myst_nb",
                                                                    "IPython"):
                    continue
                needed.add(dists[module][0].lower().replace("_", "-"))
    missing = sorted(needed - set(binder))
    assert not missing, f"binder/requirements.txt lacks {missing} (pin them as in " \
                        "requirements.txt)"
    for name, version in binder.items():
        assert locked.get(name) == version, f"{name}=={version}: requirements.txt has " \
                                            f"{locked.get(name)}"
    assert not JUPYTER & set(binder), "no Jupyter, build or test packages on Binder"


def test_binder_has_no_editable_install_and_installs_lmmlib():
    text = (ROOT / "binder" / "requirements.txt").read_text()
    assert not re.search(r"^\s*-e\b", text, flags=re.M)
    post = (ROOT / "binder" / "postBuild").read_text()
    assert "pip install" in post and "--no-deps" in post and " -e " not in post
    assert (ROOT / "binder" / "postBuild").stat().st_mode & 0o111, "postBuild is executable"
    assert (ROOT / "binder" / "runtime.txt").read_text().strip() == \
        (ROOT / "runtime.txt").read_text().strip()
