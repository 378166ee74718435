"""The published book, checked as a reader would: quick build, then every page in headless Chromium."""

import shutil
from pathlib import Path

import pytest
import yaml

from cpmc_lib import book
from cpmc_lib.book.browser import INSTALL_HINT, check_book, check_explorer, require_chromium

pytestmark = pytest.mark.book


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("book")
    index = book.build_book(quick=True, out=out)
    return index.parent, out


def _pages(html_dir):
    toc = yaml.safe_load((html_dir.parent.parent / "_toc.yml").read_text())
    return ["index.html"] + [f"{f}.html" for f in book.toc_files(toc)]


def toc_root(html_dir):
    return yaml.safe_load((html_dir.parent.parent / "_toc.yml").read_text())["root"]


def test_every_chapter_of_the_toc_is_built(built):
    html_dir, _ = built
    pages = _pages(html_dir)
    assert len(pages) >= 10
    for page in pages:
        assert (html_dir / page).is_file(), page
    # MathJax is served from the book itself, so equations render offline
    assert (html_dir / "_static" / "mathjax" / "tex-chtml.js").is_file()


def test_pages_load_nothing_from_the_network(built):
    """No widget outputs (require.js, the widget manager) and no script or stylesheet from a CDN."""
    import re

    html_dir, _ = built
    for page in _pages(html_dir):
        text = (html_dir / page).read_text()
        assert not re.search(r"<script[^>]*require(\.min)?\.js", text), page  # widget outputs load require.js
        assert not re.search(r"<script[^>]*application/vnd\.jupyter\.widget", text), page
        remote = re.findall(r"<(?:script|link)[^>]+(?:src|href)=[\"']((?:https?:)?//[^\"']+)", text)
        assert not [u for u in remote if not u.startswith(("https://github.com", "https://www.sphinx"))], (page, remote)


def test_injected_parameters_are_hidden_and_stated(built):
    html_dir, _ = built
    text = (html_dir / "notebooks" / "02_classifier.html").read_text()
    assert "This page ran with" in text and "configs/quick.yaml" in text
    assert "tag_injected-parameters" not in text and "injected-parameters" not in text


def test_pages_render_in_headless_chromium(built, tmp_path):
    exe = require_chromium()  # under CI=true a missing browser fails here instead of skipping
    if exe is None:
        pytest.skip(f"no headless Chromium ({INSTALL_HINT})")
    html_dir, out = built
    pages = _pages(html_dir)
    reports = check_book(html_dir, pages, out / "screenshots", chromium=exe)
    by_page = {r.page: r for r in reports}
    for r in reports:
        assert not r.broken_images, (r.page, r.broken_images)
        assert not r.errors, (r.page, r.errors)
        assert not r.dead_links, (r.page, r.dead_links)
        assert not r.external, (r.page, r.external)  # offline: nothing is requested outside the book
        assert not r.console_errors, (r.page, r.console_errors)
    # figures and tables where the chapters draw them, typeset maths in the method chapter
    # the landing page: the reader's headline table, the results chart and the at-a-glance figure
    assert by_page[f"{toc_root(html_dir)}.html"].tables >= 1
    assert by_page[f"{toc_root(html_dir)}.html"].images >= 2
    assert by_page["notebooks/01_dataset.html"].images >= 3
    assert by_page["notebooks/03_classifier_cams.html"].tables >= 1
    assert by_page["method.html"].math >= 5
    shutil.copytree(out / "screenshots", tmp_path / "screenshots")  # kept in pytest's tmp for a look


def test_explorer_controls_change_the_drawing_without_a_kernel(built):
    if require_chromium() is None:  # under CI=true a missing browser fails instead of skipping
        pytest.skip(f"no headless Chromium ({INSTALL_HINT})")
    html_dir, _ = built
    res = check_explorer(html_dir / "notebooks" / "10_explorer.html")
    assert res["found"], "no kernel-free explorer on the explorer page"
    states, srcs, scores = res["states"], res["srcs"], res["scores"]
    assert all(states) and len(set(states)) == len(states), states  # every change redraws
    # every change redraws a panel or the score line (a tiny quick-build model may draw two maps alike)
    drawn = list(zip(srcs, scores, strict=True))
    assert all(a != b for a, b in zip(drawn, drawn[1:], strict=False)), states
    assert srcs[3][0] != srcs[2][0]  # another image is shown
    assert "mIoU" in scores[0] and scores[2] != scores[1]  # the score follows the map
    # a map opens at its own best offered threshold (the oracle view the score line names)
    for state, score in ((states[0], scores[0]), (states[2], scores[2])):
        best = score.split("oracle view): ")[1].split(" ")[0]
        assert state.split("@")[1].split("#")[0] == best, (state, score)
    assert not res["external"] and not res["console"], (res["external"], res["console"])


def test_the_api_reference_documents_every_library_module():
    api = Path("book/api.md").read_text()
    modules = [p for p in Path("cpmc_lib").rglob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    names = {".".join(p.with_suffix("").parts) for p in modules if "book" not in p.parts}
    missing = sorted(n for n in names if f"automodule:: {n}\n" not in api)
    assert not missing, f"book/api.md does not document {missing}"
