"""Papermill sweeps: run a notebook (or the pipeline) at many parameter points, resumably.

A sweep file (``papermill_runs/<name>.yaml``)::

    name: sensitivity
    notebook: papermill_runs/point.ipynb   # executed once per point with papermill
    config: configs/default.yaml           # base config
    set: ["classifier.epochs=10"]          # overrides shared by every point
    until: cams                            # point notebook: stop the pipeline after this step
    methods: [cam, refined, proto, cpmc]   # CAM methods each point scores (default: all)
    grid:                                  # cartesian product of values ...
      refinement.iterations: [0, 1, 2, 3]
    points:                                # ... and/or explicit named points
      - {name: fp-only, set: {calibration.use_fn: false}}
    family: test                           # the points become variants run on every setting and
                                           # training seed of a drawn family (cpmc_lib.families)
    workers: 1                             # points run in parallel when > 1
    columns: [cams.cam.miou, cams.cpmc.miou]   # metrics tabulated (dotted paths into metrics.json)

Each point runs into ``papermill_runs/output/<sweep>/<point>/``: the executed notebook, its
``params.json`` and its ``metrics.json`` (written last, so a point counts as finished only when
it completed). A finished point whose parameters and last stages' cache keys (:func:`stage_keys`:
a default changed in the code changes them) did not change is skipped on rerun; a failing
point leaves ``error.txt`` and the sweep goes on. Each point is its own run (``runs/<sweep>-<point>``)
and the run store links in any stage an earlier point already computed with the same config, so a
sweep over calibration settings trains the classifier once. Results gather in ``results.csv`` and
``results.json``, one row per point with the parameters as columns.

A sweep too long for ``make book`` (the validation generator settings train a classifier each) is
*recorded*: ``python -m cpmc_lib sweep FILE --record`` writes ``papermill_runs/records/<sweep>.json``
with every point's metrics, the commits its stages ran at, the date and the command, so the book
can show a run's numbers, labelled with where they came from, without rerunning it.
:data:`RECORDED` lists every record the book reads that this checkout can remake, in the order
``python -m cpmc_lib records`` remakes them (:func:`remake_records`, resumable like any sweep).
"""

from __future__ import annotations

import csv
import itertools
import json
import re
import shlex
import sys
import time
import traceback
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from .config import Config, load_config
from .families import family_points
from .io import atomic_write, load_json, save_json
from .progress import tqdm
from .project import ROOT
from .stages import STAGES, method_hash, stage_hash

__all__ = [
    "ABLATION", "RECORDED", "Point", "Sweep", "ablation_rows", "flatten", "load_record", "load_results", "load_sweep", "point_metrics",
    "remake_records", "run_sweep", "stale_points", "sweep_runs", "write_record",
]  # fmt: skip

OUTPUT = ROOT / "papermill_runs" / "output"
RECORDS = ROOT / "papermill_runs" / "records"
# The records the book reads that this checkout can remake, by family of settings (cpmc_lib.families),
# in the order they are remade: a later sweep reuses the classifiers and maps of an earlier one.
# (records/parts/ and records/retired*.json hold measurements of code that no longer exists.)
RECORDED = {
    "robustness": "tuning",
    "band": "tuning",
    "validation": "validation",
    "validation_drawn": "validation",
    "negatives": "validation",
    "test": "test",
    "test_labels": "test",
}


@dataclass(frozen=True)
class Point:
    """One parameter point: a name, its config overrides and, in a table of maps such as the
    ablation, the rows it gives (``(row title, CAM method)`` pairs: the row reads that map)."""

    name: str
    overrides: tuple[str, ...]
    rows: tuple[tuple[str, str], ...] = ()


@dataclass
class Sweep:
    name: str
    notebook: Path
    config: str
    points: list[Point]
    until: str = "segmentation"
    methods: tuple[str, ...] = ()
    workers: int = 1
    columns: list[str] = field(default_factory=list)
    base: tuple[str, ...] = ()


_KEYS = ("name", "notebook", "config", "set", "until", "methods", "grid", "points", "family", "workers", "columns")
_POINT_KEYS = ("name", "set", "rows")
ABLATION = ROOT / "papermill_runs" / "ablation.yaml"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_")[:80] or "point"


