"""The run store: every stage writes into ``runs/<run>/<stage>/`` beside a ``manifest.json``.

The store also owns the stage graph: :data:`STAGE_DEPS` says which config sections each stage's
outputs depend on and :func:`stage_hash` turns them into the stage's cache key (so changing a CRF
parameter does not retrain the classifier); :func:`method_hash` adds the sections one CAM method
reads. A stage reads what it needs from the store (:meth:`RunStore.require`) and never runs the
stage before it; :func:`cpmc_lib.pipeline.ensure` runs them in order.

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
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import distributed
from .config import Config, ConfigError
from .io import load_json, save_json

__all__ = [
    "METHOD_DEPS",
    "RunDirError",
    "SEG_SPLIT_STAGES",
    "STAGE_COMMANDS",
    "STAGE_DEPS",
    "RunStore",
    "StageMissingError",
    "StageRun",
    "environment_info",
    "method_hash",
    "missing_stage_message",
    "stage_hash",
]

_MAP_DEPS = ("data", "synth", "classifier", "cams", "refinement", "prototypes", "calibration")
_PSEUDO_DEPS = (*_MAP_DEPS, "pseudo", "crf")
# Which stage configs a stage's outputs depend on (its own and everything upstream).
STAGE_DEPS: dict[str, tuple[str, ...]] = {
    "synth": ("synth",),
    "classifier": ("data", "synth", "classifier"),
    # Only the backbone's shape matters, but the classifier section holds it.
    "pretrain": ("classifier", "pretrain"),
    # The cams stage folder holds one sub-folder per method; a method's own sections are in METHOD_DEPS.
    "cams": ("data", "synth", "classifier", "cams"),
    # The walked maps: seeds from pseudo.method's maps (its name enters the hash, see stage_hash).
    "affinity": (*_MAP_DEPS, "affinity"),
    "pseudo": _PSEUDO_DEPS,
    "segmentation": (*_PSEUDO_DEPS, "segmentation"),
    # The fully supervised ceiling: the same network trained on ground-truth masks.
    "segmentation_gt": ("data", "synth", "crf", "segmentation"),
}


# The stages that read the segmentation split (Config.seg_split): the pseudo labels are made for
# it and the networks train on it. The cams stage scores the cam split only; the maps it makes
# for the other seg-split images carry their own key (cpmc_lib.cams.map_seg_split).
SEG_SPLIT_STAGES = ("affinity", "pseudo", "segmentation", "segmentation_gt")


# Config sections a CAM method reads beyond the cams stage's own (see method_hash).
METHOD_DEPS: dict[str, tuple[str, ...]] = {
    "refined": ("refinement",),
    "proto": ("refinement", "prototypes"),
    "cpmc": ("refinement", "prototypes", "calibration"),
}

# The command line that makes each stage's outputs (named in the error of a stage whose inputs
# are missing). "train" pretrains first when the classifier starts from the ImageNet stand-in.
STAGE_COMMANDS: dict[str, str] = {
    "pretrain": "train",
    "classifier": "train",
    "cams": "cams --method {method}",
    "affinity": "pseudo",
    "pseudo": "pseudo",
    "segmentation": "segment",
    "segmentation_gt": "segment --labels gt",
}


class StageMissingError(FileNotFoundError):
    """A stage's input is not in the run store; the message names the command that makes it."""


