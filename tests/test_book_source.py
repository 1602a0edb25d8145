"""The book's sources follow the rules of what a reader sees (issue 13), on every page of
``_toc.yml``: code lines a reader sees fit 80 characters, plumbing (glue, asserts) is in hidden
cells, every figure has alt text and a caption. The rules live in ``scripts/check_site.py``,
which the book build runs too; these tests run them without a build, and check that they
catch what they should."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("check_site", ROOT / "scripts" / "check_site.py")
check_site = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_site)


def test_every_toc_page_is_found_and_follows_the_rules():
    files = check_site.toc_files()
    names = [f.name for f in files]
    assert names[0] == "intro.md" and "03_lmm_from_scratch.md" in names and "api.md" in names
    assert check_site.check_sources() == []


BAD = '''# A page

```{code-cell} ipython3
x = 1
glue_number("x", x)
assert x == 1
y = "%s"
```

```{code-cell} ipython3
:tags: [remove-cell]
glue_number("x", x)
assert x == 1
```

```{code-cell} ipython3
---
mystnb:
  figure:
    caption: A plot.
    name: fig-x
---
plot(x)  # a comment that makes this line longer than eighty characters, which is too long
```
'''


@pytest.fixture
def bad_page(tmp_path):
    page = tmp_path / "bad.md"
    page.write_text(BAD)
    return page


def test_the_rules_catch_plumbing_long_lines_and_missing_alt_text(bad_page):
    problems = check_site.source_problems(bad_page)
    assert sum("plumbing at line 2" in p for p in problems) == 1  # glue_number in view
    assert sum("plumbing at line 3" in p for p in problems) == 1  # assert in view
    assert sum("without alt text" in p for p in problems) == 1
    assert sum("code line of 90 characters" in p for p in problems) == 1
    assert len(problems) == 4  # the hidden cell is fine


def test_alt_text_and_hidden_cells_pass(tmp_path):
    page = tmp_path / "good.md"
    page.write_text(BAD.replace("mystnb:\n  figure:", 'mystnb:\n  image:\n    alt: "A line."\n  figure:')
                    .replace("plot(x)  # a comment that makes this line longer than eighty "
                             "characters, which is too long", "plot(x)")
                    .replace("x = 1\nglue_number(\"x\", x)\nassert x == 1\n", "x = 1\n", 1))
    assert check_site.source_problems(page) == []


def test_site_checks_catch_hashed_alt_text_repeated_ids_and_scripts():
    html = ('<main><img alt="../_images/' + "ab" * 32 + '.png" src="x.png">'
            '<section id="a"></section><section id="a"></section>'
            '<script>const A = 1</script><script>const A = 1</script></main>')
    problems = check_site.page_problems(Path("p.html"), html)
    assert any("without real alt text" in p for p in problems)
    assert any("repeated id(s) ['a']" in p for p in problems)
    assert any("inline script is repeated" in p for p in problems)
    good = '<main><img alt="Reaction time against days." src="x.png"></main>'
    assert check_site.page_problems(Path("p.html"), good) == []