def _overrides(d: dict[str, Any] | list[str] | None) -> tuple[str, ...]:
    if d is None:
        return ()
    if isinstance(d, list):
        return tuple(str(x) for x in d)
    return tuple(f"{k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in d.items())


def load_sweep(path: str | Path) -> Sweep:
    """Read a sweep file; grid values and explicit points both become :class:`Point` objects."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sweep file {path} does not exist; see papermill_runs/*.yaml")
    spec = yaml.safe_load(path.read_text()) or {}
    unknown = set(spec) - set(_KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown sweep keys {sorted(unknown)}")
    points: list[Point] = []
    grid = spec.get("grid") or {}
    if grid:
        keys = list(grid)
        for values in itertools.product(*(grid[k] for k in keys)):
            ov = _overrides(dict(zip(keys, values, strict=True)))
            points.append(Point(_slug(",".join(ov)), ov))
    family = spec.get("family")
    listed = spec.get("points") or []
    if family is not None:  # the listed points become variants, each run on every setting and seed
        try:
            drawn = family_points(family)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        listed = [{"name": f"{v['name']}-{f['name']}", "set": {**f["set"], **(v.get("set") or {})}}
                  for v in listed or [{"name": "default"}] for f in drawn]  # fmt: skip
    for p in listed:
        if unknown := set(p) - set(_POINT_KEYS):
            raise ValueError(f"{path}: point {p.get('name')!r}: unknown keys {sorted(unknown)}; keys: {', '.join(_POINT_KEYS)}")
        rows = tuple((str(title), str(m)) for title, m in (p.get("rows") or {}).items())
        points.append(Point(_slug(p["name"]), _overrides(p.get("set")), rows))
    if not points:
        raise ValueError(f"{path}: a sweep needs a 'grid' or 'points'")
    names = [p.name for p in points]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: point names repeat: {sorted(n for n in names if names.count(n) > 1)}")
    return Sweep(
        name=spec.get("name", path.stem),
        notebook=ROOT / spec.get("notebook", "papermill_runs/point.ipynb"),
        config=spec.get("config", "configs/default.yaml"),
        points=points,
        until=spec.get("until", "segmentation"),
        methods=tuple(spec.get("methods") or ()),
        workers=int(spec.get("workers", 1)),
        columns=list(spec.get("columns") or []),
        base=_overrides(spec.get("set")),
    )


def ablation_rows(path: str | Path = ABLATION) -> dict[str, tuple[str, dict[str, str]]]:
    """The ablation of the book, written once in ``papermill_runs/ablation.yaml``: row title ->
    (CAM method, ``{config key: value}`` overrides), in the file's order. The sweep runs it through
    the cams stage; chapter 9's explorer and ``benchmarks/tune_cpmc.py --grid final`` score the same rows.

    Example:
        >>> rows = ablation_rows()
        >>> rows["classifier CAM"], rows["+ FN local prototypes"]
        (('cam', {}), ('cpmc', {'calibration.use_fp': 'False'}))
    """
    out = {}
    for p in load_sweep(path).points:
        settings = dict(o.split("=", 1) for o in p.overrides)
        out.update({title: (method, settings) for title, method in p.rows})
    return out


def flatten(d: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Dotted paths of the scalar leaves of a nested dict."""
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from flatten(v, f"{key}.")
        elif isinstance(v, (int, float, str, bool)) or v is None:
            yield key, v


def _params(sweep: Sweep, point: Point, out: Path) -> dict[str, Any]:
    return {
        "config_path": sweep.config,
        "overrides": [*sweep.base, *point.overrides, f"run={sweep.name}-{point.name}"],
        "until": sweep.until,
        "methods": list(sweep.methods),
        "metrics_path": str(out / "metrics.json"),
    }


def point_config(sweep: Sweep, point: Point) -> Config:
    """The config a point runs with under this checkout's defaults: the sweep's file, its base
    overrides, then the point's."""
    return load_config(ROOT / sweep.config, [*sweep.base, *point.overrides])


def stage_keys(sweep: Sweep, point: Point) -> dict[str, str]:
    """The cache keys of the point's last stages (and of each map, ``until: cams``) under this
    checkout's defaults: a finished point is reused only while they are unchanged."""
    cfg = point_config(sweep, point)
    keys = {s.name: stage_hash(cfg, s.name) for s in STAGES.values() if s.step == sweep.until}
    if sweep.until == "cams":
        keys.update({f"map:{m}": method_hash(cfg, m) for m in sweep.methods})
    return keys


def _run_point(sweep: Sweep, point: Point, out: Path) -> tuple[str, str | None]:
    """Execute one point; returns (status, error). Status: done | skipped | failed.

    Skipped: its ``metrics.json`` exists and ``params.json`` holds the same parameters and the same
    :func:`stage_keys` (a change of a default in the code reruns the point, as a changed override does).
    """
    import papermill as pm

    params = _params(sweep, point, out)
    try:
        keys = stage_keys(sweep, point)
    except Exception:  # an invalid point: it fails in its notebook, where the error is recorded
        keys = None
    saved = {**params, "stage_keys": keys}
    metrics, params_file = out / "metrics.json", out / "params.json"
    if metrics.is_file() and params_file.is_file() and load_json(params_file) == saved:
        return "skipped", None
    out.mkdir(parents=True, exist_ok=True)
    metrics.unlink(missing_ok=True)
    (out / "error.txt").unlink(missing_ok=True)
    save_json(params_file, saved)
    try:
        pm.execute_notebook(
            str(sweep.notebook), str(out / sweep.notebook.name), parameters=params, cwd=str(ROOT),
            kernel_name="python3", progress_bar=False,
        )  # fmt: skip
        if not metrics.is_file():
            raise RuntimeError(f"{sweep.notebook} finished without writing {metrics}")
        return "done", None
    except Exception as e:  # a failing point is recorded; the sweep goes on
        msg = f"{type(e).__name__}: {e}"
        with atomic_write(out / "error.txt", "w") as f:
            f.write(msg + "\n\n" + traceback.format_exc())
        return "failed", msg


def run_sweep(
    path: str | Path, workers: int | None = None, output: str | Path | None = None, progress: bool = True
) -> dict[str, Any]:
    """Run every point of a sweep file (skipping finished ones) and tabulate the results.

    Returns:
        dict with ``rows`` (one per point: parameters, status and metrics columns),
        ``failures`` ({point: error}) and the ``csv`` / ``json`` paths.
    """
    sweep = load_sweep(path)
    base = Path(output) if output else OUTPUT / sweep.name
    n_workers = workers or sweep.workers
    status: dict[str, tuple[str, str | None]] = {}
    bar = tqdm(total=len(sweep.points), desc=f"sweep {sweep.name}", disable=not progress)
    with ThreadPoolExecutor(max_workers=max(n_workers, 1)) as pool:
        futures = {pool.submit(_run_point, sweep, p, base / p.name): p for p in sweep.points}
        for fut in futures:
            status[futures[fut].name] = fut.result()
            bar.update()
    bar.close()
    rows = []
    for p in sweep.points:
        row: dict[str, Any] = {"point": p.name, "status": status[p.name][0]}
        row.update(dict(o.split("=", 1) for o in p.overrides))
        mfile = base / p.name / "metrics.json"
        if mfile.is_file():
            flat = dict(flatten(load_json(mfile)))
            cols = sweep.columns or [
                k for k, v in flat.items() if isinstance(v, (int, float)) and not k.startswith("config.")
            ]
            row.update({c: flat.get(c) for c in cols})
        else:
            row["status"] = "failed"
        rows.append(row)
    failures = {n: s[1] for n, s in status.items() if s[0] == "failed"}
    columns: list[str] = []
    for r in rows:
        columns += [c for c in r if c not in columns]
    base.mkdir(parents=True, exist_ok=True)
    with atomic_write(base / "results.csv", "w") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
    save_json(base / "results.json", {"sweep": sweep.name, "rows": rows, "failures": failures})
    return {
        "rows": rows,
        "failures": failures,
        "csv": str(base / "results.csv"),
        "json": str(base / "results.json"),
    }


def load_results(name: str, output: str | Path | None = None) -> list[dict[str, Any]] | None:
    """The rows of a finished sweep's ``results.json`` (None if the sweep has not run)."""
    path = (Path(output) if output else OUTPUT / name) / "results.json"
    return load_json(path)["rows"] if path.is_file() else None


def _shipped_points(name: str) -> list[str] | None:
    """The point names of ``papermill_runs/<name>.yaml``, or None when there is no such file."""
    spec = ROOT / "papermill_runs" / f"{name}.yaml"
    return [p.name for p in load_sweep(spec).points] if spec.is_file() else None


def point_metrics(name: str, output: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """``{point: metrics.json}`` of the finished points of sweep ``name`` in the run output
    (empty if none has finished), in the sweep file's order when the file is found."""
    base = Path(output) if output else OUTPUT / name
    order = _shipped_points(name) or []
    found = sorted(p.parent.name for p in base.glob("*/metrics.json")) if base.is_dir() else []
    names = [n for n in order if n in found] + [n for n in found if n not in order]
    return {n: load_json(base / n / "metrics.json") for n in names}


def _stage_commits(metrics: dict[str, Any]) -> list[str]:
    """The git commits the stages of a point's run were computed at (from their manifests)."""
    cfg = metrics.get("config", {})
    run_dir = Path(cfg.get("runs_dir", "runs")) / str(cfg.get("run", ""))
    if not run_dir.is_absolute():
        run_dir = ROOT / run_dir
    commits = {load_json(m).get("git_commit") for m in run_dir.glob("*/manifest.json")}
    return sorted(c for c in commits if c)


def write_record(
    path: str | Path, output: str | Path | None = None, dest: str | Path | None = None, command: str | None = None
) -> Path:
    """Record the finished points of the sweep file ``path`` in ``dest`` (default
    ``papermill_runs/records/<sweep>.json``): per point its overrides, the commits its stages ran
    at and its metrics without the resolved config; plus the date and the command.

    Raises:
        ValueError: no point of the sweep has finished in ``output``.
    """
    sweep = load_sweep(path)
    found = point_metrics(sweep.name, output)
    if not found:
        raise ValueError(f"sweep {sweep.name}: no finished point in {Path(output) if output else OUTPUT / sweep.name}; "
                         f"run `python -m cpmc_lib sweep {path}` first")  # fmt: skip
    overrides = {p.name: list(p.overrides) for p in sweep.points}
    record = {
        "sweep": sweep.name,
        "file": str(path),
        "command": command or shlex.join([Path(sys.executable).name, "-m", "cpmc_lib", "sweep", str(path), "--record"]),
        "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "points": {
            name: {
                "overrides": overrides.get(name, []),
                "stage_commits": _stage_commits(m),
                "metrics": {k: v for k, v in m.items() if k != "config"},
            }
            for name, m in found.items()
        },
        "missing": [p.name for p in sweep.points if p.name not in found],
    }
    dest = Path(dest) if dest else RECORDS / f"{sweep.name}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_json(dest, record)
    return dest


def load_record(name: str, records: str | Path | None = None) -> dict[str, Any] | None:
    """The committed record of sweep ``name`` (:func:`write_record`), or None."""
    path = (Path(records) if records else RECORDS) / f"{name}.json"
    return load_json(path) if path.is_file() else None


def record_hours(record: dict[str, Any]) -> float:
    """What making ``record`` took, in hours: the sum over its points of each stage's wall time in
    the call that ran it (``metrics.json``'s ``seconds``; a stage reused from another point counts
    near zero), so the time of a remake on the machine that made the record."""
    seconds = sum(v or 0 for p in record["points"].values() for v in (p["metrics"].get("seconds") or {}).values())
    return seconds / 3600


def stale_points(name: str, runs: dict[str, dict[str, Any]]) -> list[str]:
    """The points of ``runs`` made with other settings than this checkout gives them.

    A point's ``config_hash`` (the segmentation stage's cache key, over every section up to it)
    is compared with the hash of ``papermill_runs/<name>.yaml``'s config and the point's overrides
    under this checkout's defaults: a default changed since the point ran makes it stale.
    """
    spec = ROOT / "papermill_runs" / f"{name}.yaml"
    if not spec.is_file():
        return []
    sweep = load_sweep(spec)
    stale = []
    for p in sweep.points:
        recorded = (runs.get(p.name) or {}).get("config_hash")
        if recorded and recorded != stage_hash(point_config(sweep, p), "segmentation"):
            stale.append(p.name)
    return stale


def sweep_runs(
    name: str, output: str | Path | None = None, records: str | Path | None = None
) -> tuple[dict[str, dict[str, Any]], str]:
    """The points of sweep ``name`` as ``({point: metrics}, where they come from)``.

    The sweep's own output when every point of its file finished here; else its committed record,
    described by date, command and the commits its stages ran at; else the points that did finish
    here (possibly none), said so.
    """
    live = point_metrics(name, output)
    expected = _shipped_points(name) or list(live)
    if live and all(n in live for n in expected):
        where = Path(output) if output else (OUTPUT / name).relative_to(ROOT)
        return live, f"this checkout's run of the sweep ({where})" + _stale_note(name, live)
    rec = load_record(name, records)
    if rec is not None:
        commits = sorted({c[:7] for p in rec["points"].values() for c in p["stage_commits"]})
        missing = f"; not recorded: {', '.join(rec['missing'])}" if rec.get("missing") else ""
        runs = {n: p["metrics"] for n, p in rec["points"].items()}
        source = (f"recorded {rec['recorded'][:10]} by `{rec['command']}` (stages run at commit "
                  f"{', '.join(commits) or 'unknown'}){_renamed(rec)}{missing}")  # fmt: skip
        return runs, source + _stale_note(name, runs)
    return live, f"{len(live)} of {len(expected)} points finished on this machine, no record"


def _renamed(rec: dict[str, Any]) -> str:
    """A note when the record's command ran the sweep file under another name than the record's
    ``file`` (a sweep renamed since, e.g. ``heldout`` -> ``validation``): the command stays as it ran."""
    words = rec.get("command", "").split()
    then = words[words.index("sweep") + 1] if "sweep" in words[:-1] else None
    now = rec.get("file")
    return f"; the sweep file, then `{then}`, is now `{now}`" if then and now and Path(then).name != Path(now).name else ""


def _stale_note(name: str, runs: dict[str, dict[str, Any]]) -> str:
    stale = stale_points(name, runs)
    if not stale:
        return ""
    return (f". **Not this checkout's settings:** {', '.join(stale)} ran with a configuration, or a version of the "
            f"code, that differs from what this checkout gives {'it' if len(stale) == 1 else 'them'} (a default or "
            f"a computation changed since; the cache keys say so), so "
            f"some of {'its' if len(stale) == 1 else 'their'} numbers may differ from what this checkout computes; "
            f"`python -m cpmc_lib sweep papermill_runs/{name}.yaml --record` reruns the sweep")  # fmt: skip


def remake_records(
    names: list[str] | None = None,
    workers: int | None = None,
    progress: bool = True,
    folder: str | Path | None = None,
    output: str | Path | None = None,
    records: str | Path | None = None,
) -> dict[str, dict[str, Any]]:
    """Run each recorded sweep (``names``, default every one of :data:`RECORDED`, in its order) from
    ``folder`` (default ``papermill_runs/``) and write its record. Resumable: a point finished by an
    earlier, interrupted call is skipped, and a sweep whose points all failed keeps its old record.

    Returns:
        ``{sweep: {"record": path or None, "failures": {point: error}, "seconds": float}}``.
    """
    unknown = sorted(set(names or ()) - set(RECORDED))
    if unknown:
        raise ValueError(f"no recorded sweep {unknown}; the records: {', '.join(RECORDED)}")
    folder = Path(folder) if folder else ROOT / "papermill_runs"
    out = {}
    for name in [n for n in RECORDED if not names or n in names]:
        start = time.perf_counter()
        where = Path(output) / name if output else None
        result = run_sweep(folder / f"{name}.yaml", workers=workers, output=where, progress=progress)
        done = any(r["status"] != "failed" for r in result["rows"])
        command = shlex.join(["python", "-m", "cpmc_lib", "records", "--only", name])
        dest = Path(records) / f"{name}.json" if records else None
        out[name] = {
            "record": write_record(folder / f"{name}.yaml", where, dest, command) if done else None,
            "failures": result["failures"],
            "seconds": round(time.perf_counter() - start, 1),
        }
    return out
