"""Progress is plain text in the book build: one line per finished bar, no widget."""

import io

from cpmc_lib import progress


def test_plain_progress_writes_only_the_final_line(monkeypatch):
    out = io.StringIO()
    monkeypatch.setenv(progress.PLAIN_ENV, "1")
    assert progress.plain_progress()
    for _ in progress.tqdm(range(5), desc="work", file=progress.FinalLine(out)):
        pass
    for _ in progress.tqdm(range(5), desc="quiet", leave=False, file=progress.FinalLine(out)):
        pass
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("work: 100%") and "5/5" in lines[0]
    assert "\r" not in out.getvalue()
    bar = progress.tqdm(total=1, disable=True)
    assert type(bar).__module__ == "tqdm.std"


def test_outside_the_book_progress_is_tqdm_auto(monkeypatch):
    monkeypatch.delenv(progress.PLAIN_ENV, raising=False)
    assert not progress.plain_progress()
    bar = progress.tqdm(total=1, disable=True)
    assert type(bar).__module__ in ("tqdm.std", "tqdm.auto", "tqdm.asyncio", "tqdm.notebook")
