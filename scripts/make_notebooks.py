"""Make the reader notebooks: each chapter as a plain Jupyter notebook (.ipynb) that renders
in JupyterLab, Jupyter Notebook, JupyterHub and Colab without any extension.

The chapters are MyST markdown notebooks; Jupyter shows their roles and directives as raw
text. This script reads what the book build produced and writes notebooks in which

- citations are text ("Belenky *et al.* [2003]", as on the site), with a References list at
  the end;
- figure, equation, exercise and section references carry the book's numbers ("Fig. 3.1",
  "(3.1)", "Exercise 3.2"), headings are numbered as on the site, figure captions follow
  their figure, labelled equations carry their number (``\\tag``);
- ``{glue:text}`` numbers are the values of the build's own execution;
- admonitions and exercises are block quotes;
- solutions are inside ``<details>`` (answer key, the default) or absent (students' edition);
- hidden cells (``remove-cell``) stay, so the notebook runs, but collapsed (JupyterLab's
  ``source_hidden``, Colab's form view);
- a first cell installs lmmlib (from the repository) and any missing package, only when
  missing, and ``from myst_nb import glue`` gets a fallback for Pythons without myst-nb.

Any MyST construct the converter does not know stops it with an error that names the file
and the construct (chapters may use only what chapters 1-3 use).

Inputs (all written by ``jupyter-book build``):
  _build/jupyter_execute/book/<chapter>.ipynb    executed notebook (its cells), and
  _build/.jupyter_cache                           its outputs
  _build/jupyter_execute/book/<chapter>.glue.json the glued values
  _build/.doctrees/environment.pickle            numbers of figures, equations, sections,
                                                 exercises; labels; the bibliography

    python scripts/make_notebooks.py                      # both editions, into _build/notebooks
    python scripts/make_notebooks.py --ref v2027-spring   # lmmlib installed from that tag

scripts/build-book.sh runs it after every build, so CI converts every chapter.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import pickle
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "_build"

ANSWERS = "answers"
STUDENTS = "students"


class ConversionError(Exception):
    """The chapter uses a construct the reader notebooks cannot show."""


# ---------------------------------------------------------------------------------------
# What the build knows: numbers, labels, citations, glued values
# ---------------------------------------------------------------------------------------


@dataclass
class BookContext:
    """Everything the conversion needs from the book build, for one chapter."""

    docname: str  # e.g. "book/03_lmm_from_scratch"
    glue: dict  # name -> mime bundle (``data``)
    labels: dict  # label -> (docname, node_id, title)
    fignumbers: dict  # docname -> {figtype: {node_id: (3, 1)}}
    headings: list  # [(title, "3.2" or None)] in document order
    section_numbers: dict  # docname -> {title: "3.2"}
    equations: dict  # label -> (docname, number)
    cite: object  # callable(role, keys) -> markdown text
    references: object  # callable(keys) -> [markdown text of the entry]
    cited: list = field(default_factory=list)  # keys, in order of first citation

    def number(self, docname: str, figtype: str, node_id: str) -> str | None:
        num = self.fignumbers.get(docname, {}).get(figtype, {}).get(node_id)
        return ".".join(map(str, num)) if num else None


class Book:
    """Loads the build's environment once; ``context(docname)`` gives one chapter's."""

    def __init__(self, build: Path = BUILD):
        env_path = build / ".doctrees" / "environment.pickle"
        if not env_path.exists():
            raise ConversionError(f"{env_path} is missing: build the book first")
        with env_path.open("rb") as f:
            env = pickle.load(f)
        self.build = build
        self.labels = dict(env.domaindata["std"]["labels"])
        self.fignumbers = {doc: dict(v) for doc, v in env.toc_fignumbers.items()}
        self.equations = dict(env.domaindata["math"]["objects"])
        self.tocs = env.tocs
        self.secnumbers = env.toc_secnumbers
        self.citations = {c.key: c for c in env.domaindata["cite"]["citations"]}
        self.section_numbers = {doc: self._section_numbers(doc) for doc in env.tocs}

    def _headings(self, docname: str) -> list[tuple[str, str | None]]:
        from docutils import nodes

        out = []
        for ref in self.tocs[docname].findall(nodes.reference):
            secnumber = self.secnumbers.get(docname, {}).get(ref["anchorname"] or "")
            num = ".".join(map(str, secnumber)) if secnumber else None
            out.append((ref.astext(), num))
        return out

    def _section_numbers(self, docname: str) -> dict[str, str]:
        return {title: num for title, num in self._headings(docname) if num}

    def _cite(self, role: str, keys: list[str]) -> str:
        import pybtex.plugin
        from pybtex.richtext import BaseMultipartText, Text
        from sphinxcontrib.bibtex.plugin import find_plugin
        from sphinxcontrib.bibtex.style.referencing import format_references
        from sphinxcontrib.bibtex.style.template import SphinxReferenceInfo, SphinxReferenceText

        style = find_plugin("sphinxcontrib.bibtex.style.referencing", "author_year")()
        missing = [k for k in keys if k not in self.citations]
        if missing:
            raise ConversionError(f"unknown citation key(s) {missing}")
        info = SphinxReferenceInfo(None, "", "", "", None, "", "")
        refs = [(self.citations[k].entry, self.citations[k].formatted_entry, info) for k in keys]
        text = format_references(style, role, refs)

        def plain(t):  # the site's links to the bibliography become plain text
            if isinstance(t, SphinxReferenceText):
                return Text(*[plain(p) for p in t.parts])
            if isinstance(t, BaseMultipartText):
                return t._create_similar([plain(p) for p in t.parts])
            return t

        # HTML, not markdown: pybtex's markdown backend writes \[ \], which MathJax reads
        # as display maths
        html = pybtex.plugin.find_plugin("pybtex.backends", "html")()
        return plain(text).render(html)

    def _references(self, keys: list[str]) -> list[str]:
        import pybtex.plugin

        html = pybtex.plugin.find_plugin("pybtex.backends", "html")()
        out = []
        for key in keys:
            entry = self.citations[key].formatted_entry
            text = entry.text.render(html).replace("\\url ", "")
            out.append(" ".join(text.split()))
        return out

    def context(self, docname: str) -> BookContext:
        glue_path = self.build / "jupyter_execute" / f"{docname}.glue.json"
        glue = {}
        if glue_path.exists():
            glue = {k: v["data"] for k, v in json.loads(glue_path.read_text()).items()}
        return BookContext(
            docname=docname,
            glue=glue,
            labels=self.labels,
            fignumbers=self.fignumbers,
            headings=self._headings(docname),
            section_numbers=self.section_numbers,
            equations=self.equations,
            cite=self._cite,
            references=self._references,
        )


# ---------------------------------------------------------------------------------------
# Markdown: MyST blocks and roles -> CommonMark + HTML that Jupyter renders
# ---------------------------------------------------------------------------------------

FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,}|:{3,})(?P<rest>.*)$")
DIRECTIVE = re.compile(r"^\{(?P<name>[A-Za-z][\w:.-]*)\}\s*(?P<arg>.*)$")
ROLE_OR_CODE = re.compile(r"\{(?P<role>[A-Za-z][\w:.-]*)\}`(?P<content>[^`]*)`|(?P<code>`+)")
TARGET = re.compile(r"^\((?P<label>[^()\s]+)\)=\s*$")
HEADING = re.compile(r"^(?P<hashes>#{1,6})\s+(?P<title>.*?)\s*#*\s*$")
MATH_OPEN = re.compile(r"^\s{0,3}\$\$")
MATH_CLOSE = re.compile(r"\$\$\s*(?:\((?P<label>[^()\s]+)\))?\s*$")

KNOWN_ROLES = {"glue:text", "glue:md", "cite:t", "cite:p", "numref", "ref", "eq", "term"}
ADMONITION_CLASSES = {"note": "", "tip": "", "warning": "⚠️ ", "important": "", "dropdown": ""}
FIGTYPE_NAMES = {"figure": "Fig.", "table": "Table", "code-block": "Listing", "exercise": "Exercise"}


@dataclass
class Directive:
    name: str
    arg: str
    options: dict
    body: list[str]  # lines
    line: int


@dataclass
class Converter:
    """Converts one chapter. ``where`` names the file in error messages."""

    ctx: BookContext
    edition: str = ANSWERS
    where: str = ""
    heading_index: int = 0

    # -- errors --------------------------------------------------------------------------
    def fail(self, message: str, line: int | None = None) -> None:
        at = f" (line {line} of its markdown cell)" if line else ""
        raise ConversionError(
            f"{self.where}: {message}{at}. The reader notebooks (scripts/make_notebooks.py) support the "
            f"MyST of chapters 1-3 only: use those constructs, or teach the converter."
        )

    # -- inline ----------------------------------------------------------------------------
    def inline(self, text: str, line: int = 0) -> str:
        result = "".join(
            piece if kind != "role" else self.role(*piece_role(piece), line)
            for kind, piece in inline_pieces(text))
        self.check_inline(result, line)
        return result

    def check_inline(self, text: str, line: int) -> None:
        stripped = re.sub(r"`[^`]*`", "", text)
        if re.search(r"\{\{[^}]*\}\}", stripped):
            self.fail("MyST substitution {{ ... }}", line)
        if re.search(r"\[\^[^\]]+\]", stripped):
            self.fail("footnote [^...] (Jupyter does not render footnotes)", line)

    def role(self, name: str, content: str, line: int) -> str:
        if name not in KNOWN_ROLES:
            self.fail(f"unknown role {{{name}}}`{content}`", line)
        if name == "glue:text":
            return self.glue_text(content, line)
        if name == "glue:md":
            return self.glue_md(content, line)
        if name in ("cite:t", "cite:p"):
            keys = [k.strip() for k in content.split(",") if k.strip()]
            for k in keys:
                if k not in self.ctx.cited:
                    self.ctx.cited.append(k)
            try:
                return self.ctx.cite(name.split(":")[1], keys)
            except ConversionError as exc:
                self.fail(str(exc), line)
        title, label = _split_title(content)
        if name == "term":  # a glossary term: its text (the glossary is on the book's site)
            return self.inline(title or label, line)
        if name == "eq":
            return self.eq_ref(label, title, line)
        if name == "numref":
            return self.numref(label, title, line)
        return self.ref(label, title, line)

    def glue_text(self, content: str, line: int) -> str:
        from myst_nb.core.variables import format_plain_text

        key, _, fmt = content.rpartition(":") if ":" in content else (content, "", "s")
        if "::" in content:
            self.fail(f"glue from another document ({content})", line)
        data = self.ctx.glue.get(key)
        if data is None or "text/plain" not in data:
            self.fail(f"glued value {key!r} not found in the build's execution", line)
        return format_plain_text(data["text/plain"], fmt)

    def glue_md(self, content: str, line: int) -> str:
        key = content.split(":")[0]
        data = self.ctx.glue.get(key)
        if data is None or "text/markdown" not in data:
            self.fail(f"glued markdown {key!r} not found in the build's execution", line)
        return data["text/markdown"]

    def _label(self, label: str, line: int) -> tuple[str, str, str]:
        if label not in self.ctx.labels:
            self.fail(f"unknown label {label!r}", line)
        return self.ctx.labels[label]

    def _find_number(self, docname: str, node_id: str) -> tuple[str | None, str | None]:
        for figtype in FIGTYPE_NAMES:
            num = self.ctx.number(docname, figtype, node_id)
            if num:
                return figtype, num
        return None, None

    def numref(self, label: str, title: str | None, line: int) -> str:
        docname, node_id, sectname = self._label(label, line)
        figtype, num = self._find_number(docname, node_id)
        if num is None:  # a section or chapter
            num = self.ctx.section_numbers.get(docname, {}).get(sectname)
            figtype = "section"
        if num is None:
            self.fail(f"{{numref}} to {label!r}, which has no number", line)
        if title:
            return title.replace("%s", num).replace("{number}", num).replace("{name}", sectname)
        prefix = FIGTYPE_NAMES.get(figtype, "Section")
        return f"{prefix} {num}"

    def ref(self, label: str, title: str | None, line: int) -> str:
        docname, node_id, sectname = self._label(label, line)
        if title:
            return title
        figtype, num = self._find_number(docname, node_id)
        if figtype == "exercise":  # sphinx-exercise shows exercises by number
            return f"Exercise {num}"
        return self.inline(sectname, line)

    def eq_ref(self, label: str, title: str | None, line: int) -> str:
        if label not in self.ctx.equations:
            self.fail(f"unknown equation label {label!r}", line)
        docname, _ = self.ctx.equations[label]
        num = self.ctx.number(docname, "displaymath", f"equation-{label}")
        if num is None:
            self.fail(f"equation {label!r} has no number", line)
        return title.replace("{number}", num) if title else f"({num})"

    # -- blocks ----------------------------------------------------------------------------
    def blocks(self, lines: list[str], first_line: int = 0) -> list[str]:
        """Convert a list of markdown lines; returns converted lines."""
        out: list[str] = []
        i = 0
        while i < len(lines):
            line = lines[i]
            lineno = first_line + i + 1
            fence = FENCE.match(line)
            if fence:
                rest = fence.group("rest").strip()
                close = self._find_close(lines, i, fence.group("fence"))
                directive = DIRECTIVE.match(rest)
                if directive:
                    d = self._directive(directive, lines[i + 1:close], lineno)
                    out.extend(self.directive(d))
                else:
                    if fence.group("fence").startswith(":"):
                        self.fail(f"colon fence without a directive: {line!r}", lineno)
                    out.extend(lines[i:close + 1])  # a code block, verbatim
                i = close + 1
                continue
            if MATH_OPEN.match(line):
                close = i
                single = MATH_CLOSE.search(line[line.index("$$") + 2:])
                if not single:
                    close = i + 1
                    while close < len(lines) and not MATH_CLOSE.search(lines[close]):
                        close += 1
                    if close == len(lines):
                        self.fail("unclosed $$ block", lineno)
                out.extend(self.math_block(lines[i:close + 1], lineno))
                i = close + 1
                continue
            if TARGET.match(line):
                i += 1  # (label)= targets: the numbers in the text replace the links
                continue
            if line.lstrip().startswith("\\begin{"):
                self.fail("top-level LaTeX environment (wrap it in a $$ block)", lineno)
            if re.match(r"^\s*%", line) and not line.lstrip().startswith("%%"):
                i += 1  # a MyST comment
                continue
            if re.match(r"^:\s", line) and i > 0 and lines[i - 1].strip():
                self.fail("definition list (Jupyter does not render it)", lineno)
            heading = HEADING.match(line)
            if heading:
                out.append(self.heading(heading, lineno))
                i += 1
                continue
            out.append(self.inline(line, lineno))
            i += 1
        return out

    def _find_close(self, lines: list[str], start: int, fence: str) -> int:
        char = fence[0]
        for j in range(start + 1, len(lines)):
            m = FENCE.match(lines[j])
            if m and m.group("fence")[0] == char and len(m.group("fence")) >= len(fence) \
                    and not m.group("rest").strip():
                return j
        self.fail(f"unclosed fence {fence}", start + 1)
        return len(lines)

    def _directive(self, m: re.Match, body: list[str], lineno: int) -> Directive:
        options: dict[str, str] = {}
        k = 0
        if body and body[0].strip() == "---":  # YAML options block
            end = body.index("---", 1) if "---" in body[1:] else None
            if end is None:
                self.fail("unclosed --- options block", lineno)
            import yaml

            options = yaml.safe_load("\n".join(body[1:end])) or {}
            k = end + 1
        else:
            while k < len(body) and re.match(r"^:[\w-]+:", body[k]):
                key, _, value = body[k][1:].partition(":")
                options[key] = value.strip()
                k += 1
        return Directive(m.group("name"), m.group("arg").strip(), options, body[k:], lineno + k)

    def directive(self, d: Directive) -> list[str]:
        if d.name == "admonition":
            self._check_options(d, {"class"})
            classes = d.options.get("class", "note").split()
            unknown = [c for c in classes if c not in ADMONITION_CLASSES]
            if unknown:
                self.fail(f"admonition class {unknown}", d.line)
            title = self.inline(d.arg, d.line)
            body = self.blocks(d.body, d.line)
            mark = "".join(ADMONITION_CLASSES[c] for c in classes)
            if "dropdown" in classes:
                return _details(f"{mark}{title}", body)
            return _quote([f"**{mark}{title}**", ""] + _trim(body))
        if d.name == "exercise":
            self._check_options(d, {"label", "class", "nonumber"})
            label = d.options.get("label")
            num = self.ctx.number(self.ctx.docname, "exercise", label) if label else None
            head = f"**Exercise {num}**" if num else "**Exercise**"
            if d.arg:
                head += f" ({self.inline(d.arg, d.line)})"
            return _quote([head, ""] + _trim(self.blocks(d.body, d.line)))
        if d.name == "math":
            self._check_options(d, {"label", "nowrap", "name"})
            label = d.options.get("label") or d.options.get("name")
            return self._math(d.body, label, d.line)
        if d.name in ("solution-start", "solution-end", "solution"):
            # solutions are handled at the level of cells (Converter.notebook); reaching this
            # point means an unpaired or nested solution block
            self.fail(f"{{{d.name}}} in an unexpected place", d.line)
        self.fail(f"unknown directive {{{d.name}}}", d.line)
        return []

    def _check_options(self, d: Directive, allowed: set[str]) -> None:
        unknown = set(d.options) - allowed
        if unknown:
            self.fail(f"unknown option(s) {sorted(unknown)} of {{{d.name}}}", d.line)

    def math_block(self, lines: list[str], lineno: int) -> list[str]:
        text = "\n".join(lines).strip()
        m = MATH_CLOSE.search(text)
        label = m.group("label") if m else None
        inner = text[2:m.start()] if m else text[2:]
        return self._math(inner.strip("\n").split("\n"), label, lineno)

    def _math(self, body: list[str], label: str | None, lineno: int) -> list[str]:
        body = [b for b in body]
        while body and not body[-1].strip():
            body.pop()
        while body and not body[0].strip():
            body.pop(0)
        if label:
            num = self.ctx.number(self.ctx.docname, "displaymath", f"equation-{label}")
            if num is None:
                self.fail(f"equation {label!r} has no number in the build", lineno)
            body = body + [f"\\tag{{{num}}}"]
        return ["$$"] + body + ["$$"]

    def heading(self, m: re.Match, lineno: int) -> str:
        title = self.inline(m.group("title"), lineno)
        if self.heading_index >= len(self.ctx.headings):
            self.fail(f"heading {title!r} is not in the book's table of contents", lineno)
        _, num = self.ctx.headings[self.heading_index]
        self.heading_index += 1
        if num:
            title = f"{num}. {title}"
        return f"{m.group('hashes')} {title}"

    def markdown(self, text: str, first_line: int = 0) -> str:
        return "\n".join(self.blocks(text.split("\n"), first_line)).strip("\n")


def inline_pieces(text: str) -> list[tuple[str, str]]:
    """Split a line into ("text" | "code" | "role", piece): inline code spans are kept
    verbatim (a role inside one is not a role), roles are converted."""
    pieces, pos = [], 0
    for m in ROLE_OR_CODE.finditer(text):
        if m.start() < pos:
            continue
        if m.group("code"):
            ticks = m.group("code")
            end = text.find(ticks, m.end())
            if end < 0:
                continue
            pieces += [("text", text[pos:m.start()]), ("code", text[m.start():end + len(ticks)])]
            pos = end + len(ticks)
        else:
            pieces += [("text", text[pos:m.start()]), ("role", m.group(0))]
            pos = m.end()
    pieces.append(("text", text[pos:]))
    return [p for p in pieces if p[1]]


def piece_role(piece: str) -> tuple[str, str]:
    m = ROLE_OR_CODE.match(piece)
    return m.group("role"), m.group("content")


def _split_title(content: str) -> tuple[str | None, str]:
    m = re.match(r"^(?P<title>.*?)\s*<(?P<label>[^<>]+)>$", content, flags=re.S)
    if m and m.group("title"):
        return m.group("title"), m.group("label")
    return None, content.strip()


def _trim(lines: list[str]) -> list[str]:
    while lines and not lines[0].strip():
        lines = lines[1:]
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return lines


def _quote(lines: list[str]) -> list[str]:
    return [f"> {line}".rstrip() for line in _unwrap_math(lines)]


def _odd_dollars(line: str) -> bool:
    return len(re.findall(r"(?<![\\$])\$(?!\$)", line)) % 2 == 1


def _unwrap_math(lines: list[str]) -> list[str]:
    """Maths on one line each. Jupyter takes the maths out of a markdown cell before it
    parses the markdown, so in a block quote the "> " of a continuation line would end up
    inside a formula that spans lines."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip() == "$$":  # a display: one line
            j = i + 1
            while j < len(lines) and lines[j].strip() != "$$":
                j += 1
            out.append("$$ " + " ".join(x.strip() for x in lines[i + 1:j]) + " $$")
            i = j + 1
            continue
        while _odd_dollars(line) and i + 1 < len(lines) and lines[i + 1].strip():
            i += 1
            line = line.rstrip() + " " + lines[i].strip()
        out.append(line)
        i += 1
    return out


