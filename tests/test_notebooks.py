"""Every chapter of the book executes without error (and without warnings on stderr).

The chapters are MyST markdown notebooks listed in ``_toc.yml``; each is read with jupytext
and executed with nbclient in its own folder, as the book build does. Deselect with
``-m "not notebooks"`` for a quick run of the library's tests.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _toc_files() -> list[Path]:
    text = (ROOT / "_toc.yml").read_text()
    names = re.findall(r"^\s*(?:-\s*file|root):\s*(\S+)", text, flags=re.M)
    return [ROOT / f"{name}.md" for name in names]


def _is_notebook(path: Path) -> bool:
    return "```{code-cell}" in path.read_text()


NOTEBOOKS = [p for p in _toc_files() if p.exists() and _is_notebook(p)]


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes_cleanly(path: Path) -> None:
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    nb = jupytext.read(path)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
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


def test_toc_lists_only_existing_pages() -> None:
    missing = [str(p.relative_to(ROOT)) for p in _toc_files() if not p.exists()]
    assert not missing, f"_toc.yml lists pages that do not exist: {missing}"
