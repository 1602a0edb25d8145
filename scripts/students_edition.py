"""Build the students' edition of the site: the book without the solutions of the exercises.

It needs no second execution. It takes the notebooks the main build executed
(``_build/jupyter_execute``), drops every solution (the gated ``solution-start`` ...
``solution-end`` form and ``{solution}`` blocks: sphinx-exercise's ``hide_solutions`` crashes
on the gated form), puts the glued values back, and builds that copy with execution off into
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
from make_notebooks import (BUILD, ROOT, STUDENTS, chapters, publish_to_site,
                            split_solutions)  # noqa: E402

OUT = BUILD / "students"
COPY = ["_toc.yml", "book", "benchmarks"]  # benchmarks: the Performance page includes a file


def strip_solutions(nb, glue: dict, where: str):
    """The executed notebook without solutions, with its glued values in a hidden cell."""
    cells = []
    for item in split_solutions(nb.cells, where):
        if item[0] == "md":
            cells.append(nbformat.v4.new_markdown_cell(item[1]))
        elif item[0] == "code":
            cells.append(item[1])
    glued = nbformat.v4.new_code_cell("# the values glued into the text by the book's run")
    glued.metadata = {"tags": ["remove-cell"]}
    glued.outputs = []
    for output in glue.values():  # the build stores them without their mime prefix
        prefix = output["metadata"]["scrapbook"]["mime_prefix"]
        output = dict(output, data={prefix + k: v for k, v in output["data"].items()})
        glued.outputs.append(nbformat.from_dict(output))
    glued.execution_count = None
    stripped = nbformat.from_dict(dict(nb))
    stripped.metadata.pop("source_map", None)  # the cells have changed
    stripped.cells = [glued] + cells
    return stripped


def main() -> int:
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
        executed = BUILD / "jupyter_execute" / f"{docname}.ipynb"
        if not executed.exists():
            print(f"error: {executed} is missing: run scripts/build-book.sh first",
                  file=sys.stderr)
            return 1
        glue_file = executed.with_suffix(".glue.json")
        glue = json.loads(glue_file.read_text()) if glue_file.exists() else {}
        nb = strip_solutions(nbformat.read(executed, as_version=4), glue, f"{docname}.md")
        (src / f"{docname}.md").unlink()
        nbformat.write(nb, src / f"{docname}.ipynb")
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["title"] = config["title"] + " (students' edition)"
    config["execute"]["execute_notebooks"] = "off"
    (src / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    subprocess.run([str(Path(sys.executable).parent / "jupyter-book"), "build", str(src), "--builder", "html", "-W", "-n",
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
