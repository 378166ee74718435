"""Sphinx directives that render the library's declarations as tables on the method page.

- ``{ledger}``: the ledger of choices, ``book/ledger.yaml``, one row per measured default: the
  config key, its value *read from the library's defaults* (``cpmc_lib.Config()``, so no value is
  typed twice), what it was chosen on, the family of settings it looked at, the metric and the commit.
- ``{components}``: what the default is made of (``cpmc_lib.components.COMPONENTS``): each
  component's origin (paper, reconstruction, lineage, field, this book), source, config keys and
  how the test family measures it. The measured gains are chapter 9's (they come from runs).
- ``{tried}``: the options that left the library, each with its last measurement
  (``papermill_runs/records/retired.json``, ``retired_gap.json``), as the report functions write them.
- ``{background_rules}``: ground-truth-free background decisions against the oracle threshold on
  the drawn validation settings (``papermill_runs/records/background_rules.json``,
  ``benchmarks/background_rules.py --record``), with the sentence read from the numbers.
- ``{workload}``: what the default's size cost, ``papermill_runs/records/workload.json``
  (``benchmarks/workload.py``): each headline number before and after the cut, the keys it changed,
  and the stages' seconds.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from docutils import nodes
from docutils.parsers.rst import Directive

__all__ = ["setup"]

COLUMNS = ("key = value", "family", "chosen on (metric)", "how", "commit")
# file names, commands' options and `spans`: set as code, so the typography leaves "--grid" alone
_CODE = re.compile(r"`[^`]+`|--[\w-]+|[\w./-]+\.(?:py|yaml|json|md)\b")


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
        rows = [
            (f"`{e['key']}` = {_value(defaults, e['key'])}", e["family"], f"{e['chosen_on']} ({e['metric']})",
             e["how"] + (f" Note: {e['note']}" if e.get("note") else ""), f"`{e['commit']}`")
            for e in entries
        ]  # fmt: skip
        return [_table(COLUMNS, rows)]


def _paragraph(text: str) -> nodes.paragraph:
    """``text`` as a paragraph, its file names, options and `spans` as code."""
    para, at = nodes.paragraph(), 0
    for m in _CODE.finditer(text):
        para += nodes.Text(text[at : m.start()])
        para += nodes.literal(text=m.group().strip("`"))
        at = m.end()
    para += nodes.Text(text[at:])
    return para


def _row(cells) -> nodes.row:
    row = nodes.row()
    for text in cells:
        entry = nodes.entry()
        entry += _paragraph(str(text))
        row += entry
    return row


def _table(columns, rows) -> nodes.table:
    table = nodes.table()
    group = nodes.tgroup(cols=len(columns))
    table += group
    group += [nodes.colspec(colwidth=1) for _ in columns]
    head = nodes.thead()
    group += head
    head += _row(columns)
    body = nodes.tbody()
    group += body
    for cells in rows:
        body += _row(cells)
    return table


class Components(Directive):
    has_content = False

    def run(self):
        from cpmc_lib.components import COMPONENTS

        rows = []
        for c in COMPONENTS:
            if c.variant:
                measured = f"`{c.metric}`: default minus `{c.variant}` ({c.sweep}.yaml)"
            elif c.within:
                measured = f"`{c.metric}` minus `{c.within}`, same runs"
            else:
                measured = "–"
            rows.append((c.name, c.origin, c.source, ", ".join(f"`{k}`" for k in c.keys), measured))
        return [_table(("component", "origin", "source", "config keys", "gain measured on the test family as"), rows)]


class Workload(Directive):
    has_content = False

    def run(self):
        from cpmc_lib.io import load_json
        from cpmc_lib.sweep import RECORDS

        if not (RECORDS / "workload.json").is_file():
            return [_paragraph("No workload record in this checkout: benchmarks/workload.py makes it from two runs.")]
        record = load_json(RECORDS / "workload.json")
        changed = "; ".join(f"`{k}` {a} -> {b}" for k, (a, b) in record["changed"].items())
        rows = []
        for r in record["numbers"]:
            if r["change"] is not None:
                d = 3 if r["path"].startswith("seg.ratio") else 1  # the ratios in three decimals
                rows.append((r["number"], _num(r["before"], d), _num(r["after"], d), _num(r["change"], d, True)))
        moved = record["ceiling_moved"]
        rows.append(("ceiling's move over its last two epochs", _num(moved["before"], 1, True), _num(moved["after"], 1, True), "–"))
        secs = record["pipeline_seconds"]
        rows.append(("pipeline seconds (stages from scratch, 2 CPU cores)", _num(secs["before"], 0), _num(secs["after"], 0),
                     _num(secs["after"] - secs["before"], 0, True)))  # fmt: skip
        made = record["made_by"]
        intro = _paragraph(f"Changed: {changed}. {made.get('runs', '')} Table made by `{made['command']}` at `{made['commit']}`.")
        out = [intro, _table(("number (tuning setting, training seed 0)", "before", "after", "change"), rows)]
        labels = {r["path"]: r["number"] for r in record["numbers"]}
        for tried in record.get("tried", []):  # cuts stopped before their networks: what they reached
            keys = "; ".join(f"`{k}` {a} -> {b}" for k, (a, b) in tried["changed"].items())
            got = "; ".join(f"{labels.get(k, k)} {v:.1f}" for k, v in tried["numbers"].items())
            out.append(_paragraph(f"Also tried and stopped before the networks ({keys}): {got}."))
        if record.get("book_seconds"):
            out.append(_paragraph(f"`make book` after install, from a fresh clone: {record['book_seconds'] / 60:.1f} minutes."))
        return out


RULE_NAMES = {"otsu": "Otsu per image (default)", "pooled": "Otsu, pooled", "class": "Otsu per class, pooled",
              "fixed": "fixed", "otsu3": "3-group Otsu, lower cut", "li": "Li per image",
              "class_image": "Otsu per class and image"}  # fmt: skip


class BackgroundRules(Directive):
    has_content = False

    def run(self):
        from cpmc_lib.io import load_json
        from cpmc_lib.report import background_rule_verdicts
        from cpmc_lib.sweep import RECORDS

        path = RECORDS / "background_rules.json"
        if not path.is_file():
            return [_paragraph("No background-rule record in this checkout: benchmarks/background_rules.py --record makes it.")]
        rec = load_json(path)
        rules, rows = rec["rules"], rec["rows"]
        table = [(r["setting"], r["method"], f"{r['oracle']:.1f} @ {r['oracle_threshold']:.2f}",
                  *(_num(r[k] - r["oracle"], 1, True) for k in rules)) for r in rows]  # fmt: skip
        out = [_paragraph(f"Each rule's cost against the oracle threshold (mIoU points; the oracle reads the masks), "
                          f"{rec['family']} family, training seed {rec['seed']}; made by `{rec['command']}` at "
                          f"`{rec['commit']}` on {rec['recorded'][:10]}."),  # fmt: skip
               _table(("setting", "map", "oracle @ threshold", *(RULE_NAMES.get(k, k) for k in rules)), table)]
        out += [_paragraph(line) for line in background_rule_verdicts(rows, rules, RULE_NAMES)]
        return out


class Tried(Directive):
    has_content = False

    def run(self):
        from docutils.statemachine import StringList

        from cpmc_lib import report
        from cpmc_lib.sweep import load_record

        parts = []
        for name, table in (("retired", report.retired_table), ("retired_gap", report.retired_gap_table)):
            rec = load_record(name)
            if rec is None:
                continue
            commits = sorted({c[:7] for p in rec.get("points", {}).values() for c in p["stage_commits"]})
            parts.append(f"### Record `{name}`\n\nRecorded {rec['recorded'][:10]} by `{rec['command']}` at commit "
                         f"{', '.join(commits or [rec['commit'][:7]])}.\n\n{table(rec)}")  # fmt: skip
        if not parts:
            return [_paragraph("This checkout has no record of the retired options.")]
        node = nodes.container()
        # The report functions write Markdown: parsed as the page's own (MyST) text
        self.state.nested_parse(StringList("\n\n".join(parts).splitlines(), source="records"), self.content_offset, node)
        return node.children


def _num(x, digits: int = 1, signed: bool = False) -> str:
    if x is None:
        return "–"
    x = 0.0 if round(x, digits) == 0 else x  # no "-0.0"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def setup(app):
    app.add_directive("ledger", Ledger)
    app.add_directive("workload", Workload)
    app.add_directive("components", Components)
    app.add_directive("tried", Tried)
    app.add_directive("background_rules", BackgroundRules)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