def _details(summary: str, body: list[str]) -> list[str]:
    return ["<details>", f"<summary>{summary}</summary>", ""] + body + ["", "</details>"]


# ---------------------------------------------------------------------------------------
# Notebook: cells, solutions, the install cell
# ---------------------------------------------------------------------------------------

SOLUTION_START = re.compile(r"^(`{3,}|:{3,})\{solution-start\}\s*(?P<label>\S+)\s*$")
SOLUTION_END = re.compile(r"^(`{3,}|:{3,})\{solution-end\}\s*$")
SOLUTION = re.compile(r"^(?P<fence>`{3,}|:{3,})\{solution\}\s*(?P<label>\S+)\s*$")

KNOWN_TAGS = {"remove-cell", "remove-input", "remove-output", "hide-input", "hide-output",
              "hide-cell"}
KNOWN_MYSTNB = {"figure": {"caption", "name"}, "image": {"alt", "width", "height", "align",
                                                         "classes"}}


def split_solutions(cells: list, where: str = "") -> list:
    """The notebook as a list of items: ("md", text), ("code", cell) and
    ("solution", label, [items]) for each solution (gated or not)."""
    items: list = []
    current: list | None = None  # items of the open gated solution
    label = None
    for cell in cells:
        if cell.cell_type == "code":
            (current if current is not None else items).append(("code", cell))
            continue
        if cell.cell_type != "markdown":
            raise ConversionError(f"{where}: {cell.cell_type} cell")
        lines = cell.source.split("\n")
        buf: list[str] = []
        i = 0

        def flush():
            text = "\n".join(buf).strip("\n")
            if text.strip():
                (current if current is not None else items).append(("md", text))
            buf.clear()

        while i < len(lines):
            line = lines[i]
            start = SOLUTION_START.match(line)
            end = SOLUTION_END.match(line)
            whole = SOLUTION.match(line)
            if start or end:
                close = i + 1
                while close < len(lines) and lines[close].strip() != start_or(start, end):
                    close += 1
                flush()
                if start:
                    if current is not None:
                        raise ConversionError(f"{where}: nested solution-start")
                    current, label = [], start.group("label")
                else:
                    if current is None:
                        raise ConversionError(f"{where}: solution-end without solution-start")
                    items.append(("solution", label, current))
                    current, label = None, None
                i = close + 1
                continue
            if whole:
                fence = whole.group("fence")
                close = i + 1
                while close < len(lines) and lines[close].strip() != fence:
                    close += 1
                flush()
                body = lines[i + 1:close]
                while body and re.match(r"^:[\w-]+:", body[0]):
                    body = body[1:]
                (current if current is not None else items).append(
                    ("solution", whole.group("label"), [("md", "\n".join(body).strip("\n"))]))
                i = close + 1
                continue
            buf.append(line)
            i += 1
        flush()
    if current is not None:
        raise ConversionError(f"{where}: solution-start without solution-end")
    return items


