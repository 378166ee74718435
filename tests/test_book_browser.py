"""The screenshot command of ``cpmc_lib.book``: one PNG per page of a built book, and a report."""

import json

import pytest

from cpmc_lib.book.__main__ import main
from cpmc_lib.book.browser import book_pages, find_chromium


def _tiny_book(root):
    """A built book's layout: ``<book>/_toc.yml`` beside ``_build/html`` with two pages and Sphinx's extras."""
    html = root / "_build" / "html"
    (html / "notebooks").mkdir(parents=True)
    (html / "_static").mkdir()
    (root / "_toc.yml").write_text("format: jb-book\nroot: notebooks/00_a\nchapters:\n- file: notebooks/01_b\n- file: gone\n")
    page = '<html><body><main><article class="bd-article"><h1>{}</h1><p>{}</p></article></main></body></html>'
    (html / "index.html").write_text(page.format("index", "landing"))
    (html / "notebooks" / "00_a.html").write_text(page.format("A", "text " * 200))
    (html / "notebooks" / "01_b.html").write_text(
        page.format("B", "<script>console.error('boom')</script><img src='https://example.org/x.png'>")
    )
    (html / "genindex.html").write_text(page.format("index", ""))
    (html / "_static" / "x.html").write_text("")
    return html


def test_book_pages_follow_the_toc_and_skip_missing_files(tmp_path):
    html = _tiny_book(tmp_path)
    assert book_pages(html) == ["index.html", "notebooks/00_a.html", "notebooks/01_b.html"]
    (tmp_path / "_toc.yml").unlink()  # no table of contents: every page but Sphinx's own and _static
    assert book_pages(html) == ["index.html", "notebooks/00_a.html", "notebooks/01_b.html"]


def test_screenshots_command_writes_one_png_per_page_and_reports_errors(tmp_path, capsys):
    if find_chromium() is None:
        pytest.skip("no headless Chromium")
    html = _tiny_book(tmp_path / "book")
    out = tmp_path / "shots"
    assert main(["screenshots", str(html), str(out), "--width", "800"]) == 1  # page B has problems
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["index.png", "notebooks_00_a.png", "notebooks_01_b.png"]
    assert all((out / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    report = {r["page"]: r for r in json.loads((out / "report.json").read_text())}
    assert not report["notebooks/00_a.html"]["console_errors"] and not report["notebooks/00_a.html"]["external"]
    assert "boom" in " ".join(report["notebooks/01_b.html"]["console_errors"])
    assert any("example.org" in u for u in report["notebooks/01_b.html"]["external"])
    assert "3 pages, 1 with problems" in capsys.readouterr().out
    from PIL import Image

    full = Image.open(out / "notebooks_00_a.png").size
    assert full[0] == 800  # the window's width, the whole page
    assert main(["screenshots", str(html), str(tmp_path / "col"), "--column"]) == 1
    col = Image.open(tmp_path / "col" / "notebooks_00_a.png").size
    assert col[0] < 1280  # the text column only


def test_screenshots_command_names_a_folder_without_a_book(tmp_path, capsys):
    assert main(["screenshots", str(tmp_path), str(tmp_path / "shots")]) == 1
    assert "no index.html" in capsys.readouterr().err
