"""Open every page of the built book in a real headless browser and fail on what a reader
would meet: raw TeX, a broken image, a console error, a request outside the site, a broken
internal link or anchor, a chapter list that cannot be opened on a phone, a display equation
wider than a phone without its own scroll box, math or figures unreadable in dark mode.

    python scripts/browser_test.py [_build/html [page ...]]   # e.g. ... _build/html book/02_ols

The pages are those of ``_toc.yml`` (so a new chapter is checked as soon as it is listed) plus
the index. The site is served on 127.0.0.1; the browser is Debian's ``chromium``
(``/usr/bin/chromium``, or ``$CHROMIUM``) driven by Playwright, which downloads nothing.
A screenshot of every page at desktop and phone width, and in dark mode, goes to
``_build/screenshots``.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlparse

ROOT = Path(__file__).resolve().parent.parent
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 400, "height": 860}

# Text of a rendered page that is TeX the browser did not typeset.
RAW_TEX = re.compile(
    r"\$\$|\\\(|\\\[|\\begin\{|\\(?:frac|mathbf|boldsymbol|hat|sigma|theta|beta|Lambda|sum|"
    r"mathcal|operatorname|top|left|right)\b"
)


def toc_pages() -> list[str]:
    """The documents of the table of contents, in order ("book/intro", ...): those of
    check_site.toc_files, the one reader of _toc.yml that the site checks share."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from check_site import toc_files

    return [str(f.relative_to(ROOT).with_suffix("")) for f in toc_files()]


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve(site: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


# JavaScript run in the page -------------------------------------------------------------
WAIT_FOR_MATH = """async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
    if (MathJax.typesetPromise) { await MathJax.typesetPromise(); }
  }
  await Promise.all([...document.images].map(img => img.complete ? null :
    new Promise(done => { img.onload = img.onerror = done; })));
}"""

PAGE_FACTS = """() => {
  const skip = "pre, code, script, style, textarea, mjx-container, .highlight, .cell_output";
  const texts = [];
  const walker = document.createTreeWalker(document.querySelector("main") || document.body,
                                           NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode;
    if (node.parentElement && !node.parentElement.closest(skip) && node.textContent.trim()) {
      texts.push(node.textContent);
    }
  }
  const unrendered = [...document.querySelectorAll(".math")]
    .filter(el => !el.querySelector("mjx-container")).length;
  const images = [...document.images].map(img => ({
    src: img.currentSrc || img.src, ok: img.complete && img.naturalWidth > 0,
    alt: img.getAttribute("alt"), visible: img.offsetParent !== null,
    content: !!img.closest("main"),
    squashed: img.naturalWidth > 0 && img.clientWidth > 0 && Math.abs(
      (img.clientWidth / img.clientHeight) / (img.naturalWidth / img.naturalHeight) - 1) > 0.02}));
  const links = [...document.querySelectorAll("a[href]")].map(a => a.href);
  const ids = [...document.querySelectorAll("[id]")].map(el => el.id);
  return {texts, unrendered, images, links, ids};
}"""

# Display equations wider than the viewport that do not scroll inside their own box.
WIDE_EQUATIONS = """() => {
  const vw = document.documentElement.clientWidth;
  const bad = [];
  for (const eq of document.querySelectorAll('mjx-container[display="true"]')) {
    if (!eq.offsetParent) continue;            // in a closed dropdown
    const box = eq.getBoundingClientRect();
    // The extent of what is drawn: every glyph box inside the equation.
    let left = Infinity, right = -Infinity;
    for (const el of eq.querySelectorAll("mjx-c, mjx-mi, mjx-mo, mjx-mn, mjx-mtext")) {
      const r = el.getBoundingClientRect();
      if (r.width > 0) { left = Math.min(left, r.left); right = Math.max(right, r.right); }
    }
    const inner = {left, right, width: right - left};
    if (eq.scrollLeft === 0 && inner.left < box.left - 1) {  // centred and wider than its
      bad.push(Math.round(inner.width) + " px, cut off on the left");  // box: unreachable
      continue;
    }
    if (inner.width <= vw && box.right <= vw + 1) continue;
    let ok = false;
    for (let el = eq; el && el !== document.body; el = el.parentElement) {
      const style = getComputedStyle(el);
      const r = el.getBoundingClientRect();
      if (["auto", "scroll"].includes(style.overflowX) && r.right <= vw + 1 && r.left >= -1) {
        ok = true; break;
      }
    }
    if (!ok) bad.push(Math.round(inner.width) + " px");
  }
  const page = document.documentElement.scrollWidth - vw;
  return {bad, pageOverflow: page};
}"""

EQUATION_WIDTHS = """() => [...document.querySelectorAll('mjx-container[display="true"]')]
  .map(eq => eq.firstElementChild ? eq.firstElementChild.getBoundingClientRect().width : 0)"""

# Dark mode: the theme is dark, math is as light as the text, and every figure is opaque
# (a transparent PNG would draw black lines on the dark page).
DARK_FACTS = """async () => {
  function rgb(s) { const m = s.match(/[\\d.]+/g).map(Number); return m; }
  function lum(c) {
    const [r, g, b] = c.slice(0, 3).map(v => { v /= 255;
      return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  }
  function contrast(a, b) { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p);
    return (x + 0.05) / (y + 0.05); }
  function background(el) {
    for (; el; el = el.parentElement) {
      const c = rgb(getComputedStyle(el).backgroundColor);
      if (c.length < 4 || c[3] > 0.5) return c;
    }
    return rgb(getComputedStyle(document.body).backgroundColor);
  }
  const theme = document.documentElement.dataset.theme;
  let worstMath = 99;
  for (const eq of document.querySelectorAll("mjx-container")) {
    if (!eq.offsetParent) continue;
    worstMath = Math.min(worstMath, contrast(rgb(getComputedStyle(eq).color), background(eq)));
  }
  const transparent = [];
  for (const img of document.querySelectorAll("main img")) {
    // the theme's own icons (_static/, e.g. the Colab logo of the launch menu) are not figures
    if (!img.naturalWidth || img.src.endsWith(".svg") || img.src.includes("/_static/")) continue;
    const c = document.createElement("canvas");
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    const ctx = c.getContext("2d");
    ctx.drawImage(img, 0, 0);
    const corner = ctx.getImageData(1, 1, 1, 1).data;
    if (corner[3] < 250) transparent.push(img.getAttribute("src"));
  }
  return {theme, worstMath, transparent};
}"""

OPEN_MENU = """async (selector) => {
  const visible = el => el && el.offsetParent !== null && el.getBoundingClientRect().width > 0;
  const button = [...document.querySelectorAll(selector)].find(visible);
  return !!button;
}"""

SIDEBAR_OPEN = """() => {
  const bar = document.querySelector("#pst-primary-sidebar, .bd-sidebar-primary");
  if (!bar) return {open: false, why: "no primary sidebar"};
  const r = bar.getBoundingClientRect();
  const links = [...bar.querySelectorAll("nav a")].filter(a => {
    const q = a.getBoundingClientRect();
    return q.width > 0 && q.right > 0 && q.left < window.innerWidth; });
  return {open: r.right > 50 && r.left < window.innerWidth / 2 && links.length > 0,
          links: links.length};
}"""


DIALOG_OPEN = """() => [...document.querySelectorAll("dialog[open]")].some(d =>
  d.getBoundingClientRect().width > 0 && d.querySelectorAll("a").length > 0)"""


def check(site: Path, shots: Path, only: list[str] | None = None) -> list[str]:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    pages = only or toc_pages() + ["genindex"]
    missing = [p for p in pages if not (site / f"{p}.html").exists()]
    problems = [f"{p}.html: listed in _toc.yml but not built" for p in missing]
    pages = [p for p in pages if p not in missing]
    server, base = serve(site)
    shots.mkdir(parents=True, exist_ok=True)
    exists_cache: dict[str, set[str] | None] = {}

    def target_ids(url: str) -> set[str] | None:
        """Ids of the page at url, or None if it does not exist."""
        if url not in exists_cache:
            path = site / urlparse(url).path.lstrip("/")
            if path.is_dir():
                path = path / "index.html"
            if not path.exists():
                exists_cache[url] = None
            elif path.suffix == ".html":
                html = path.read_text(encoding="utf-8", errors="replace")
                exists_cache[url] = set(re.findall(r'\sid="([^"]+)"', html))
            else:
                exists_cache[url] = set()
        return exists_cache[url]

    executable = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=["--no-sandbox"])

        def new_page(viewport, scheme="light", scale=1):
            context = browser.new_context(viewport=viewport, color_scheme=scheme,
                                          device_scale_factor=scale)
            page = context.new_page()
            log: list[str] = []
            page.on("console", lambda m: log.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: log.append(f"page error: {e}"))

            def route(r):
                if r.request.url.startswith(base) or r.request.url.startswith("data:"):
                    r.continue_()
                else:
                    log.append(f"requested outside the site: {r.request.url}")
                    r.abort()

            page.route("**/*", route)
            return context, page, log

        for name in pages:
            url = urljoin(base, f"{name}.html")
            slug = name.replace("/", "_")
            started = time.perf_counter()

            # Desktop, light.
            context, page, log = new_page(DESKTOP)
            page.goto(url, wait_until="load")
            page.evaluate(WAIT_FOR_MATH)
            facts = page.evaluate(PAGE_FACTS)
            widths = page.evaluate(EQUATION_WIDTHS)
            column = page.evaluate(
                "() => { const a = document.querySelector('main article, main');"
                " return a ? a.clientWidth : 0; }"
            )
            page.screenshot(path=str(shots / f"{slug}-desktop.png"))
            for text in facts["texts"]:
                hit = RAW_TEX.search(text)
                if hit:
                    problems.append(f"{name}: raw TeX on the page: ...{text.strip()[:80]}")
            if facts["unrendered"]:
                problems.append(f"{name}: {facts['unrendered']} math element(s) not typeset")
            for img in facts["images"]:
                if not img["ok"] and img["visible"]:
                    problems.append(f"{name}: image did not load: {img['src']}")
                if img["squashed"] and img["visible"]:
                    problems.append(f"{name}: image drawn out of proportion: {img['src']}")
                alt = (img["alt"] or "").strip()
                if img["content"] and (
                    not alt or re.search(r"[0-9a-f]{32}|\.(png|svg|jpe?g)$", alt)
                ):
                    problems.append(f"{name}: image without real alt text: {img['src']}")
            for wide in (w for w in widths if column and w > column + 1):
                problems.append(
                    f"{name}: a display equation is {wide:.0f} px wide, wider than the "
                    f"{column} px text column at {DESKTOP['width']} px"
                )
            ids = facts["ids"]
            duplicated = sorted({i for i in ids if ids.count(i) > 1})
            if duplicated:
                problems.append(f"{name}: repeated id(s) {duplicated[:5]}")
            for link in set(facts["links"]):
                if not link.startswith(base):
                    continue
                target, anchor = urldefrag(link)
                found = target_ids(target)
                if found is None:
                    problems.append(f"{name}: broken link to {link[len(base):]}")
                elif anchor and target.endswith(".html") and anchor not in found:
                    problems.append(f"{name}: link to a missing anchor {link[len(base):]}")
            # Dark mode: the reader's system setting turns dark; the theme follows it.
            page.emulate_media(color_scheme="dark")
            try:  # the theme follows a change of the setting; else load the page again
                page.wait_for_function(
                    "() => document.documentElement.dataset.theme === 'dark'", timeout=3000
                )
            except PlaywrightTimeout:
                page.reload(wait_until="load")
                page.evaluate(WAIT_FOR_MATH)
            dark = page.evaluate(DARK_FACTS)
            if dark["theme"] != "dark":
                problems.append(f"{name} (dark): the theme did not follow the dark setting "
                                f"(data-theme={dark['theme']!r})")
            if dark["worstMath"] < 4.5:
                problems.append(f"{name} (dark): math contrast {dark['worstMath']:.1f} < 4.5")
            for src in dark["transparent"]:
                problems.append(f"{name} (dark): figure with a transparent background {src}")
            page.screenshot(path=str(shots / f"{slug}-dark.png"))
            problems += [f"{name} (desktop): {line}" for line in log]
            context.close()

            # Phone, light: the menu opens the chapter list; equations fit or scroll.
            context, page, log = new_page(PHONE, scale=2)
            page.goto(url, wait_until="load")
            page.evaluate(WAIT_FOR_MATH)
            toggle = page.locator("button.primary-toggle:visible").first
            if not toggle.count():
                problems.append(f"{name} (phone): no visible menu button")
            else:
                toggle.click()
                page.wait_for_timeout(400)
                state = page.evaluate(SIDEBAR_OPEN)
                if not state["open"]:
                    problems.append(f"{name} (phone): the menu button does not open the "
                                    f"chapter list ({state})")
                page.screenshot(path=str(shots / f"{slug}-phone-menu.png"))
                page.keyboard.press("Escape")  # closes the menu (a modal dialog)
                page.wait_for_timeout(200)
            on_this_page = page.locator("button.secondary-toggle:visible").first
            if on_this_page.count():
                on_this_page.click()
                page.wait_for_timeout(400)
                if not page.evaluate(DIALOG_OPEN):
                    problems.append(f"{name} (phone): the 'On this page' button does not "
                                    "open the page's contents")
                page.keyboard.press("Escape")
                page.wait_for_timeout(200)
            for img in page.evaluate(PAGE_FACTS)["images"]:
                if img["squashed"] and img["visible"]:
                    problems.append(f"{name} (phone): image drawn out of proportion: "
                                    f"{img['src']}")
            wide = page.evaluate(WIDE_EQUATIONS)
            for width in wide["bad"]:
                problems.append(f"{name} (phone): a display equation ({width}) overflows the "
                                f"{PHONE['width']} px screen without a scroll box that shows it all")
            if wide["pageOverflow"] > 1:
                problems.append(f"{name} (phone): the page scrolls sideways by "
                                f"{wide['pageOverflow']} px")
            page.screenshot(path=str(shots / f"{slug}-phone.png"))
            problems += [f"{name} (phone): {line}" for line in log]
            context.close()

            print(f"  {name}: {time.perf_counter() - started:.1f} s", flush=True)
        browser.close()
    server.shutdown()
    return problems


def main(argv: list[str]) -> int:
    site = Path(argv[1] if len(argv) > 1 else ROOT / "_build" / "html")
    shots = site.parent / "screenshots"
    only = argv[2:]
    problems = check(site, shots, only)
    for line in problems:
        print(line, file=sys.stderr)
    print(f"browser test: {len(only or toc_pages()) + (0 if only else 1)} pages, "
          f"{len(problems)} problem(s); "
          f"screenshots in {shots}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
