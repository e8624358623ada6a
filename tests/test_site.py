"""The built documentation site, read in headless Chromium with the network blocked.

``make -C docs html`` writes the site to ``docs/_build/html``; this test opens every page of it
from ``file://`` in Debian's Chromium through Playwright (every request that is not a local
file is aborted and counted) and checks, on every page, that

* nothing is fetched from the network;
* MathJax has rendered every formula without an error, and no formula is clipped: no box with
  hidden overflow around or inside an equation is narrower or lower than what it holds (a wide
  equation may scroll, never be cut);
* every image has loaded;
* the page has one title;
* no notebook output runs past its box or shows a markdown table as raw text;
* every tutorial page shows at least one figure;

that the search page finds a word, and that no page speaks of how the package was made (issue
numbers, sessions, engineers). Screenshots of failing pages go to ``$SIDEWAYS_LAB_SCREENSHOTS``
(default: the test's temporary folder).

``SIDEWAYS_LAB_SITE`` points the test at another built site. A fresh clone has no built site:
the test is then skipped, unless ``SIDEWAYS_LAB_REQUIRE_SITE=1`` (set by ``.ci/run``, which
builds the site first) makes that a failure. Without Playwright or Chromium it is skipped,
unless ``SIDEWAYS_LAB_REQUIRE_BROWSER=1`` makes that a failure too.
"""

import os
import re
import shutil
from pathlib import Path

import pytest

try:
  from playwright.sync_api import sync_playwright
except ImportError:  # the test extra installs it
  sync_playwright = None

ROOT = Path(__file__).resolve().parents[1]
SITE = Path(os.environ.get("SIDEWAYS_LAB_SITE", ROOT / "docs" / "_build" / "html"))
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-dev-shm-usage",
]
VIEWPORT = {"width": 1400, "height": 1000}
PAGE_LOAD_S = 60
MATH_S = 60  # MathJax typesets the longest page
IMAGES_S = 20
SKIPPED_FOLDERS = ("_static", "_modules", "_sources", "_images", "_downloads")
INDEX_PAGES = ("genindex.html", "py-modindex.html", "search.html")  # Sphinx's, without a title
# Words about how the package was made, which no page of it should carry.
MAKING_OF = re.compile(
  r"\bissue \d+|\b(this|first|second|third|previous|earlier|another) session\b|"
  r"\bsessions? (had|ran|asked)\b|\bengineers?\b|\bhelper agents?\b|\bthe lead\b",
  re.IGNORECASE,
)

pytestmark = pytest.mark.browser


def _pages() -> list[str]:
  if not SITE.is_dir():
    return []
  return sorted(
    str(p.relative_to(SITE))
    for p in SITE.rglob("*.html")
    if not any(part in SKIPPED_FOLDERS for part in p.relative_to(SITE).parts)
  )


def _require(what: str, variable: str):
  if os.environ.get(variable, "") not in ("", "0"):
    pytest.fail(f"{what} ({variable} is set)")
  pytest.skip(what)


def _chromium() -> str | None:
  return os.environ.get("SIDEWAYS_LAB_CHROMIUM") or next(
    filter(None, map(shutil.which, CHROMIUM_NAMES)), None
  )


@pytest.fixture(scope="module")
def site() -> Path:
  if not (SITE / "index.html").exists():
    _require(
      f"no built site at {SITE} (build it with `make -C docs html`)", "SIDEWAYS_LAB_REQUIRE_SITE"
    )
  return SITE


@pytest.fixture(scope="module")
def browser(site):
  if sync_playwright is None:
    _require(
      "Playwright is not installed (pip install -e '.[test]')", "SIDEWAYS_LAB_REQUIRE_BROWSER"
    )
  executable = _chromium()
  if executable is None:
    _require("no system Chromium (apt-get install chromium)", "SIDEWAYS_LAB_REQUIRE_BROWSER")
  with sync_playwright() as pw:
    b = pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
    yield b
    b.close()


@pytest.fixture
def offline_page(browser):
  """A page whose requests are aborted unless they are for a local file; ``page.remote`` lists
  the aborted URLs and ``page.errors`` the page's console errors."""
  context = browser.new_context(viewport=VIEWPORT)
  remote, errors = [], []

  def route(r):
    url = r.request.url
    if url.startswith(("file://", "data:", "blob:", "about:")):
      r.continue_()
    else:
      remote.append(url)
      r.abort()

  context.route("**/*", route)
  page = context.new_page()
  page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
  page.on("pageerror", lambda e: errors.append(str(e)))
  page.remote, page.errors = remote, errors
  yield page
  context.close()


# JavaScript run in the page.
_JS_MATHJAX_DONE = """() => new Promise(resolve => {
  if (!document.querySelector('script[src*="MathJax.js"]')) { resolve('none'); return; }
  const wait = () => {
    if (window.MathJax && MathJax.Hub && MathJax.isReady) MathJax.Hub.Queue(() => resolve('done'));
    else setTimeout(wait, 50);
  };
  wait();
})"""