def stage_hash(cfg: Config, stage: str) -> str:
    """Cache key of ``stage``: a hash of its config, its upstream configs and the seed.

    ``data.seg_split`` counts only for :data:`SEG_SPLIT_STAGES` and only when it names another
    split than ``data.cam_split`` ("" and the cam split itself give the keys of before it existed).
    """
    if stage not in STAGE_DEPS:
        raise ConfigError(f"unknown stage {stage!r}; stages: {', '.join(STAGE_DEPS)}")
    d = cfg.to_dict()
    part = {k: d[k] for k in STAGE_DEPS[stage]}
    part["seed"] = cfg.seed
    if "data" in part:  # seg_split enters below, and only where it is read and differs from cam_split
        part["data"] = {k: v for k, v in part["data"].items() if k != "seg_split"}
    if stage in SEG_SPLIT_STAGES and cfg.seg_split() != cfg.data.cam_split:
        part["seg_split"] = cfg.seg_split()
    if cfg.data.kind != "synth":  # the generator does not feed real data
        part.pop("synth", None)
    if stage == "pretrain":  # whether its weights are used does not change them
        part["pretrain"] = {k: v for k, v in d["pretrain"].items() if k != "enabled"}
    # The ImageNet stand-in feeds the classifier (and so everything after it) only when enabled
    # and no weights file is given; otherwise its settings change nothing.
    if stage not in ("pretrain", "synth") and cfg.uses_pretrain_stage():
        part["pretrain"] = d["pretrain"]
    # ... and the segmentation backbone's start, whose shape the classifier section holds.
    if stage in ("segmentation", "segmentation_gt") and cfg.segmentation_uses_pretrain_stage():
        part.update(pretrain=d["pretrain"], classifier=d["classifier"])
    # With consistency training, the CPMC sections shape the classifier itself.
    if stage not in ("synth", "pretrain") and cfg.calibration.train_consistency_weight > 0:
        part.update({k: d[k] for k in ("refinement", "prototypes", "calibration")})
    if stage == "affinity":
        part["pseudo_method"] = cfg.pseudo.method
    # The walked maps feed the pseudo labels only when enabled (off, the keys stay as before it existed).
    if stage in ("pseudo", "segmentation") and cfg.affinity.enabled:
        part["affinity"] = d["affinity"]
    if "pseudo" in part and tuple(cfg.pseudo.band) == (1.0, 1.0):  # no band: the keys of before it existed
        part["pseudo"] = {k: v for k, v in part["pseudo"].items() if k != "band"}
    if "pseudo" in part and cfg.pseudo.assign == "argmax":  # the arg-max alone: the keys of before parts existed
        part["pseudo"] = {k: v for k, v in part["pseudo"].items() if k not in ("assign", "part_share", "contest_share")}
    if "pseudo" in part and not cfg.pseudo.negatives:  # off: the keys of before negatives existed
        part["pseudo"] = {k: v for k, v in part["pseudo"].items() if not k.startswith("negative")}
    # Erasing shapes only the trained classifier (not the backbone's shape the pretrain stage and the
    # ceiling read); off, the keys stay as before it existed.
    if "classifier" in part and (cfg.classifier.erase_weight == 0 or stage in ("pretrain", "segmentation_gt")):
        part["classifier"] = {k: v for k, v in part["classifier"].items() if not k.startswith("erase_")}
    blob = json.dumps(part, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def method_hash(cfg: Config, method: str) -> str:
    """Cache key of one CAM method's maps: the cams stage hash plus the sections the method reads."""
    d = cfg.to_dict()
    part = {"cams": stage_hash(cfg, "cams"), "method": method}
    part.update({k: d[k] for k in METHOD_DEPS.get(method, ())})
    return hashlib.sha256(json.dumps(part, sort_keys=True).encode()).hexdigest()[:16]


def missing_stage_message(cfg: Config, path: Path, what: str, stage: str, **fmt: str) -> str:
    """``no <what> for this config in <path>: run `python -m cpmc_lib <command> ...` first``."""
    command = STAGE_COMMANDS[stage].format(**fmt)
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

    The manifest is copied last, so an interrupted link leaves ``dst`` incomplete, never done.
    """
    if dst.exists():
        shutil.rmtree(dst)
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
    os.replace(tmp, dst)


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
                _link_tree(cached, path)
            distributed.barrier()
        if not self.is_done(stage, h):
            raise StageMissingError(
                missing_stage_message(cfg, path, what or f"finished {stage} stage", stage)
            )
        return path

    def result(self, stage: str) -> dict[str, Any]:
        """The ``result`` a finished stage recorded in its manifest."""
        return load_json(self.path(stage) / "manifest.json").get("result", {})

    @contextlib.contextmanager
    def stage(
        self, name: str, cfg: Config, device: str | None = None, keep: tuple[str, ...] = ()
    ) -> Iterator[StageRun]:
        """Open a stage for ``cfg``: reuse it if complete, otherwise clear it and record a new run.

        Args:
            keep: file names to keep when clearing (e.g. a training checkpoint to resume from
                after a crash with the *same* config; they are cleared when the hash changes).

        Under torchrun rank 0 alone opens the stage (clears the folder, writes the manifests);
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
        mine = StageRun(name, self.path(name), h, done, self.result(name) if done else {})
        yield mine
        distributed.barrier()  # every rank has written its files
        if distributed.is_main():
            run.result = mine.result
        opened.close()  # rank 0: the manifest, written last
        distributed.barrier()

    @contextlib.contextmanager
    def _open(self, name: str, cfg: Config, device: str | None, keep: tuple[str, ...]) -> Iterator[StageRun]:
        """:meth:`stage` in one process."""
        h = stage_hash(cfg, name)
        path = self.path(name)
        _make_dir(self.root)
        if not self.is_done(name, h) and (cached := self.find_cached(name, h)) is not None:
            _link_tree(cached, path)
        if self.is_done(name, h):
            yield StageRun(name, path, h, True, self.result(name))
            return
        old = path / "manifest.json"
        same_config = old.exists() and load_json(old).get("config_hash") == h
        if path.exists():
            for child in path.iterdir():
                if same_config and child.name in keep:
                    continue
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        _make_dir(path)
        manifest = {
            "stage": name,
            "status": "running",
            "config_hash": h,
            "seed": cfg.seed,
            "config": cfg.to_dict(),
            "device": device,
            "started": _now(),
            **environment_info(),
        }
        save_json(old, manifest)
        run = StageRun(name, path, h, False)
        yield run
        manifest.update(status="complete", finished=_now(), result=run.result)
        save_json(old, manifest)
