"""The run store: every stage writes into ``runs/<run>/<stage>/`` beside a ``manifest.json``.

A stage is handed the store and reads what it needs from it (:meth:`RunStore.require`,
:meth:`RunStore.maps_dir`); it never runs the stage before it, and
:func:`cpmc_lib.pipeline.ensure` runs them in order. The cache keys come from the stage table,
:func:`cpmc_lib.stages.stage_hash` (a stage's sections of the config) and
:func:`cpmc_lib.stages.method_hash` (one CAM method's maps).

A manifest records the stage's config, its hash, the seed, git commit, package versions, device,
and start and end times. A stage is *complete* when its manifest says so for the current config
hash; a complete stage is reused, a stage with another hash (or none, after a crash) is cleared
and recomputed. Artifacts go through :mod:`cpmc_lib.io`'s atomic writes, and the manifest is
written last, so a killed stage is never mistaken for a finished one.

Example:
    >>> store = RunStore("runs/demo")  # doctest: +SKIP
    >>> with store.stage("cams", cfg) as st:  # doctest: +SKIP
    ...     if not st.done:
    ...         save_torch(st.path / "cams.pt", cams)
    ...         st.result = evaluate(cams)
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.metadata
import os
import platform
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import distributed, stages
from .config import Config
from .io import load_json, recover_dir, replace_dir, save_json
from .stages import method_hash, stage_hash

__all__ = [
    "RunDirError",
    "RunStore",
    "StageMissingError",
    "StageRun",
    "environment_info",
    "missing_stage_message",
]

class StageMissingError(FileNotFoundError):
    """A stage's input is not in the run store; the message names the command that makes it."""


def missing_stage_message(cfg: Config, path: Path, what: str, stage: str, method: str | None = None) -> str:
    """``no <what> for this config in <path>: run `python -m cpmc_lib <command> ...` first``."""
    command = stages.stage(stage).command + (f" --method {method}" if method else "")
    return (
        f"no {what} for this config in {path}: run `python -m cpmc_lib {command} --config <your config> "
        f"--run {cfg.run}` (with the same --set overrides) first, or cpmc_lib.pipeline.ensure(cfg, {stage!r})"
    )


_PACKAGES = ("torch", "torchvision", "timm", "numpy", "torchmetrics", "pydensecrf2", "cpmc_lib")


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )  # fmt: skip
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# Read once, when the library is imported: a long run (a sweep's kernel) records the commit of the
# code it loaded, not whatever the checkout moved to while it ran.
_COMMIT_AT_IMPORT = _git_commit()


def environment_info() -> dict[str, Any]:
    """Git commit (of the code this process imported), Python and package versions: what a
    manifest needs to reproduce a result."""
    versions = {}
    for pkg in _PACKAGES:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"git_commit": _COMMIT_AT_IMPORT, "python": platform.python_version(), "packages": versions}


def _link_tree(src: Path, dst: Path) -> None:
    """Replace ``dst`` by hard links to ``src``'s files (a copy where linking is impossible).

    The links go into a folder beside ``dst`` that takes its place only when complete
    (:func:`cpmc_lib.io.replace_dir`): an interrupted link leaves the previous ``dst``.
    """
    tmp = dst.with_name(f".{dst.name}.linking")
    if tmp.exists():
        shutil.rmtree(tmp)

    def link(s: str, d: str) -> None:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    shutil.copytree(src, tmp, copy_function=link, ignore=shutil.ignore_patterns("manifest.json"))
    shutil.copy2(src / "manifest.json", tmp / "manifest.json")
    replace_dir(tmp, dst)


# The file that marks a run folder as the store's: the store writes and clears only inside such folders.
MARKER = ".cpmc-run"
# Files and folders of a run that a writer of another process waits for (RunLock), or that a stage
# replacement leaves behind for a moment (replace_dir's ".<name>.old", a stage's ".<name>.partial").
_LOCK = ".lock"
# Process-wide: the run folders this process holds the lock of, and how deep (a writer calls
# another, e.g. a stage that links its input in from a sibling run).
_HELD: dict[Path, list] = {}


