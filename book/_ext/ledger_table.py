"""A Sphinx directive that renders the ledger of choices, ``book/ledger.yaml``, as a table.

``{ledger}`` in a MyST page becomes one row per measured default: the config key, its value *read
from the library's defaults* (``cpmc_lib.Config()``, so no value is typed twice), what it was chosen
on, the family of settings it looked at, the metric and the commit.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from docutils import nodes
from docutils.parsers.rst import Directive

__all__ = ["setup"]

COLUMNS = ("key", "value", "family", "chosen on", "metric", "how", "commit")


def _value(defaults: dict, key: str) -> str:
    section, name = key.split(".", 1)
    value = defaults[section][name]
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


class Ledger(Directive):
    has_content = False

    def run(self):
        from cpmc_lib.config import Config

        path = Path(self.state.document.settings.env.srcdir) / "ledger.yaml"
        entries = yaml.safe_load(path.read_text())
        defaults = Config().to_dict()
        table = nodes.table()
        group = nodes.tgroup(cols=len(COLUMNS))
        table += group
        group += [nodes.colspec(colwidth=1) for _ in COLUMNS]
        head = nodes.thead()
        group += head
        head += self._row(COLUMNS)
        body = nodes.tbody()
        group += body
        for e in entries:
            cells = (e["key"], _value(defaults, e["key"]), e["family"], e["chosen_on"], e["metric"], e["how"],
                     e["commit"] + (f" ({e['note']})" if e.get("note") else ""))  # fmt: skip
            body += self._row(cells)
        return [table]

    @staticmethod
    def _row(cells) -> nodes.row:
        row = nodes.row()
        for text in cells:
            entry = nodes.entry()
            entry += nodes.paragraph(text=str(text))
            row += entry
        return row


def setup(app):
    app.add_directive("ledger", Ledger)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
