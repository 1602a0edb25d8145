"""Small fixes to the HTML that Jupyter Book's extensions produce.

sphinx-thebe 0.3.1 adds its inline configuration script (``const THEBE_JS_URL = ...``) once
per read phase, and Jupyter Book's build runs two, so every page declared the constant twice
and logged "Identifier 'THEBE_JS_URL' has already been declared". Repeated scripts are
dropped here, keeping the first.

sphinx-exercise gives the content section of every exercise the id ``exercise-content`` and
of every solution ``solution-content``, so the ids repeat on a page with several exercises
(invalid HTML; an anchor to one of them is ambiguous). Each gets a unique id here:
``exercise-content-<label>`` (``exercise-content-ex-ols-residuals``), or a number on the page if it has no label.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from docutils import nodes

FIXED = ("exercise-content", "solution-content")
WORDS_PER_MINUTE = 200
CODE_LINES_PER_MINUTE = 10
HIDDEN = {"tag_hide-input", "tag_hide-cell", "tag_remove-input", "tag_remove-cell"}


def reading_minutes(doctree) -> tuple[int, int, int]:
    """(minutes, words of text, lines of visible code) of a page."""
    words = 0
    for para in doctree.findall(nodes.paragraph):
        if not any("cell_output" in a.get("classes", []) for a in _ancestors(para)):
            words += len(para.astext().split())
    code = 0
    for block in doctree.findall(nodes.literal_block):
        chain = _ancestors(block)
        if any("cell_input" in a.get("classes", []) for a in chain) and not any(
            HIDDEN & set(a.get("classes", [])) for a in chain
        ):
            code += len([line for line in block.astext().splitlines() if line.strip()])
    raw = words / WORDS_PER_MINUTE + code / CODE_LINES_PER_MINUTE
    return max(5, 5 * math.ceil(raw / 5)), words, code


def _ancestors(node):
    chain = []
    node = node.parent
    while node is not None and not isinstance(node, nodes.document):
        chain.append(node)
        node = node.parent
    return chain


def add_reading_time(app, doctree) -> None:
    for box in doctree.findall(nodes.admonition):
        titles = [t for t in box.children if isinstance(t, nodes.title)]
        if titles and titles[0].astext().strip() == "Prerequisites":
            minutes, words, code = reading_minutes(doctree)
            box += nodes.paragraph(
                "",
                f"Estimated reading time: about {minutes} minutes "
                f"({words:,} words of text and {code} lines of code), more with the exercises.",
                classes=["reading-time"],
            )
            return


def unique_ids(app, doctree, docname) -> None:
    """Any id still repeated on a page (e.g. docutils' ids for markup problems in docstrings,
    numbered separately by autosummary and autodoc) gets a suffix; the first keeps it."""
    count: dict[str, int] = {}
    for node in doctree.findall(nodes.Element):
        ids = node.get("ids") or []
        renamed = []
        for i in ids:
            count[i] = count.get(i, 0) + 1
            renamed.append(i if count[i] == 1 else f"{i}-{count[i]}")
        if renamed != ids:
            node["ids"] = renamed


def drop_dangling_problems(app, doctree, docname) -> None:
    """A markup problem in a docstring is shown as a link to its system message, which the
    build does not render: show the text without the dead link."""
    for node in list(doctree.findall(nodes.problematic)):
        node.replace_self(nodes.inline(node.rawsource, node.astext()))


def unique_content_ids(app, doctree, docname) -> None:
    seen: dict[str, int] = {}
    for section in list(doctree.findall(nodes.section)):
        for old in FIXED:
            if old not in section["ids"]:
                continue
            parent = section.parent
            label = parent.get("label") or parent.get("target_label") if parent else None
            seen[old] = seen.get(old, 0) + 1
            new = f"{old}-{label}" if label else f"{old}-{seen[old]}"
            new = re.sub(r"[^\w-]+", "-", new)
            section["ids"] = [new if i == old else i for i in section["ids"]]


INLINE_SCRIPT = re.compile(r"<script>(?:(?!</script>).)*</script>\s*", re.S)


def drop_repeated_scripts(app, exception) -> None:
    """Keep the first of identical inline scripts in every page written."""
    if exception is not None or app.builder.format != "html":
        return
    for page in Path(app.outdir).rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        seen = set()

        def once(match):
            key = match.group(0).strip()
            if key in seen:
                return ""
            seen.add(key)
            return match.group(0)

        fixed = INLINE_SCRIPT.sub(once, html)
        if fixed != html:
            page.write_text(fixed, encoding="utf-8")


def theme_settings(app, config) -> None:
    """Theme settings that Jupyter Book's ``html:`` section cannot express. They are set here,
    not under ``sphinx: config:`` in _config.yml, where an ``html_theme_options`` entry would
    replace the options Jupyter Book generates (repository and launch buttons) instead of
    adding to them."""
    # One search box: the sidebar's. The pydata header would add a second one, and with it a
    # hidden duplicate of the menu button that took the click handler (the phone-menu bug).
    config.html_theme_options["navbar_persistent"] = []
    # The theme's default mode is unset, which logged "Got invalid theme mode" on a first visit.
    config.html_context["default_mode"] = "auto"


def setup(app):
    app.connect("config-inited", theme_settings, priority=900)
    app.connect("doctree-read", add_reading_time)
    app.connect("doctree-resolved", drop_dangling_problems)
    app.connect("doctree-resolved", unique_content_ids)
    app.connect("doctree-resolved", unique_ids, priority=900)
    app.connect("build-finished", drop_repeated_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