_JS_MATH_PROBLEMS = """() => {
  const problems = [];
  const label = el => (el.textContent || '').replace(/\\s+/g, ' ').trim().slice(0, 80);
  // formulas Sphinx wrote that MathJax did not render, and MathJax's own error boxes
  for (const el of document.querySelectorAll('div.math, span.math')) {
    if (el.closest('.MathJax, .MathJax_Display')) continue;  // MathJax's inner span.math
    if (!el.querySelector('.MathJax, .MathJax_Display, .MathJax_SVG, mjx-container'))
      problems.push('not rendered: ' + label(el));
  }
  for (const el of document.querySelectorAll('.MathJax_Error, .merror, .noError, mjx-merror'))
    problems.push('MathJax error: ' + label(el));
  // clipping: a box with hidden overflow, around or inside an equation, smaller than its content
  const hides = el => {
    const s = getComputedStyle(el);
    return [s.overflowX, s.overflowY].some(v => v === 'hidden' || v === 'clip');
  };
  for (const eq of document.querySelectorAll('.MathJax_Display, span.MathJax')) {
    const r = eq.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) continue;  // not displayed (a folded solution)
    for (let a = eq; a && a !== document.body; a = a.parentElement) {
      if (!hides(a)) continue;
      if (a.scrollWidth > a.clientWidth + 1 || a.scrollHeight > a.clientHeight + 1) {
        problems.push(`clipped by <${a.tagName.toLowerCase()} class="${a.className}">: ` +
          `${a.scrollWidth}x${a.scrollHeight} px in ${a.clientWidth}x${a.clientHeight}: ` +
          label(eq));
        break;
      }
    }
    for (const inner of eq.querySelectorAll('span.math')) {
      if (hides(inner) && inner.scrollWidth > inner.clientWidth + 1) {
        problems.push(`clipped inside: ${inner.scrollWidth} px in ${inner.clientWidth}: ` +
          label(eq));
        break;
      }
    }
  }
  return problems;
}"""

_JS_IMAGES = """() => {
  const imgs = [...document.querySelectorAll('img')];
  imgs.forEach(i => { if (i.loading === 'lazy') i.loading = 'eager'; });
  return Promise.all(imgs.map(i => i.complete ? null : new Promise(r => {
    i.addEventListener('load', r); i.addEventListener('error', r); setTimeout(r, TIMEOUT_MS);
  }))).then(() => imgs.filter(i => !(i.complete && i.naturalWidth > 0))
                       .map(i => i.getAttribute('src')));
}""".replace("TIMEOUT_MS", str(IMAGES_S * 1000))

_JS_OUTPUT_PROBLEMS = """() => {
  const problems = [];
  const article = document.querySelector('article') || document.querySelector('main');
  const right = article ? article.getBoundingClientRect().right : window.innerWidth;
  document.querySelectorAll('div.cell_output').forEach((out, i) => {
    const r = out.getBoundingClientRect();
    if (r.width === 0) return;
    if (out.scrollWidth > out.clientWidth + 1 || r.right > right + 1)
      problems.push(`output ${i} is ${out.scrollWidth} px wide in a ${out.clientWidth} px box`);
    for (const pre of out.querySelectorAll('pre')) {
      if (/^\\s*\\|[\\s:|-]+\\|\\s*$/m.test(pre.textContent))
        problems.push(`output ${i} shows a markdown table as text`);
    }
  });
  return problems;
}"""


def _check(page, url: str) -> list[str]:
  page.goto(url, timeout=PAGE_LOAD_S * 1000, wait_until="load")
  problems = []
  page.wait_for_function(
    "() => document.readyState === 'complete'", timeout=PAGE_LOAD_S * 1000, polling=100
  )
  page.evaluate(_JS_MATHJAX_DONE)
  problems += page.evaluate(_JS_MATH_PROBLEMS)
  problems += [f"image did not load: {src}" for src in page.evaluate(_JS_IMAGES)]
  titles = page.locator("article h1").count()
  if titles != 1 and not url.endswith(INDEX_PAGES):
    problems.append(f"{titles} titles (h1)")
  problems += page.evaluate(_JS_OUTPUT_PROBLEMS)
  problems += [f"fetched from the network: {u}" for u in page.remote]
  problems += [f"MathJax console error: {e}" for e in page.errors if "MathJax" in e]
  return problems


def _shoot(page, name: str, tmp_path: Path) -> None:
  shots = Path(os.environ.get("SIDEWAYS_LAB_SCREENSHOTS", tmp_path))
  shots.mkdir(parents=True, exist_ok=True)
  page.screenshot(path=str(shots / (name.replace("/", "_") + ".png")), full_page=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", _pages() or ["index.html"])
def test_page_renders_offline(name, site, offline_page, tmp_path):
  problems = _check(offline_page, (site / name).as_uri())
  if name.startswith("tutorials/") and name != "tutorials/index.html":
    figures = offline_page.locator("div.cell_output img").count()
    if figures == 0:
      problems.append("a tutorial page without a figure")
  if problems:
    _shoot(offline_page, name, tmp_path)
  assert not problems, f"{name}:\n" + "\n".join(problems)


def test_every_tutorial_and_api_page_is_built(site):
  pages = _pages()
  notebooks = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
  assert [p for p in pages if re.match(r"tutorials/\d\d_", p)] == [
    f"tutorials/{n}.html" for n in notebooks
  ]
  assert sum(p.startswith("api/_generated/") for p in pages) >= 20


def test_search_finds_a_word(site, offline_page):
  offline_page.goto((site / "search.html").as_uri() + "?q=Skip-Sideways")
  offline_page.wait_for_selector("#search-results ul.search li", timeout=PAGE_LOAD_S * 1000)
  assert offline_page.locator("#search-results ul.search li").count() > 0
  assert not offline_page.remote


def test_pages_speak_of_the_package(site):
  """No page talks about how, or by whom, the package was made."""
  found = []
  for name in _pages():
    html = (site / name).read_text(encoding="utf-8")
    text = re.sub(r"<script.*?</script>|<style.*?</style>|<[^>]+>", " ", html, flags=re.S)
    found += [f"{name}: ...{m.group(0)}..." for m in MAKING_OF.finditer(text)]
  assert not found, "\n".join(found)