def start_or(start, end) -> str:
    return (start or end).group(1)


def install_cell(modules: set[str], repo_url: str, ref: str) -> str:
    """The first cell: lmmlib and missing packages, only when missing."""
    from importlib.metadata import packages_distributions

    pins = _pins()
    lmmlib_deps = _lmmlib_dependencies()
    dists = packages_distributions()
    needed = {}
    for module in sorted(modules):
        if module in sys.stdlib_module_names or module in ("lmmlib", "myst_nb", "IPython"):
            continue
        names = dists.get(module)
        if not names:
            raise ConversionError(f"the chapter imports {module!r}, which is not installed")
        dist = names[0]
        if dist.lower() in lmmlib_deps:
            continue  # pip installs it with lmmlib
        version = pins.get(dist.lower())
        major = int(version.split(".")[0]) if version else 0
        needed[module] = f"{dist}>={major}" if major else dist
    return f'''# Run this cell first. It installs lmmlib, the book's library, and the packages this
# chapter needs, only those that are missing (on Binder it installs nothing).
import importlib.metadata, importlib.util, subprocess, sys

assert sys.version_info >= (3, 12), "This book needs Python 3.12 or newer."
LMMLIB = "lmmlib @ git+{repo_url}@{ref}"
NEEDED = {needed!r}  # module: package


def missing(module, requirement):
    if importlib.util.find_spec(module) is None:
        return True
    name, _, major = requirement.partition(">=")
    return bool(major) and int(importlib.metadata.version(name).split(".")[0]) < int(major)


to_install = [req for module, req in NEEDED.items() if missing(module, req)]
if importlib.util.find_spec("lmmlib") is None:
    to_install.insert(0, LMMLIB)
if to_install:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", *to_install])
'''


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line)
        if m:
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
            pins[m.group(1).lower()] = m.group(2)
    return pins


