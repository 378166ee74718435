"""The ledger of choices (book/ledger.yaml): every entry names a real config key once, with its family,
what it was chosen on, the metric, how, and the commit; values are never typed (the book reads them
from ``Config()``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from cpmc_lib.config import Config

LEDGER = Path(__file__).resolve().parents[1] / "book" / "ledger.yaml"
REQUIRED = ("key", "family", "chosen_on", "metric", "how", "commit")
OPTIONAL = ("note",)
FAMILIES = {"tuning", "validation", "field"}
# Choices that read a validation setting: they must say so.
HONESTY = ("calibration.pairing", "pseudo.negative_outlier")


@pytest.fixture(scope="module")
def entries() -> list[dict]:
    loaded = yaml.safe_load(LEDGER.read_text())
    assert isinstance(loaded, list) and loaded, "book/ledger.yaml must be a non-empty list of entries"
    assert all(isinstance(e, dict) for e in loaded), "every ledger entry is a mapping"
    return loaded


def test_entries_have_exactly_the_fields(entries):
    for e in entries:
        missing = [f for f in REQUIRED if f not in e]
        assert not missing, f"{e.get('key')}: missing {missing}"
        extra = sorted(set(e) - set(REQUIRED) - set(OPTIONAL))
        assert not extra, f"{e['key']}: unknown fields {extra} (the value is read from Config(), never typed)"
        for f in (*REQUIRED, *OPTIONAL):
            if f in e:
                assert isinstance(e[f], str) and e[f].strip(), f"{e['key']}: {f} must be a non-empty string"


def test_keys_exist_in_the_config(entries):
    defaults = Config().to_dict()
    for e in entries:
        section, sep, name = e["key"].partition(".")
        assert sep and "." not in name, f"{e['key']}: not a section.name key"
        assert section in defaults and isinstance(defaults[section], dict), (
            f"{e['key']}: no section {section!r}"
        )
        assert name in defaults[section], f"{e['key']}: not a key of Config().to_dict()"


def test_keys_are_unique(entries):
    keys = [e["key"] for e in entries]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    assert not duplicates, f"listed more than once: {duplicates}"


def test_families_are_known(entries):
    for e in entries:
        assert e["family"] in FAMILIES, f"{e['key']}: family {e['family']!r} not in {sorted(FAMILIES)}"


def test_commits_are_hashes(entries):
    for e in entries:
        assert re.fullmatch(r"[0-9a-f]{7,40}", e["commit"]), f"{e['key']}: commit {e['commit']!r}"


@pytest.mark.parametrize("key", HONESTY)
def test_choices_that_read_validation_settings_say_so(entries, key):
    by_key = {e["key"]: e for e in entries}
    assert key in by_key, f"{key} is missing from the ledger"
    assert by_key[key]["family"] == "validation"
    assert by_key[key].get("note"), f"{key}: the note must say which validation setting was read"
