"""Every chapter of the book executes without error (and without warnings on stderr), as its
readers run it: the reader notebook's code (scripts/make_notebooks.py: the install cell
first, myst_nb's glue with its fallback, the hidden cells) in a folder of its own that holds
nothing but the notebook, so a chapter that reads a file outside lmmlib (../tests, ...)
fails here. The code cells are the same in the answer key and the students' edition (the
answer key shows solutions as text); the build executes the solutions.

The chapters are the MyST markdown notebooks listed in ``_toc.yml``; each is read with
jupytext and executed with nbclient. Deselect with ``-m "not notebooks"`` for a quick run
of the library's tests.
"""

from __future__ import annotations

import re
import sys
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


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes_cleanly(path: Path, tmp_path: Path) -> None:
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    nb = jupytext.read(path)
    if path in CHAPTERS:  # as readers get it, alone in a folder
        nb = make_notebooks.convert(nb, None, where=str(path.relative_to(ROOT)),
                                    repo_url="https://example.invalid/none", ref="none")
        folder = tmp_path
        assert list(folder.iterdir()) == []
    else:  # the About pages read the repository (benchmark results): run them in place
        folder = path.parent
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
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