def _lmmlib_dependencies() -> set[str]:
    text = (ROOT / "pyproject.toml").read_text()
    deps = re.search(r"^dependencies\s*=\s*\[(.*?)\]", text, flags=re.M | re.S).group(1)
    return {re.match(r"[A-Za-z0-9_.-]+", d.strip(' "')).group(0).lower()
            for d in deps.split(",") if d.strip()}


def imported_modules(code: str) -> set[str]:
    """Top-level modules a cell imports (IPython magics and shell lines skipped)."""
    lines = [line for line in code.split("\n") if not line.lstrip().startswith(("%", "!"))]
    tree = ast.parse("\n".join(lines))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


GLUE_IMPORT = "from myst_nb import glue"
GLUE_FALLBACK = '''try:
    from myst_nb import glue
except ImportError:  # Colab, Binder: the numbers are already in the text of this notebook

    def glue(name, variable, display=True):
        """Stand-in for myst_nb.glue: shows the value if asked to, stores nothing."""
        if display:
            from IPython.display import display as _display

            _display(variable)'''


def reader_code(source: str, where: str) -> str:
    """A code cell's source as readers run it: myst_nb's glue gets a fallback."""
    if "myst_nb" not in source:
        return source
    lines = source.split("\n")
    if sum(line.strip() == GLUE_IMPORT for line in lines) != 1 or source.count("myst_nb") != 1:
        raise ConversionError(
            f"{where}: myst_nb is used other than by one line `{GLUE_IMPORT}` at the top "
            "level of a cell; the reader notebooks cannot give it a fallback")
    return "\n".join(GLUE_FALLBACK if line == GLUE_IMPORT else line for line in lines)