class RunLock:
    """One writer per run folder at a time, across processes (``flock`` on ``<run>/.lock``).

    Reentrant within a process. A second process waits for the holder, once saying who it is
    (process id, command, since when), so a notebook and a command-line run on the same run never
    interleave their writes.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        key = self.root.resolve()
        if key in _HELD:
            _HELD[key][1] += 1
            try:
                yield
            finally:
                _HELD[key][1] -= 1
            return
        import fcntl  # POSIX: the library runs on Linux and macOS

        fd = os.open(self.root / _LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
                print(f"{self.root} is being written by {holder}; waiting for it to finish", file=sys.stderr, flush=True)
                fcntl.flock(fd, fcntl.LOCK_EX)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"process {os.getpid()} ({shlex.join(sys.argv)[:200]}) since {_now()}\n".encode(), 0)
            _HELD[key] = [fd, 1]
            yield
        finally:
            _HELD.pop(key, None)
            os.close(fd)  # releases the lock


def _relocated(value: Any, old: str, new: str) -> Any:
    """``value`` with every string that is a path under ``old`` moved under ``new`` (a stage's result
    names its files in the folder it was written into, which becomes the stage folder)."""
    if isinstance(value, dict):
        return {k: _relocated(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_relocated(v, old, new) for v in value]
    if isinstance(value, str) and (value == old or value.startswith(old + os.sep)):
        return new + value[len(old) :]
    return value


class RunDirError(ValueError):
    """A run's folder cannot be created; the message names it and the settings that choose it."""


def _make_dir(path: Path) -> None:
    """``mkdir -p path``, or a :class:`RunDirError` that says which settings choose the folder."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(
            f"cannot create the run folder {path}: {e.strerror or e}"
            + (f" ({e.filename})" if e.filename and str(e.filename) != str(path) else "")
            + ". Runs are written to <runs_dir>/<run>/: choose a writable place with runs_dir in the config "
            "(--set runs_dir=DIR) or another run name (--run NAME)"
        ) from e


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class StageRun:
    """One stage's folder: ``done`` tells whether its outputs can be reused; set ``result`` to record metrics."""

    name: str
    path: Path
    config_hash: str
    done: bool
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def manifest(self) -> dict[str, Any]:
        return load_json(self.path / "manifest.json")


