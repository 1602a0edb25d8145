"""Build the students' edition of the site: the book without the solutions of the exercises.

It needs no second execution. It takes the notebooks the main build executed (cells from
``_build/jupyter_execute``, outputs, glued values included, from its jupyter-cache), drops
every solution (the gated ``solution-start`` ... ``solution-end`` form and ``{solution}``
blocks: sphinx-exercise's ``hide_solutions`` crashes on the gated form), and builds that
copy with execution off into
``_build/students/html``. The students' reader notebooks (from make_notebooks.py) replace the
downloadable .ipynb files and are served under ``notebooks/``.

    python scripts/students_edition.py      # after scripts/build-book.sh
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_notebooks import (BUILD, ROOT, STUDENTS, ConversionError, chapters,
                            publish_to_site, read_executed, split_solutions)  # noqa: E402

OUT = BUILD / "students"
# benchmarks: the Performance page includes a file; scripts and pyproject.toml: the launch
# buttons (book/_ext/reader_launch.py) use make_notebooks.py
COPY = ["_toc.yml", "_static", "book", "benchmarks", "scripts", "pyproject.toml", "requirements.txt"]


def strip_solutions(nb, where: str):
    """The executed notebook without its solutions."""
    cells = []
    for item in split_solutions(nb.cells, where):
        if item[0] == "md":
            cells.append(nbformat.v4.new_markdown_cell(item[1]))
        elif item[0] == "code":
            cells.append(item[1])
    stripped = nbformat.from_dict(dict(nb))
    stripped.metadata.pop("source_map", None)  # the cells have changed
    stripped.cells = cells
    return stripped


def executed(docname: str):
    """The executed notebook; for a page myst-nb did not cache (Performance), the .ipynb it
    wrote, with the glued values put back (the build keeps them in a .glue.json)."""
    try:
        return read_executed(docname)
    except ConversionError:
        path = BUILD / "jupyter_execute" / f"{docname}.ipynb"
        nb = nbformat.read(path, as_version=4)
        glue = json.loads(path.with_suffix(".glue.json").read_text())
        cell = nbformat.v4.new_code_cell("# the values glued into the text by the build")
        cell.metadata = {"tags": ["remove-cell"]}
        for output in glue.values():  # stored without their mime prefix
            prefix = output["metadata"]["scrapbook"]["mime_prefix"]
            output = dict(output, data={prefix + k: v for k, v in output["data"].items()})
            cell.outputs.append(nbformat.from_dict(output))
        nb.cells.insert(0, cell)
        return nb


def main() -> int:
    try:
        return _main()
    except ConversionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _main() -> int:
    src = OUT / "src"
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    for name in COPY:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif path.exists():
            shutil.copy2(path, src / name)
    for docname in chapters() + ["book/performance"]:
        nb = strip_solutions(executed(docname), f"{docname}.md")
        (src / f"{docname}.md").unlink()
        nbformat.write(nb, src / f"{docname}.ipynb")
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["title"] = config["title"] + " (students' edition)"
    config["execute"]["execute_notebooks"] = "off"
    config["sphinx"].setdefault("config", {})["reader_notebooks_edition"] = STUDENTS
    (src / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    subprocess.run([str(jupyter_book), "build", str(src), "--builder", "html", "-W", "-n",
                    "--keep-going", "--path-output", str(OUT)], check=True)
    site = OUT / "html"
    if site.exists():
        shutil.rmtree(site)
    shutil.move(OUT / "_build" / "html", site)
    publish_to_site(sorted((BUILD / "notebooks" / STUDENTS).glob("*.ipynb")), site)
    print(f"==> students' edition: {site}/index.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