def _tags(cell, where: str) -> set[str]:
    tags = set(cell.metadata.get("tags", []))
    unknown = tags - KNOWN_TAGS
    if unknown:
        raise ConversionError(f"{where}: unknown cell tag(s) {sorted(unknown)}")
    mystnb = cell.metadata.get("mystnb", {})
    for key, value in mystnb.items():
        if key not in KNOWN_MYSTNB or set(value) - KNOWN_MYSTNB[key]:
            raise ConversionError(f"{where}: unknown mystnb metadata {key}: {value}")
    return tags


def code_cell(cell, where: str):
    """The reader's copy of a code cell: source with fallbacks, no outputs, hidden parts
    collapsed as in the book."""
    tags = _tags(cell, where)
    new = nbformat.v4.new_code_cell(reader_code(cell.source, where))
    meta = {}
    if tags & {"remove-cell", "hide-cell", "remove-input", "hide-input"}:
        meta["jupyter"] = {"source_hidden": True}
        meta["cellView"] = "form"  # Colab: show the title line only
        first = "# @title Hidden in the book"
        if tags & {"remove-cell"}:
            first += ": setup, checks and the numbers of the text"
        new.source = f"{first}\n{new.source}"
    if tags & {"remove-output", "hide-output"}:
        meta.setdefault("jupyter", {})["outputs_hidden"] = True
    if tags:
        meta["tags"] = sorted(tags)
    new.metadata = meta
    return new


