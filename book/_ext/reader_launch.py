"""The launch buttons (the rocket) of a chapter open its reader notebook, made by
scripts/make_notebooks.py and published on the `notebooks` branch: on Binder (readers'
environment from binder/) and on Colab. The theme's own Binder link opened the MyST source
as text; it had no Colab link, since Colab opens only .ipynb files. Pages that are not
chapters (Performance, Status) get no launch button: they have no reader notebook."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _launch_buttons(app, pagename, templatename, context, doctree):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from make_notebooks import chapters
        from publish_notebooks import launch_urls
    finally:
        sys.path.pop(0)
    buttons = context.get("header_buttons")
    if buttons is None:
        return
    groups = [b for b in buttons if b.get("label") == "launch-buttons"]
    for group in groups:
        buttons.remove(group)
    if pagename not in chapters():
        return
    urls = launch_urls(Path(pagename).name, app.config.reader_notebooks_edition)
    buttons.append({
        "type": "group",
        "tooltip": "Run this chapter as a notebook",
        "icon": "fas fa-rocket",
        "label": "launch-buttons",
        "buttons": [
            {"type": "link", "text": "Binder", "tooltip": "Run it on Binder",
             "icon": "_static/images/logo_binder.svg", "url": urls["binder"]},
            {"type": "link", "text": "Colab", "tooltip": "Run it on Google Colab",
             "icon": "_static/images/logo_colab.png", "url": urls["colab"]},
        ],
    })


def setup(app):
    # "students" in the students' edition (scripts/students_edition.py)
    app.add_config_value("reader_notebooks_edition", "answers", "html")
    # after sphinx-book-theme's own launch buttons (priority 500)
    app.connect("html-page-context", _launch_buttons, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
