"""Check the built site: no page loads a script, style or font from outside the site, and no
page shows warning text from a notebook's output.

    python scripts/check_site.py _build/html
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

EXTERNAL = re.compile(
    r"""<(?:script|link|img|iframe)\b[^>]*?\b(?:src|href)\s*=\s*["']((?:https?:)?//[^"']+)["'][^>]*>""",
    re.I,
)
WARNING_TEXT = re.compile(r"\b\w*(?:Warning|DeprecationWarning|FutureWarning):|warnings\.warn\(", re.I)


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


def main(site: str) -> int:
    problems = []
    pages = sorted(Path(site).rglob("*.html"))
    for page in pages:
        html = page.read_text(encoding="utf-8", errors="replace")
        for url in external_loads(html):
            problems.append(f"{page}: loads {url} from outside the site")
        # Output cells only: warnings printed by code, not the word in prose.
        for block in re.findall(r'<div class="cell_output[^"]*".*?</div>\s*</div>', html, re.S):
            if WARNING_TEXT.search(block):
                problems.append(f"{page}: warning text in a cell's output")
    if not pages:
        problems.append(f"no HTML pages under {site}")
    for line in problems:
        print(line, file=sys.stderr)
    print(f"checked {len(pages)} pages: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "_build/html"))