def _output_markdown(cell) -> list[str]:
    """Text and HTML outputs of an executed cell, for an answer key's solution."""
    out = []
    for o in cell.get("outputs", []):
        if o.output_type == "stream" and o.name == "stdout":
            out += ["", "```text", o.text.rstrip("\n"), "```"]
        elif o.output_type in ("execute_result", "display_data"):
            data = o.get("data", {})
            if "text/markdown" in data:
                out += ["", data["text/markdown"]]
            elif "text/html" in data:
                out += ["", data["text/html"].strip()]
            elif "image/png" in data:
                out += ["", f'<img alt="output" src="data:image/png;base64,'
                            f'{data["image/png"].strip()}"/>']
            elif "text/plain" in data:
                out += ["", "```text", data["text/plain"].rstrip("\n"), "```"]
    return out


def convert(executed, ctx: BookContext | None, edition: str = ANSWERS, where: str = "",
            repo_url: str = "", ref: str = "main", site_url: str = ""):
    """The reader notebook of one executed chapter notebook.

    With ``ctx=None`` the markdown is kept as it is (for the execution test, which needs
    only the code cells readers run)."""
    if edition not in (ANSWERS, STUDENTS):
        raise ValueError(f"edition must be {ANSWERS!r} or {STUDENTS!r}")
    conv = Converter(ctx, edition, where) if ctx is not None else None
    items = split_solutions(executed.cells, where)
    cells = []
    modules: set[str] = set()

    def md(text: str):
        return text if conv is None else conv.markdown(text)

    def add_md(text: str):
        text = text.strip("\n")
        if text.strip():
            cells.append(nbformat.v4.new_markdown_cell(text))

    first_md_done = False
    for item in items:
        if item[0] == "md":
            add_md(md(item[1]))
            if not first_md_done and conv is not None:
                first_md_done = True
                add_md(_edition_note(edition, site_url))
        elif item[0] == "code":
            cell = item[1]
            modules |= imported_modules(cell.source)
            cells.append(code_cell(cell, where))
            caption = cell.metadata.get("mystnb", {}).get("figure", {})
            if caption and conv is not None:
                num = ctx.number(ctx.docname, "figure", caption.get("name", ""))
                text = conv.markdown(caption.get("caption", "").strip())
                add_md(f"**Fig. {num}** {text}" if num else text)
        else:
            _, label, body = item
            for sub in body:  # checked in both editions, so a bad solution fails in both
                if sub[0] == "code":
                    _tags(sub[1], where)
                    reader_code(sub[1].source, where)
            if conv is None:
                continue
            num = ctx.number(ctx.docname, "exercise", label)
            if num is None:
                conv.fail(f"solution to {label!r}, which is not a numbered exercise")
            cited = list(ctx.cited)
            lines: list[str] = []
            for sub in body:
                if sub[0] == "md":
                    lines += ["", md(sub[1])]
                else:
                    tags = _tags(sub[1], where)
                    if "remove-cell" in tags:
                        continue
                    if not tags & {"remove-input"}:
                        lines += ["", "```python", sub[1].source.rstrip("\n"), "```"]
                    if not tags & {"remove-output"}:
                        lines += _output_markdown(sub[1])
            if edition == STUDENTS:  # converted (checked, headings counted), not shown
                ctx.cited[:] = cited
                continue
            add_md("\n".join(_details(f"<b>Solution to Exercise {num}</b> (click to show)",
                                      lines)))
    if conv is not None and ctx.cited:
        refs = ctx.references(ctx.cited)
        add_md("\n".join(["## References", ""] + [f"- {r}" for r in sorted(refs)]))
    if conv is not None and conv.heading_index != len(ctx.headings):
        conv.fail(f"{conv.heading_index} headings found, the book has {len(ctx.headings)}")
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "colab": {"provenance": [], "toc_visible": True},
    }
    first = nbformat.v4.new_code_cell(install_cell(modules, repo_url, ref))
    first.metadata = {"tags": ["install"]}
    nb.cells = [first] + cells
    for i, cell in enumerate(nb.cells):  # the same ids every build (nbformat's are random)
        digest = hashlib.sha1(f"{i}:{cell.source}".encode()).hexdigest()[:8]
        cell.id = f"c{i:03d}-{digest}"
    if conv is not None:
        problems = raw_myst(nb)
        if problems:
            conv.fail("left raw MyST in the notebook: " + "; ".join(problems[:5]))
    return nb


