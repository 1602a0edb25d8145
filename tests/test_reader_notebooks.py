"""The reader notebooks (scripts/make_notebooks.py): plain Jupyter notebooks made from the
chapters, for Binder, JupyterLab, JupyterHub and Colab.

- The converter, on small inputs: each construct of chapters 1-3 becomes what Jupyter
  renders, and an unknown construct stops it with an error naming the construct.
- The notebooks the build wrote (both editions): no raw MyST role or directive, numbers
  filled in, solutions folded in the answer key and absent from the students' edition (the
  students' site too, when built with --students).
- One chapter opened in JupyterLab (chromium, playwright) renders as a notebook.

The tests of the build's notebooks need `bash scripts/build-book.sh` first; they are
skipped without it, except in CI, where the build runs before the tests.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import bs4
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import make_notebooks as mk  # noqa: E402

BUILD = ROOT / "_build"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


# ---------------------------------------------------------------------------------------
# The converter on small inputs
# ---------------------------------------------------------------------------------------


def fake_context(**glue) -> mk.BookContext:
    doc = "book/09_test"
    return mk.BookContext(
        docname=doc,
        glue={k: {"text/plain": repr(v)} for k, v in glue.items()},
        labels={
            "fig-test-a": (doc, "fig-test-a", "A caption"),
            "sec-test-b": (doc, "sec-test-b", "The second section"),
            "ch-other": ("book/08_other", "ch-other", "Another chapter"),
            "ex-test-one": (doc, "ex-test-one", "Exercise title"),
        },
        fignumbers={doc: {"figure": {"fig-test-a": (9, 1)},
                          "displaymath": {"equation-eq-test-c": (9, 2)},
                          "exercise": {"ex-test-one": (9, 3)}}},
        headings=[("Title", "9"), ("The second section", "9.1"), ("Sub", None)],
        section_numbers={doc: {"Title": "9", "The second section": "9.1"}},
        equations={"eq-test-c": (doc, 2)},
        cite=lambda role, keys: (f"Smith [{keys[0]}]" if role == "t"
                                 else f"[Smith, {', '.join(keys)}]"),
        references=lambda keys: [f"Smith. {k}." for k in keys],
    )


def notebook(*cells) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    for c in cells:
        if isinstance(c, tuple):
            source, meta = c
            cell = nbformat.v4.new_code_cell(source)
            cell.metadata = meta
        elif c.startswith("CODE:"):
            cell = nbformat.v4.new_code_cell(c[5:])
        else:
            cell = nbformat.v4.new_markdown_cell(c)
        nb.cells.append(cell)
    return nb


def convert(nb, edition=mk.ANSWERS, **glue):
    return mk.convert(nb, fake_context(**glue), edition, where="test.md",
                      repo_url="https://github.com/o/r", ref="main")


def markdown_of(nb) -> str:
    return "\n\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


CHAPTER = """(ch-test)=
# Title

:::{admonition} Learning goals
:class: tip
- one {cite:t}`smith2020`
:::

(sec-test-b)=
## The second section

We measured {glue:text}`n` subjects, slope {glue:text}`slope:.2f` ms
({numref}`fig-test-a`, {ref}`sec-test-b`, {ref}`chapter 8 <ch-other>`, {eq}`eq-test-c`,
{numref}`ex-test-one`), as others did {cite:p}`smith2020,jones2021`. Inline code
`{glue:text}` stays as it is.

$$
y = x
$$ (eq-test-c)

"""

EXERCISE = """### Sub

```{exercise} Try it
:label: ex-test-one

Fit the model.
```

```{solution-start} ex-test-one
:class: dropdown
```