class RunStore:
    """The folder of one run (``runs/<run>``), holding one sub-folder per stage.

    Runs beside it (the other folders of ``runs/``) act as a cache: a stage that is not done here
    but finished with the same config hash in a sibling run is linked in (hard links, so no copy
    of the data) instead of recomputed. Sweep points with their own run names thus share the
    classifier they have in common.
    """

    def __init__(self, root: str | Path, share: bool = True):
        self.root = Path(root)
        self.share = share
        self.lock = RunLock(self.root)

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the run's lock (:class:`RunLock`) in a run folder that is the store's own: it is
        created with the store's marker, or it already carries it.

        Raises:
            RunDirError: the folder cannot be created, or exists and was not made by the store.
        """
        if not self.root.exists():
            _make_dir(self.root)
            save_json(self.root / MARKER, {"made_by": "cpmc_lib.store", "created": _now()})
        elif not (self.root / MARKER).is_file():
            self._adopt()
        with self.lock.hold():
            yield

    def _adopt(self) -> None:
        """Mark a run folder made before the marker existed, if it holds nothing but the store's files."""
        known = {*stages.STAGES, "metrics.json", _LOCK}
        foreign = [p.name for p in self.root.iterdir() if p.name not in known and not p.name.startswith(".")]
        stage_dirs = [p for p in self.root.iterdir() if p.name in stages.STAGES]
        if foreign or not self.root.is_dir() or not all((p / "manifest.json").is_file() for p in stage_dirs):
            raise RunDirError(
                f"{self.root} exists and was not made by cpmc_lib (no {MARKER} file; it holds "
                f"{', '.join(sorted(foreign)[:5]) or 'folders without a manifest'}): the run store writes only into "
                "its own folders. Choose another run name (--run NAME) or runs_dir (--set runs_dir=DIR)"
            )
        save_json(self.root / MARKER, {"made_by": "cpmc_lib.store", "created": _now(), "adopted": True})

    @classmethod
    def for_config(cls, cfg: Config) -> RunStore:
        return cls(cfg.run_dir())

    def path(self, stage: str) -> Path:
        return self.root / stage

    def is_done(self, stage: str, config_hash: str) -> bool:
        """True when the stage finished with this config hash (its manifest was written last)."""
        manifest = self.path(stage) / "manifest.json"
        if not manifest.exists():
            return False
        try:
            m = load_json(manifest)
        except (OSError, ValueError):
            return False
        return m.get("status") == "complete" and m.get("config_hash") == config_hash

    def find_cached(self, stage: str, config_hash: str) -> Path | None:
        """A sibling run's folder of ``stage`` finished with ``config_hash``, if any."""
        if not self.share or not self.root.parent.is_dir():
            return None
        for other in sorted(self.root.parent.iterdir()):
            if other != self.root and RunStore(other, share=False).is_done(stage, config_hash):
                return other / stage
        return None

    def key(self, cfg: Config, stage: str) -> str:
        """The cache key of ``stage`` under ``cfg`` (:func:`cpmc_lib.stages.stage_hash`)."""
        return stage_hash(cfg, stage)

    def method_key(self, cfg: Config, method: str) -> str:
        """The cache key of one CAM method's maps under ``cfg`` (:func:`cpmc_lib.stages.method_hash`)."""
        return method_hash(cfg, method)

    def missing(
        self, cfg: Config, path: Path, what: str, stage: str, method: str | None = None
    ) -> StageMissingError:
        """The error to raise when ``what`` (made by ``stage``) is not in ``path`` for ``cfg``."""
        return StageMissingError(missing_stage_message(cfg, path, what, stage, method))

    def maps_dir(self, method: str) -> Path:
        """The folder of one CAM method's saved maps (:mod:`cpmc_lib.mapfile`): ``cams/<method>/``."""
        return self.path("cams") / method

    def map_metrics(self, cfg: Config, method: str, stage_dir: Path | None = None) -> dict[str, Any] | None:
        """The scores of ``method``'s maps if they were made with ``cfg``'s settings, else None.

        All methods share the one "cams" stage folder (its key covers data, classifier and CAM
        inference); each method's ``metrics.json``, written last, records
        :func:`~cpmc_lib.stages.method_hash`, which adds the sections that method reads, so
        changing a calibration setting recomputes only the CPMC maps. ``stage_dir``: the cams
        folder to look in (default the finished one; the cams stage passes its folder in progress).
        """
        path = (stage_dir or self.path("cams")) / method / "metrics.json"
        if path.is_file():
            metrics = load_json(path)
            if metrics.get("method_hash") == method_hash(cfg, method):
                return metrics
        return None

    def require_maps(self, cfg: Config, method: str, seg_split: bool = False) -> tuple[Path, dict[str, Any]]:
        """``method``'s map folder and scores, made for ``cfg`` (and for the whole seg split when
        ``seg_split``; :func:`cpmc_lib.cams.run` with ``seg_split=True`` makes those).

        Raises:
            StageMissingError: the maps are missing or were made with other settings.
        """
        folder, metrics = self.maps_dir(method), self.map_metrics(cfg, method)
        if metrics is None:
            raise self.missing(cfg, folder, f"{method!r} maps", "cams", method)
        if seg_split and not self.has_seg_maps(cfg, method):
            raise self.missing(cfg, folder, f"{method!r} maps of the seg split {cfg.seg_split()!r}", "cams", method)
        return folder, metrics

    def seg_maps_key(self, cfg: Config, method: str) -> dict[str, Any]:
        """What ``cams/<method>/seg_split.json`` records for maps of the whole seg split."""
        return {"method_hash": method_hash(cfg, method), "seg_split": cfg.seg_split()}

    def has_seg_maps(self, cfg: Config, method: str) -> bool:
        """True when ``method``'s folder holds maps of every seg-split image for ``cfg`` (always,
        once the cam-split maps exist, when the seg split is the cam split)."""
        if cfg.seg_split() == cfg.data.cam_split:
            return self.map_metrics(cfg, method) is not None
        marker = self.maps_dir(method) / "seg_split.json"
        return marker.is_file() and load_json(marker).get("key") == self.seg_maps_key(cfg, method)

    def has(self, stage: str, cfg: Config) -> bool:
        """True when ``stage`` is finished for ``cfg`` here or in a sibling run (to link in)."""
        h = stage_hash(cfg, stage)
        return self.is_done(stage, h) or self.find_cached(stage, h) is not None

    def require(self, stage: str, cfg: Config, what: str | None = None) -> Path:
        """The folder of ``stage``, finished for ``cfg``; linked in from a sibling run if one has it.

        Raises:
            StageMissingError: the stage is not done for this config; the message names the
                command that makes it.
        """
        h = stage_hash(cfg, stage)
        path = self.path(stage)
        if not self.is_done(stage, h) and (cached := self.find_cached(stage, h)) is not None:
            if distributed.is_main():
                with self.writing():
                    if not self.is_done(stage, h):  # not linked by another writer meanwhile
                        _link_tree(cached, path)
            distributed.barrier()
        if not self.is_done(stage, h):
            raise self.missing(cfg, path, what or f"finished {stage} stage", stage)
        return path

    def result(self, stage: str) -> dict[str, Any]:
        """The ``result`` a finished stage recorded in its manifest."""
        return load_json(self.path(stage) / "manifest.json").get("result", {})

    @contextlib.contextmanager
    def stage(
        self, name: str, cfg: Config, device: str | None = None, keep: tuple[str, ...] = ()
    ) -> Iterator[StageRun]:
        """Open a stage for ``cfg``: reuse it if complete, otherwise record a new run of it.

        A new run writes into ``.<stage>.partial/`` beside the stage folder (``run.path``), which
        replaces the finished folder only once the block has completed and its manifest is written
        (:func:`cpmc_lib.io.replace_dir`): a failed or interrupted run leaves the last finished
        result in place. The run's lock is held throughout (:meth:`writing`).

        Args:
            keep: file names of an interrupted run *with the same config* to keep for the next one
                (e.g. a training checkpoint to resume from); anything else it left is cleared.

        Under torchrun rank 0 alone opens the stage (prepares the folder, writes the manifests);
        every rank runs the block, its share of the work, between barriers, so all ranks see the
        same ``done`` and the manifest is written after every rank's files.
        """
        if distributed.world_size() == 1:
            with self._open(name, cfg, device, keep) as run:
                yield run
            return
        opened = contextlib.ExitStack()
        if distributed.is_main():
            run = opened.enter_context(self._open(name, cfg, device, keep))
        distributed.barrier()  # rank 0 has cleared, linked or reused the folder
        h = stage_hash(cfg, name)
        done = self.is_done(name, h)
        path = self.path(name) if done else self.partial(name)
        mine = StageRun(name, path, h, done, self.result(name) if done else {})
        yield mine
        distributed.barrier()  # every rank has written its files
        if distributed.is_main():
            run.result = mine.result
        opened.close()  # rank 0: the manifest, written last
        distributed.barrier()

    def partial(self, stage: str) -> Path:
        """Where a new run of ``stage`` is written until it is complete: ``.<stage>.partial/``."""
        return self.root / f".{stage}.partial"

    @contextlib.contextmanager
    def _open(self, name: str, cfg: Config, device: str | None, keep: tuple[str, ...]) -> Iterator[StageRun]:
        """:meth:`stage` in one process."""
        h = stage_hash(cfg, name)
        with self.writing():
            path, partial = self.path(name), self.partial(name)
            recover_dir(path)  # a replacement interrupted between its two renames
            if not self.is_done(name, h) and (cached := self.find_cached(name, h)) is not None:
                _link_tree(cached, path)
            if self.is_done(name, h):
                yield StageRun(name, path, h, True, self.result(name))
                return
            manifest_file = partial / "manifest.json"
            same_config = manifest_file.is_file() and load_json(manifest_file).get("config_hash") == h
            if partial.exists():  # the store's own scratch of an interrupted run
                for child in partial.iterdir():
                    if same_config and child.name in keep:
                        continue
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
            _make_dir(partial)
            manifest = {
                "stage": name,
                "status": "running",
                "config_hash": h,
                "seed": cfg.seed,
                "config": cfg.to_dict(),
                "data": stages.data_identity(cfg),
                "device": device,
                "started": _now(),
                **environment_info(),
            }
            save_json(manifest_file, manifest)
            run = StageRun(name, partial, h, False)
            yield run
            run.result = _relocated(run.result, str(partial), str(path))  # paths as they will be
            manifest.update(status="complete", finished=_now(), result=run.result)
            save_json(manifest_file, manifest)
            replace_dir(partial, path)
            run.path = path