def _edition_note(edition: str, site_url: str) -> str:
    site = f" ([the book online]({site_url}))" if site_url else ""
    which = ("Students' edition: the exercises are here, their solutions are not."
             if edition == STUDENTS else
             "The solutions of the exercises are folded: click *Solution* to open one.")
    return (f"> *Mixed Models from Scratch*{site}, as a notebook. Run the cells from the top "
            f"(the first one installs what is missing). {which} The numbers in the text are "
            f"those of the book's own run; yours should agree.")


RAW_MYST = [
    (re.compile(r"\{[A-Za-z][\w:.-]*\}`"), "role"),
    (re.compile(r"^\s*(`{3,}|:{3,})\{", re.M), "directive"),
    (re.compile(r"^\([^()\s]+\)=\s*$", re.M), "target"),
    (re.compile(r"^\s*\$\$\s*\([^()\s]+\)\s*$", re.M), "labelled $$"),
    (re.compile(r"^:::", re.M), "colon fence"),
]


def raw_myst(nb) -> list[str]:
    """MyST that Jupyter would show as raw text, in the markdown cells of ``nb``
    (inline code and code blocks are not looked at)."""
    problems = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        text = re.sub(r"^```(?!\{)[^\n]*\n.*?^```\s*$", "", cell.source, flags=re.M | re.S)
        text = "\n".join("".join(p for kind, p in inline_pieces(line) if kind != "code")
                         for line in text.split("\n"))
        for pattern, what in RAW_MYST:
            m = pattern.search(text)
            if m:
                problems.append(f"cell {i}: {what} {m.group(0).strip()!r}")
    return problems