The SOLUTION TEXT is here.
"""


def test_constructs_of_chapters_1_to_3_become_what_jupyter_renders():
    nb = convert(notebook(
        CHAPTER,
        ("import numpy as np\nfrom myst_nb import glue\nglue('n', 18)", {"tags": ["remove-cell"]}),
        ("plot()", {"mystnb": {"figure": {"caption": "Slopes of {glue:text}`n` subjects",
                                          "name": "fig-test-a"},
                               "image": {"alt": "a plot"}}}),
        EXERCISE,
        "CODE:print('SOLUTION CODE')",
        "More SOLUTION TEXT.\n\n```{solution-end}\n```\n\nAfter the solutions.",
    ), n=18, slope=10.4673)
    md = markdown_of(nb)
    assert "# 9. Title" in md and "## 9.1. The second section" in md and "### Sub" in md
    assert "> **Learning goals**" in md and "> - one Smith [smith2020]" in md
    assert "We measured 18 subjects, slope 10.47 ms" in md
    assert "(Fig. 9.1, The second section, chapter 8, (9.2),\nExercise 9.3)" in md
    assert "[Smith, smith2020, jones2021]" in md
    assert "`{glue:text}` stays" in md
    assert "y = x\n\\tag{9.2}\n$$" in md
    assert "> **Exercise 9.3** (Try it)\n>\n> Fit the model." in md
    assert "**Fig. 9.1** Slopes of 18 subjects" in md
    assert "(sec-test-b)=" not in md and "(ch-test)=" not in md
    # the solution, folded, with its code as text; what follows it is a cell of its own
    details = [c.source for c in nb.cells if c.source.startswith("<details>")]
    assert len(details) == 1
    assert "Solution to Exercise 9.3" in details[0]
    assert "The SOLUTION TEXT is here." in details[0] and "More SOLUTION TEXT." in details[0]
    assert "```python\nprint('SOLUTION CODE')\n```" in details[0]
    assert details[0].rstrip().endswith("</details>")
    assert any(c.source == "After the solutions." for c in nb.cells)
    assert "## References\n\n- Smith. jones2021.\n- Smith. smith2020." in md
    assert mk.raw_myst(nb) == []
    # code: the install cell first, the hidden cell collapsed and runnable without myst_nb
    assert nb.cells[0].metadata["tags"] == ["install"]
    hidden = next(c for c in nb.cells if "glue('n', 18)" in c.source)
    assert hidden.metadata["jupyter"]["source_hidden"] and hidden.metadata["cellView"] == "form"
    assert "except ImportError:" in hidden.source
    assert not any("SOLUTION CODE" in c.source for c in nb.cells if c.cell_type == "code")


def test_students_edition_has_no_solution():
    nb = convert(notebook(
        CHAPTER + EXERCISE, "CODE:print('SOLUTION CODE')",
        "More SOLUTION TEXT.\n\n```{solution-end}\n```\n\nAfter.",
        "````{solution} ex-test-one\n:class: dropdown\n\nUNGATED SOLUTION\n````\n\nEnd."),
        mk.STUDENTS, n=18, slope=1.0)
    text = json.dumps(nb)
    assert "SOLUTION" not in text and "Solution to" not in text
    assert "Exercise 9.3" in text and "After." in text and "End." in text


def test_glossary_terms_become_their_text():
    # the glossary lives on the site; a notebook shows the term as written in the sentence
    text = json.dumps(convert(notebook(
        CHAPTER + "See {term}`partial pooling <Partial pooling>` and {term}`REML`.\n\n"
        + EXERCISE + "\n```{solution-end}\n```\n"), n=18, slope=1.0))
    assert "See partial pooling and REML." in text and "{term}" not in text


@pytest.mark.parametrize("source, message", [
    ("See {index}`glossary`.", "unknown role {index}"),
    ("```{note}\nA note.\n```", "unknown directive {note}"),
    (":::{admonition} Careful\n:class: danger\nText\n:::", "admonition class"),
    (":::{admonition} Careful\n:name: box\nText\n:::", "unknown option"),
    ("A claim.[^1]\n\n[^1]: The footnote.", "footnote"),
    ("Term\n: its definition", "definition list"),
    ("\\begin{equation}\nx\n\\end{equation}", "top-level LaTeX"),
    ("{{ substitution }}", "substitution"),
    ("{numref}`fig-nowhere`", "unknown label"),
    ("{glue:text}`nothing_glued`", "not found"),
    ("```{solution-start} ex-test-one\n```\nNever ended.", "without solution-end"),
])
def test_unknown_construct_fails_loudly(source, message):
    with pytest.raises(mk.ConversionError, match=re.escape(message)) as err:
        convert(notebook("# Title\n\n" + source))
    assert "test.md" in str(err.value)


@pytest.mark.parametrize("meta, message", [
    ({"tags": ["remove-stderr"]}, "unknown cell tag"),
    ({"mystnb": {"code_prompt_show": "x"}}, "unknown mystnb metadata"),
])
def test_unknown_cell_metadata_fails_loudly(meta, message):
    with pytest.raises(mk.ConversionError, match=message):
        convert(notebook("# Title", ("x = 1", meta)))


def test_other_uses_of_myst_nb_fail_loudly():
    with pytest.raises(mk.ConversionError, match="myst_nb"):
        convert(notebook("# Title", "CODE:import myst_nb\nmyst_nb.glue('a', 1)"))


def test_glue_fallback_works_without_myst_nb():
    code = mk.reader_code("from myst_nb import glue\nglue('a', 1, display=False)", "x")
    code = code.replace("from myst_nb import glue", "from no_such_module_here import glue")
    exec(compile(code, "cell", "exec"), {})  # the fallback is defined and called


def test_install_cell_installs_only_what_is_missing(monkeypatch):
    import importlib.util

    source = mk.install_cell({"numpy", "statsmodels", "lmmlib", "os"},
                             "https://github.com/o/r", "v1")
    assert "numpy" not in source.split("NEEDED")[1].split("\n")[0]  # comes with lmmlib
    calls = []
    monkeypatch.setattr(subprocess, "check_call", lambda args: calls.append(args))
    exec(compile(source, "install", "exec"), {})
    assert calls == []  # everything is here: nothing installed
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("lmmlib", "statsmodels")
                        else real(name, *a))
    exec(compile(source, "install", "exec"), {})
    assert calls and calls[0][-2:] == ["lmmlib @ git+https://github.com/o/r@v1", "statsmodels"]


# ---------------------------------------------------------------------------------------
# The notebooks and the students' site the build wrote
# ---------------------------------------------------------------------------------------


def _built(path: Path) -> Path:
    if not path.exists():
        message = f"{path.relative_to(ROOT)} not built: run bash scripts/build-book.sh first"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


CHAPTERS = [Path(d).name for d in mk.chapters()]


def _solution_texts(chapter: str) -> list[str]:
    """Lines of the chapter's solutions (text and code) that occur nowhere else in it and
    are long enough to be telling."""
    items = mk.split_solutions(mk.read_executed(f"book/{chapter}", BUILD).cells)

    def lines_of(subs):
        out = []
        for sub in subs:
            if sub[0] == "code" and "remove-cell" in sub[1].metadata.get("tags", []):
                continue  # hidden plumbing: not in the answer key either
            text = sub[1] if sub[0] == "md" else sub[1].source
            out += [ln.strip() for ln in text.split("\n")
                    if len(ln.strip()) > 40 and "{" not in ln and "$" not in ln]
        return out

    inside = lines_of([sub for item in items if item[0] == "solution" for sub in item[2]])
    outside = set(lines_of([item for item in items if item[0] != "solution"]))
    return [ln for ln in inside if ln not in outside]


@pytest.mark.parametrize("chapter", CHAPTERS)
@pytest.mark.parametrize("edition", [mk.ANSWERS, mk.STUDENTS])
def test_built_notebook_has_no_raw_myst(chapter, edition):
    path = _built(BUILD / "notebooks" / edition / f"{chapter}.ipynb")
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert mk.raw_myst(nb) == []
    md = markdown_of(nb)
    assert "{glue" not in md and "{cite" not in md and "{numref" not in md
    assert re.search(r"^# \d+\. ", md, flags=re.M), "the chapter title carries its number"
    assert nb.cells[0].cell_type == "code" and "pip" in nb.cells[0].source


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_students_edition_contains_no_solution_text(chapter):
    students = _built(BUILD / "notebooks" / mk.STUDENTS / f"{chapter}.ipynb").read_text()
    answers = _built(BUILD / "notebooks" / mk.ANSWERS / f"{chapter}.ipynb").read_text()
    solutions = _solution_texts(chapter)
    assert len(solutions) >= 4, "the chapter's solutions were found"
    for line in solutions:
        assert json.dumps(line)[1:-1] in answers, line
        assert json.dumps(line)[1:-1] not in students, line
    assert "Solution to Exercise" not in students
    site = BUILD / "students" / "html"
    if not site.exists():
        if IN_CI:
            pytest.fail("the students' site was not built (build-book.sh --students)")
        return
    html = (site / "book" / f"{chapter}.html").read_text()
    flat = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", html))
    for line in solutions:
        assert re.sub(r"\s+", " ", line) not in flat, line
    assert 'class="solution' not in html
    download = (site / "_sources" / "book" / f"{chapter}.ipynb").read_text()
    assert download == students


# ---------------------------------------------------------------------------------------
# One chapter in JupyterLab
# ---------------------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no browser: {CHROMIUM} is absent")
def test_chapter_renders_as_a_notebook_in_jupyterlab(tmp_path):
    if IN_CI:  # CI installs playwright (requirements.txt) and Debian's chromium (.ci/run)
        from playwright import sync_api
    else:
        sync_api = pytest.importorskip("playwright.sync_api")
    # Chapter 3: its first screen (JupyterLab renders only what is in view) has a figure
    # reference and a citation.
    chapter = "03_lmm_from_scratch"
    src = _built(BUILD / "notebooks" / mk.ANSWERS / f"{chapter}.ipynb")
    (tmp_path / src.name).write_bytes(src.read_bytes())
    port, token = _free_port(), "live-test"
    log = (tmp_path / "lab.log").open("w")
    lab = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}",
         "--ServerApp.open_browser=False", "--LabApp.news_url=", "--ServerApp.ip=127.0.0.1", "--allow-root"],
        stdout=log, stderr=subprocess.STDOUT,
        env=dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / ".jupyter"),
                 JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / ".ws")))
    try:
        deadline = time.time() + 60
        while time.time() < deadline and lab.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not start:\n" + (tmp_path / "lab.log").read_text())
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM,
                                        args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/lab/tree/{src.name}?token={token}",
                      timeout=90_000)
            page.wait_for_selector(".jp-Notebook .jp-MarkdownOutput", timeout=90_000)
            page.wait_for_timeout(2000)
            text = page.inner_text(".jp-Notebook")
            page.screenshot(path=os.environ.get("LAB_SCREENSHOT", str(tmp_path / "lab.png")))
            browser.close()
    finally:
        lab.terminate()
        try:
            lab.wait(timeout=30)
        except subprocess.TimeoutExpired:
            lab.kill()
            lab.wait(timeout=30)
        log.close()
    # a notebook, not a text editor, with rendered markdown
    assert not re.search(r"\{(cite|glue|numref|ref|eq)[:\w]*\}`", text)
    assert ":::{admonition}" not in text and "```{exercise}" not in text
    assert "Learning goals" in text
    assert re.search(r"\bFig\. \d+\.\d+", text), "figure references carry their numbers"
    assert re.search(r"et al\.", text), "citations are text"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_site_launch_buttons_open_the_reader_notebook(chapter):
    html = _built(BUILD / "html" / "book" / f"{chapter}.html").read_text()
    assert f"blob/notebooks/answers/{chapter}.ipynb" in html, "Colab button"
    assert f"notebooks?urlpath=lab/tree/answers/{chapter}.ipynb" in html, "Binder button"
    assert f"lab/tree/book/{chapter}.md" not in html, "no launch of the MyST source"
    served = _built(BUILD / "html" / "notebooks" / f"{chapter}.ipynb").read_text()
    assert (BUILD / "html" / "_sources" / "book" / f"{chapter}.ipynb").read_text() == served


@pytest.mark.parametrize("edition", [mk.ANSWERS, mk.STUDENTS])
def test_unknown_construct_in_a_solution_fails_in_both_editions(edition):
    solution = "```{solution-start} ex-test-one\n```\nSee {index}`x`.\n```{solution-end}\n```"
    with pytest.raises(mk.ConversionError, match="unknown role"):
        convert(notebook(CHAPTER + EXERCISE.split("```{solution-start}")[0] + solution),
                edition, n=1, slope=1.0)


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_students_site_launches_the_students_notebooks(chapter):
    html = _built(BUILD / "students" / "html" / "book" / f"{chapter}.html").read_text()
    assert f"blob/notebooks/students/{chapter}.ipynb" in html
    assert "/answers/" not in html
    # the figures and the glued numbers of the build's run, without executing again
    answers = (BUILD / "html" / "book" / f"{chapter}.html").read_text()
    # every figure of the answer key outside its solutions (a solution may draw one too)
    page = bs4.BeautifulSoup(answers, "html.parser")
    for solution in page.select("div.solution"):
        solution.decompose()
    assert html.count("<img") == len(page.find_all("img")) > 0
    # and every glued value outside them
    assert html.count("pasted-text") == str(page).count("pasted-text") > 0


def test_maths_in_a_block_quote_stays_on_one_line():
    """Jupyter removes the maths before it parses markdown: a formula broken over two lines
    of a block quote would keep the "> " of the second line."""
    nb = convert(notebook(
        "# Title\n\n## The second section\n\n### Sub\n\n:::{admonition} Box\n:class: note\n"
        "A formula $\\mathcal N(\\mathbf 0,\n\\mathbf V)$ broken, and a display\n\n$$\n"
        "a = b\\\\\nc = d\n$$\n:::"))
    md = markdown_of(nb)
    assert "> A formula $\\mathcal N(\\mathbf 0, \\mathbf V)$ broken, and a display" in md
    assert "> $$ a = b\\\\ c = d $$" in md
