"""End to end: execute every lesson (quick, tiny model), build the book, check it as a reader would.

The lessons run once per session into a temporary copy of the book, so a
student's own build in book/executed/ is never touched.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import yaml

from course_lib.paths import REPO_ROOT
from course_lib.publish.runner import toc_notebooks

ARTIFACTS = REPO_ROOT / "_build" / "test-artifacts"
pytestmark = pytest.mark.notebook


def toc_files() -> list[str]:
    toc = yaml.safe_load((REPO_ROOT / "_toc.yml").read_text(encoding="utf-8"))
    files = [toc["root"]]
    for part in toc["parts"]:
        files += [ch["file"] for ch in part["chapters"]]
    return files


@pytest.fixture(scope="session")
def built_book(executed_book):
    root, report = executed_book
    exe = Path(sys.executable).with_name("jupyter-book")
    proc = subprocess.run(
        [str(exe), "build", str(root), "--path-output", str(root), "--all", "--warningiserror", "--keep-going"],
        capture_output=True, text=True, cwd=root,
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "book-build.log").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    return root, report, proc


def test_every_lesson_executes(built_book):
    _, report, _ = built_book
    assert [r.name for r in report.results] == toc_notebooks()
    failed = {r.name: r.error for r in report.failed}
    assert not failed, failed


def test_book_builds_without_warnings(built_book):
    _, _, proc = built_book
    log = proc.stdout + proc.stderr
    warnings = [line for line in log.splitlines() if "WARNING" in line or "ERROR" in line]
    assert proc.returncode == 0 and not warnings, "\n".join(warnings[:20]) or log[-3000:]


def html_path(root: Path, doc: str) -> Path:
    return root / "_build" / "html" / f"{doc}.html"


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[str] = []
        self.images: list[str] = []
        self.classes: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])
        if tag == "img" and a.get("src"):
            self.images.append(a["src"])
        self.classes.extend((a.get("class") or "").split())

    def handle_data(self, data):
        self.text.append(data)


def parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def test_every_toc_page_is_rendered(built_book):
    root, _, _ = built_book
    missing = [f for f in toc_files() if not html_path(root, f).exists()]
    assert not missing


def test_lesson_pages_have_no_errors_or_stderr(built_book):
    root, _, _ = built_book
    for name in toc_notebooks():
        page = parse(html_path(root, f"book/executed/{name}"))
        text = "".join(page.text)
        assert "Traceback" not in text, name
        assert "stderr" not in page.classes, f"{name}: stray stderr output (warnings or progress bars)"
        assert "injected-parameters" not in page.classes, f"{name}: papermill's parameter cell is shown"
        assert page.images, f"{name}: a lesson page without a single plot"


def test_lesson_launch_buttons_open_the_lesson_sources(built_book):
    from course_lib.publish.launch import lesson_links, read_launch_config

    root, _, _ = built_book
    config = read_launch_config(root / "_config.yml")
    for name in toc_notebooks():
        links = parse(html_path(root, f"book/executed/{name}")).links
        expected = lesson_links(name, config)
        for text, url in expected.items():
            assert url in links, f"{name}: no {text} button linking {url}"
        # The theme's own links would open the git-ignored executed copy.
        stale = [link for link in links if "book/executed" in link and link.startswith(("https://mybinder", "https://colab"))]
        assert not stale, stale


def test_internal_links_and_images_resolve(built_book):
    root, _, _ = built_book
    site = root / "_build" / "html"
    broken = []
    for html in site.rglob("*.html"):
        if "_static" in html.parts:
            continue
        page = parse(html)
        for ref in page.links + page.images:
            url = urlparse(ref)
            if url.scheme or ref.startswith(("#", "mailto:")) or not url.path:
                continue
            target = (html.parent / unquote(url.path)).resolve()
            if not target.exists():
                broken.append(f"{html.relative_to(site)} -> {ref}")
    assert not broken, broken[:20]


@pytest.mark.browser
def test_pages_in_a_real_browser(built_book):
    """Open each page in headless Chromium: it loads, images decode, navigation lists all chapters."""
    if not shutil.which("chromium") or not shutil.which("chromedriver"):
        pytest.skip("chromium / chromedriver not installed (tests/run_tests.sh installs them as root)")
    fonts = subprocess.run(["fc-list", ":lang=ja", "family"], capture_output=True, text=True).stdout
    assert "Noto Sans CJK" in fonts or "Noto Serif CJK" in fonts, \
        "no CJK font: the screenshots would show boxes for Japanese (install fonts-noto-cjk)"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    root, _, _ = built_book
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,1600"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    shots = ARTIFACTS / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    titles = []
    try:
        for doc in toc_files():
            driver.get(html_path(root, doc).as_uri())
            body = driver.find_element("tag name", "body").text
            assert body.strip(), f"{doc}: blank page"
            assert "Traceback" not in body, doc
            bad_images = driver.execute_script(
                "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
            assert not bad_images, f"{doc}: images that did not decode: {bad_images}"
            nav = driver.execute_script(
                "return Array.from(document.querySelectorAll('nav.bd-links a, .bd-sidebar-primary nav a')).map(a => a.textContent.trim())")
            titles.append((doc, driver.title, nav))
            driver.save_screenshot(str(shots / (doc.replace("/", "_") + ".png")))
    finally:
        driver.quit()
    # every page's navigation lists every chapter (the root page is the book's home link)
    n_chapters = len(toc_files()) - 1
    for doc, title, nav in titles:
        assert len([t for t in nav if t]) >= n_chapters, (doc, nav)