# ---------------------------------------------------------------------------------------
# The whole book
# ---------------------------------------------------------------------------------------


def chapters(root: Path = ROOT) -> list[str]:
    """Docnames of the numbered chapters in _toc.yml (the part with ``numbered``)."""
    import yaml

    toc = yaml.safe_load((root / "_toc.yml").read_text())
    out = []
    for part in toc.get("parts", []):
        if part.get("numbered"):
            out += [c["file"] for c in part.get("chapters", [])]
    return out


def config(root: Path = ROOT) -> dict:
    import yaml

    return yaml.safe_load((root / "_config.yml").read_text())


def read_executed(docname: str, build: Path = BUILD):
    """The chapter as the build executed it, outputs included. The cells come from
    _build/jupyter_execute (what the build read); the outputs from the build's jupyter-cache
    (myst-nb writes the .ipynb without outputs when it took them from the cache)."""
    from jupyter_cache import get_cache

    path = build / "jupyter_execute" / f"{docname}.ipynb"
    if not path.exists():
        raise ConversionError(f"{path} is missing: build the book first")
    nb = nbformat.read(path, as_version=4)
    try:
        _, merged = get_cache(build / ".jupyter_cache").merge_match_into_notebook(nb)
    except KeyError as exc:
        raise ConversionError(f"{docname}: no execution of it in the build's cache "
                              f"({exc}); rebuild the book") from None
    return merged


def make_all(build: Path = BUILD, ref: str | None = None, out: Path | None = None,
             site_url: str = "") -> dict[str, list[Path]]:
    cfg = config()
    repo_url = cfg["repository"]["url"].rstrip("/")
    ref = ref or cfg["repository"].get("branch", "main")
    book = Book(build)
    out = out or build / "notebooks"
    written: dict[str, list[Path]] = {ANSWERS: [], STUDENTS: []}
    for docname in chapters():
        executed = read_executed(docname, build)
        for edition in (ANSWERS, STUDENTS):
            nb = convert(executed, book.context(docname), edition, where=f"{docname}.md",
                         repo_url=repo_url, ref=ref, site_url=site_url)
            path = out / edition / f"{Path(docname).name}.ipynb"
            path.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, path)
            written[edition].append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", type=Path, default=BUILD)
    parser.add_argument("--ref", help="git ref lmmlib is installed from (default: the "
                                      "repository branch of _config.yml)")
    parser.add_argument("--out", type=Path, help="default: <build>/notebooks")
    parser.add_argument("--site-url", default="", help="the published site, for a link")
    args = parser.parse_args(argv)
    try:
        written = make_all(args.build, args.ref, args.out, args.site_url)
    except ConversionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for edition, paths in written.items():
        print(f"wrote {len(paths)} {edition} notebook(s) to {paths[0].parent if paths else '-'}")
    site = args.build / "html"
    if site.exists():  # the site serves the answer key, and its download button offers it
        publish_to_site(written[ANSWERS], site)
    return 0


def publish_to_site(paths: list[Path], site: Path) -> None:
    """Copy reader notebooks to <site>/notebooks/ and over the .ipynb of the download button
    (sphinx-book-theme's copy of the executed MyST notebook, which Colab cannot run)."""
    (site / "notebooks").mkdir(exist_ok=True)
    for path in paths:
        shutil.copy2(path, site / "notebooks" / path.name)
        download = site / "_sources" / "book" / path.name
        if download.exists():
            shutil.copy2(path, download)


if __name__ == "__main__":
    sys.exit(main())
