"""Every chapter of the book executes without error (and without warnings on stderr), as its
readers run it: the reader notebook's code (scripts/make_notebooks.py: the install cell
first, myst_nb's glue with its fallback, the hidden cells) in a folder of its own that holds
nothing but the notebook, so a chapter that reads a file outside lmmlib (../tests, ...)
fails here, and in the readers' environment: a kernel in a virtual environment made from
binder/requirements.txt, with lmmlib installed (not editable) and only what a Jupyter image
brings besides (ipykernel, Jinja2), so a chapter that imports a package Binder lacks fails. The code cells are the same in the answer key and the students' edition (the
answer key shows solutions as text); the build executes the solutions.

The chapters are the MyST markdown notebooks listed in ``_toc.yml``; each is read with
jupytext and executed with nbclient. Deselect with ``-m "not notebooks"`` for a quick run
of the library's tests.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import make_notebooks  # noqa: E402


def _toc_files() -> list[Path]:
    text = (ROOT / "_toc.yml").read_text()
    names = re.findall(r"^\s*(?:-\s*file|root):\s*(\S+)", text, flags=re.M)
    return [ROOT / f"{name}.md" for name in names]


def _is_notebook(path: Path) -> bool:
    return "```{code-cell}" in path.read_text()


NOTEBOOKS = [p for p in _toc_files() if p.exists() and _is_notebook(p)]
CHAPTERS = [ROOT / f"{name}.md" for name in make_notebooks.chapters()]


READER_ENV = ROOT / "_build" / "reader-venv"
KERNEL = "lmm-reader"


def _pinned(*names: str) -> list[str]:
    pins = {k.lower(): v for k, v in make_notebooks._pins().items()}
    return [f"{n}=={pins[n.lower()]}" for n in names]


@pytest.fixture(scope="session")
def reader_kernel():
    """The readers' environment (made once, remade when binder/ changes), with lmmlib
    reinstalled from this checkout, as a kernel named KERNEL."""
    extras = _pinned("ipykernel", "Jinja2")  # what every Jupyter image has
    want = hashlib.sha256(((ROOT / "binder" / "requirements.txt").read_text()
                           + " ".join(extras)).encode()).hexdigest()
    stamp = READER_ENV / ".binder.sha256"
    python = READER_ENV / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    if not stamp.exists() or stamp.read_text() != want:
        venv.create(READER_ENV, with_pip=True, clear=True)
        subprocess.run(pip + ["-r", str(ROOT / "binder" / "requirements.txt"), *extras],
                       check=True)
        subprocess.run([str(python), "-m", "ipykernel", "install", "--prefix",
                        str(READER_ENV), "--name", KERNEL], check=True,
                       stdout=subprocess.DEVNULL)
        stamp.write_text(want)
    # lmmlib as binder/postBuild installs it: from this checkout, not editable. It is built
    # from a clean copy of its sources: building in the checkout would reuse setuptools'
    # build/ folder, which can hold older copies of the modules.
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(ROOT / "lmmlib", Path(tmp) / "lmmlib",
                        ignore=shutil.ignore_patterns("__pycache__"))
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(ROOT / name, Path(tmp) / name)
        subprocess.run(pip + ["--no-deps", "--force-reinstall", tmp], check=True)
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = str(READER_ENV / "share" / "jupyter")
    yield KERNEL
    if old is None:
        os.environ.pop("JUPYTER_PATH")
    else:
        os.environ["JUPYTER_PATH"] = old


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes_cleanly(path: Path, tmp_path: Path, request) -> None:
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    nb = jupytext.read(path)
    if path in CHAPTERS:  # as readers get it, alone in a folder
        nb = make_notebooks.convert(nb, None, where=str(path.relative_to(ROOT)),
                                    repo_url="https://example.invalid/none", ref="none")
        folder = tmp_path
        assert list(folder.iterdir()) == []
        kernel = request.getfixturevalue("reader_kernel")
    else:  # the About pages read the repository (benchmark results): run them in place
        folder, kernel = path.parent, "python3"
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name=kernel, resources={"metadata": {"path": str(folder)}}
    )
    client.execute()
    stderr = [
        f"cell {i}: {out.get('text', '')}"
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "stream" and out.get("name") == "stderr"
    ]
    assert not stderr, f"{path.name} wrote to stderr (warnings must be fixed):\n" + "\n".join(stderr)
    if path in CHAPTERS:
        assert not nb.cells[0].get("outputs"), "the install cell installed nothing: all is here"


def test_toc_lists_only_existing_pages() -> None:
    missing = [str(p.relative_to(ROOT)) for p in _toc_files() if not p.exists()]
    assert not missing, f"_toc.yml lists pages that do not exist: {missing}"
