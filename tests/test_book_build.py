"""The book build keeps the previous book when a chapter fails, and says which cell to look at."""

from __future__ import annotations

import nbformat
import pytest

from cpmc_lib.book import browser
from cpmc_lib.book import build as book_build
from cpmc_lib.book.build import BookBuildError, build_book, execute_alone


def _notebook(path, *cells):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('config_path = "configs/default.yaml"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# A chapter"), params]
    nb.cells += [nbformat.v4.new_code_cell(c) for c in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


@pytest.fixture
def repo(tmp_path):
    """A tiny repository: a book of two chapters, the second failing in its fourth cell (index 3)."""
    root = tmp_path / "repo"
    (root / "book").mkdir(parents=True)
    (root / "book" / "_toc.yml").write_text(
        "format: jb-book\nroot: intro\nchapters:\n  - file: notebooks/01_ok\n  - file: notebooks/02_bad\n"
    )
    (root / "book" / "intro.md").write_text("# Intro\n")
    _notebook(root / "notebooks" / "01_ok.ipynb", "x = 1\nx")
    _notebook(root / "notebooks" / "02_bad.ipynb", "# a comment first\nratio = 1 / 0\nratio", "ratio * 2")
    return root


def test_a_failing_chapter_keeps_the_previous_book_and_names_the_cell(repo, tmp_path):
    out = tmp_path / "build"
    (out / "book" / "_build" / "html").mkdir(parents=True)
    (out / "book" / "_build" / "html" / "index.html").write_text("the previous book")
    with pytest.raises(BookBuildError) as err:
        build_book(out=out, root=repo)
    msg = str(err.value)
    assert "notebooks/02_bad.ipynb failed in cell 2" in msg and "`# a comment first`" in msg
    assert "ZeroDivisionError" in msg
    assert "-m cpmc_lib.book execute notebooks/02_bad.ipynb" in msg  # the command to rerun it alone
    assert (out / "book" / "_build" / "html" / "index.html").read_text() == "the previous book"
    assert (out / ".book.building" / "notebooks" / "01_ok.ipynb").is_file()  # what ran is kept to look at

    # the rerun command's own path: one chapter alone, same error, the book untouched
    with pytest.raises(BookBuildError, match="cell 2"):
        execute_alone("notebooks/02_bad.ipynb", out=out, root=repo)
    assert (out / "book" / "_build" / "html" / "index.html").read_text() == "the previous book"


def test_a_finished_build_replaces_the_previous_book(repo, tmp_path, monkeypatch):
    out = tmp_path / "build"

    def fake_jupyter_book(book_dir):  # jupyter-book itself is exercised by tests/test_book.py
        assert (book_dir / "notebooks" / "02_bad.ipynb").is_file()
        assert (out / "book" / "old-page.html").read_text() == "old"  # the old book is there meanwhile
        (book_dir / "_build" / "html").mkdir(parents=True)
        (book_dir / "_build" / "html" / "index.html").write_text("the new book")

    monkeypatch.setattr(book_build, "_run_jupyter_book", fake_jupyter_book)
    (out / "book").mkdir(parents=True)
    (out / "book" / "old-page.html").write_text("old")
    index = build_book(out=out, root=repo, execute=False)
    assert index == out / "book" / "_build" / "html" / "index.html"
    assert index.read_text() == "the new book"
    assert sorted(p.name for p in out.iterdir()) == ["book"]  # no staging or previous copy left
    assert not (out / "book" / "old-page.html").exists()


def test_missing_browser_fails_under_ci_and_skips_elsewhere(monkeypatch):
    monkeypatch.setattr(browser, "find_chromium", lambda: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(FileNotFoundError, match="CI=true requires the book's browser check"):
        browser.require_chromium()
    monkeypatch.delenv("CI")
    assert browser.require_chromium() is None
    monkeypatch.setattr(browser, "find_chromium", lambda: "/usr/bin/chromium")
    monkeypatch.setenv("CI", "true")
    assert browser.require_chromium() == "/usr/bin/chromium"


def test_a_rebuild_reuses_chapters_whose_code_is_unchanged_with_their_new_prose(repo, tmp_path, monkeypatch):
    out = tmp_path / "build"
    (repo / "notebooks" / "02_bad.ipynb").unlink()
    _notebook(repo / "notebooks" / "02_bad.ipynb", "y = 2\ny")  # a chapter that runs
    ran, books = [], []
    real = book_build.execute_notebook
    monkeypatch.setattr(book_build, "execute_notebook", lambda src, *a, **k: ran.append(src.name) or real(src, *a, **k))

    def fake_jupyter_book(book_dir):  # what the book would show: chapter 2's first cell and its output
        nb = nbformat.read(book_dir / "notebooks" / "02_bad.ipynb", as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code" and "injected-parameters" not in c.metadata.get("tags", [])]
        books.append((nb.cells[0].source, code[-1].outputs[0]["data"]["text/plain"]))
        (book_dir / "_build" / "html").mkdir(parents=True)
        (book_dir / "_build" / "html" / "index.html").write_text("book")

    monkeypatch.setattr(book_build, "_run_jupyter_book", fake_jupyter_book)
    build_book(out=out, root=repo)
    assert ran == ["01_ok.ipynb", "02_bad.ipynb"]
    nb = nbformat.read(repo / "notebooks" / "02_bad.ipynb", as_version=4)
    nb.cells[0].source = "# A chapter, reworded"  # prose only: the outputs are reused
    nbformat.write(nb, repo / "notebooks" / "02_bad.ipynb")
    build_book(out=out, root=repo)
    assert ran == ["01_ok.ipynb", "02_bad.ipynb"] and books[-1] == ("# A chapter, reworded", "2")
    nb.cells[-1].source = "y = 3\ny"  # code: it runs again
    nbformat.write(nb, repo / "notebooks" / "02_bad.ipynb")
    build_book(out=out, root=repo)
    assert ran[2:] == ["02_bad.ipynb"] and books[-1] == ("# A chapter, reworded", "3")
    build_book(out=out, root=repo, fresh=True)  # --fresh: everything runs
    assert ran[3:] == ["01_ok.ipynb", "02_bad.ipynb"]


def test_chapter_key_follows_code_parameters_and_the_library_not_prose(repo):
    nb = repo / "notebooks" / "01_ok.ipynb"
    def key_of(params):
        return book_build.chapter_key(nb, {"config_path": params}, book_build.inputs_digest(repo))

    key = key_of("configs/default.yaml")
    assert key != key_of("configs/quick.yaml")
    (repo / "cpmc_lib").mkdir()
    (repo / "cpmc_lib" / "plots.py").write_text("X = 1\n")  # the library a chapter imports
    with_lib = key_of("configs/default.yaml")
    assert with_lib != key
    (repo / "cpmc_lib" / "plots.py").write_text("X = 2\n")
    assert key_of("configs/default.yaml") != with_lib
    text = nbformat.read(nb, as_version=4)
    text.cells[0].source = "# Reworded"
    nbformat.write(text, nb)
    (repo / "cpmc_lib" / "plots.py").write_text("X = 1\n")
    assert key_of("configs/default.yaml") == with_lib  # prose only
