"""Check the book: its sources and the built site.

    python scripts/check_site.py _build/html      # both
    python scripts/check_site.py --source          # the sources only (also run by the tests)

Every page of ``_toc.yml`` is checked, so a new chapter is checked as soon as it is listed.

Sources (MyST notebooks), issue 13's rules for what a reader sees:

* a code cell that a reader sees (not tagged ``remove-cell`` or ``remove-input``) has lines of at most 80
  characters, and no plumbing at its top level: ``glue``/``glue_number`` calls and checks
  (``assert``, ``assert_allclose``, ...) go in their own cell tagged ``remove-cell``;
* a figure cell (``mystnb: figure:``) has alt text (``mystnb: image: alt:``) and a caption.

Built site:

* no page loads a script, style or font from outside the site;
* no page shows warning text from a notebook's output;
* every image in a page's content has real alt text (not its file name);
* no id is repeated on a page, and no inline script is repeated.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_LINE = 80
PLUMBING = {"glue", "glue_number"}

EXTERNAL = re.compile(
    r"""<(?:script|link|img|iframe)\b[^>]*?\b(?:src|href)\s*=\s*["']((?:https?:)?//[^"']+)["'][^>]*>""",
    re.I,
)
WARNING_TEXT = re.compile(r"\b\w*(?:Warning|DeprecationWarning|FutureWarning):|warnings\.warn\(", re.I)
CELL = re.compile(r"^(?P<fence>`{3,})\{code-cell\}[^\n]*\n(?P<rest>.*?)^(?P=fence)[ \t]*$", re.M | re.S)


# ------------------------------------------------------------------------------- sources
def toc_files(toc: Path = ROOT / "_toc.yml") -> list[Path]:
    """The source files of the table of contents, in order."""
    import yaml

    spec = yaml.safe_load(toc.read_text())
    names = [spec["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                names.append(entry["file"])
            walk(entry.get("sections"))
            walk(entry.get("chapters"))

    for part in spec.get("parts", []):
        walk(part.get("chapters"))
    walk(spec.get("chapters"))
    files = []
    for name in names:
        for suffix in ("", ".md", ".ipynb"):
            if (toc.parent / f"{name}{suffix}").is_file():
                files.append(toc.parent / f"{name}{suffix}")
                break
    return files


def code_cells(text: str):
    """(line number, metadata text, source lines) of every code cell of a MyST notebook."""
    for match in CELL.finditer(text):
        rest = match.group("rest").split("\n")
        meta: list[str] = []
        if rest and rest[0] == "---":
            end = rest.index("---", 1)
            meta, rest = rest[1:end], rest[end + 1:]
        else:
            while rest and rest[0].startswith(":"):
                meta.append(rest.pop(0))
        line = text.count("\n", 0, match.start()) + 1
        yield line, "\n".join(meta), [x for x in rest if x is not None]


def _is_plumbing(stmt: ast.stmt) -> bool:
    if isinstance(stmt, ast.Assert):
        return True
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
        func = stmt.value.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
        return name in PLUMBING or name.startswith("assert_")
    return False


def source_problems(path: Path) -> list[str]:
    problems = []
    text = path.read_text(encoding="utf-8")
    try:
        where = path.relative_to(ROOT)
    except ValueError:
        where = path
    for line, meta, body in code_cells(text):
        hidden = re.search(r"remove-cell|remove-input", meta)
        if re.search(r"^\s*figure:", meta, re.M):
            if not re.search(r"^\s*image:\s*\n\s*alt:\s*\S", meta, re.M):
                problems.append(f"{where}:{line}: figure cell without alt text "
                                "(mystnb: image: alt:)")
            if not re.search(r"^\s*caption:\s*\S", meta, re.M):
                problems.append(f"{where}:{line}: figure cell without a caption")
        if hidden:
            continue
        for k, source in enumerate(body):
            if len(source) > MAX_LINE:
                problems.append(f"{where}:{line + k + 1}: code line of {len(source)} characters "
                                f"(at most {MAX_LINE} in a cell a reader sees)")
        source = re.sub(r"^(\s*)[%!]", r"\1#", "\n".join(body), flags=re.M)
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue  # the build reports it
        for stmt in tree.body:
            if _is_plumbing(stmt):
                problems.append(f"{where}:{line}: a cell a reader sees has plumbing at line "
                                f"{stmt.lineno} (glue or assert): move it to a cell tagged "
                                "remove-cell")
    return problems


def check_sources() -> list[str]:
    problems = []
    for path in toc_files():
        if path.suffix == ".md":
            problems += source_problems(path)
    return problems


# ---------------------------------------------------------------------------- built site
def external_loads(html: str) -> list[str]:
    """URLs of outside resources the page loads (links to other pages are fine, loads are not)."""
    found = []
    for match in EXTERNAL.finditer(html):
        tag = match.group(0)
        if tag.lower().startswith("<link") and not re.search(
            r"""rel\s*=\s*["'][^"']*(stylesheet|preload|icon|modulepreload)""", tag, re.I
        ):
            continue
        found.append(match.group(1))
    return found


def page_problems(page: Path, html: str) -> list[str]:
    problems = []
    for url in external_loads(html):
        problems.append(f"{page}: loads {url} from outside the site")
    # Output cells only: warnings printed by code, not the word in prose.
    for block in re.findall(r'<div class="cell_output[^"]*".*?</div>\s*</div>', html, re.S):
        if WARNING_TEXT.search(block):
            problems.append(f"{page}: warning text in a cell's output")
    main = html.split('<main', 1)[-1]
    for img in re.findall(r"<img\b[^>]*>", main):
        alt = re.search(r'\balt="([^"]*)"', img)
        if not alt or not alt.group(1).strip() or re.search(
            r"[0-9a-f]{32}|\.(png|svg|jpe?g)$", alt.group(1)
        ):
            problems.append(f"{page}: image without real alt text: {img[:120]}")
    ids = re.findall(r'\sid="([^"]+)"', html)
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        problems.append(f"{page}: repeated id(s) {repeated[:5]}")
    scripts = re.findall(r"<script>(?:(?!</script>).)+</script>", html, re.S)
    if len(scripts) != len(set(scripts)):
        problems.append(f"{page}: an inline script is repeated")
    return problems


def check_site(site: str) -> tuple[int, list[str]]:
    problems = []
    pages = sorted(Path(site).rglob("*.html"))
    for page in pages:
        html = page.read_text(encoding="utf-8", errors="replace")
        problems += page_problems(page, html)
    if not pages:
        problems.append(f"no HTML pages under {site}")
    return len(pages), problems


def main(argv: list[str]) -> int:
    problems = check_sources()
    what = f"{len(toc_files())} source files"
    if "--source" not in argv:
        n, site_problems = check_site(argv[1] if len(argv) > 1 else "_build/html")
        problems += site_problems
        what += f" and {n} pages"
    for line in problems:
        print(line, file=sys.stderr)
    print(f"checked {what}: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
