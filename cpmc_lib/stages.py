"""The pipeline's stages, declared once: what each runs, reads and depends on.

IRN's ``run_sample.py`` lists its steps in order; :data:`STAGES` does the same, with what the driver,
the run store's cache keys, the sweeps and the command line need to know about each step: what it
runs, what it reads, the config sections of its own, whether it reads the segmentation split, and
its command. :func:`table` prints it (``python -m cpmc_lib stages``; the book's landing page shows it).

A stage's **cache key** (:func:`stage_hash`) covers its own sections, those of every stage it
reads (recursively, under this config: the ImageNet stand-in counts only where it is used) and the
seed, so changing a CRF parameter does not retrain the classifier; a stage that reads the data
also covers what identifies the data actually read (:func:`data_identity`: for real data its
resolved folder and the names of its splits), so another data set never reuses its stages. A CAM
method's maps add the
sections the method reads (:data:`~cpmc_lib.cam_methods.CAM_METHODS`, :func:`method_hash`), so a
calibration setting recomputes only the CPMC maps. Stages that read the segmentation split
(``seg_split``) add it to their key when it differs from the cam split.

Each stage is a module with one ``run(cfg, store, progress)`` (:mod:`~cpmc_lib.pretrain`,
:mod:`~cpmc_lib.classifier`, :mod:`~cpmc_lib.cams`, :mod:`~cpmc_lib.pseudo`,
:mod:`~cpmc_lib.segmentation`); a stage reads its inputs from the run store it is handed and never
imports another stage's module. :func:`cpmc_lib.pipeline.ensure` runs a stage after what it reads.
Adding a stage is one :class:`Stage` entry below plus its module.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import cams, classifier, pretrain, pseudo, segmentation
from .cam_methods import CAM_METHODS
from .config import Config, ConfigError
from .datasets import build_dataset
from .synth_folder import GENERATOR_VERSION, generated_card

__all__ = [
    "KEY_VERSION", "STAGES", "STEPS", "Stage", "check_methods", "data_identity", "method_hash", "sections", "stage", "stage_hash",
    "table",
]  # fmt: skip


def _none(cfg: Config) -> tuple[str, ...]:
    return ()


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline.

    Attributes:
        name: its folder in the run store (``runs/<run>/<name>/``) and its key in the table.
        run: ``run(cfg, store, progress=...)`` (``method=`` too when ``per_method``); returns its result dict.
        sections: the config sections of its own that its outputs depend on.
        reads: the stages whose outputs it reads under a config.
        maps: the CAM methods whose saved maps it reads under a config.
        seg_split: it reads the segmentation split (``cfg.seg_split()``).
        per_method: one run per CAM method (the cams stage).
        step: the step of the pipeline it belongs to (``pipeline.run(until=step)``).
        command: its command line, ``python -m cpmc_lib <command>``.
        help: what it does, in one line (the command's help).
    """

    name: str
    run: Callable[..., dict[str, Any]]
    sections: tuple[str, ...]
    reads: Callable[[Config], tuple[str, ...]] = _none
    maps: Callable[[Config], tuple[str, ...]] = _none
    seg_split: bool = False
    per_method: bool = False
    step: str = ""
    command: str = ""
    help: str = ""


def _classifier_reads(cfg: Config) -> tuple[str, ...]:
    return ("pretrain",) if cfg.uses_pretrain_stage() else ()


def _pseudo_maps(cfg: Config) -> tuple[str, ...]:
    # pseudo.assign="parts" reads the classifier CAMs as well: they locate each class's part
    parts = ("cam",) if cfg.pseudo.assign == "parts" and cfg.pseudo.method != "cam" else ()
    return (cfg.pseudo.method, *parts)


def _segmentation_start(cfg: Config) -> tuple[str, ...]:
    return ("pretrain",) if cfg.segmentation_uses_pretrain_stage() else ()


# The stages in the order they run.
STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage(
            "pretrain", pretrain.run, ("pretrain", "classifier"), step="classifier", command="pretrain",
            help="pretrain the classifier's backbone on the synthetic ImageNet stand-in",
        ),
        Stage(
            "classifier", classifier.run, ("data", "synth", "classifier"), reads=_classifier_reads,
            step="classifier", command="train",
            help="train the multi-label classifier (pretraining its backbone first; checkpoints and resumes)",
        ),
        Stage(
            "cams", cams.run, ("cams",), reads=lambda cfg: ("classifier",), per_method=True, step="cams",
            command="cams", help="compute and score one CAM method's maps on the cam split",
        ),
        Stage(
            "pseudo", pseudo.run, ("pseudo", "crf"), maps=_pseudo_maps, seg_split=True, step="pseudo",
            command="pseudo", help="pseudo labels from pseudo.method's maps (background rule, dense CRF)",
        ),
        Stage(
            "segmentation", segmentation.run, ("segmentation",),
            reads=lambda cfg: ("pseudo", *_segmentation_start(cfg)), seg_split=True, step="segmentation",
            command="segment", help="train and score the segmentation network on the pseudo labels",
        ),
        Stage(
            "segmentation_gt", segmentation.run_gt, ("data", "synth", "crf", "segmentation"),
            reads=_segmentation_start, seg_split=True, step="segmentation", command="ceiling",
            help="train and score the same network on ground-truth masks (the fully supervised ceiling)",
        ),
    )
}

# The steps of pipeline.run(until=...), in order.
STEPS = tuple(dict.fromkeys(s.step for s in STAGES.values()))


def stage(name: str) -> Stage:
    """The :class:`Stage` called ``name``; a :class:`~cpmc_lib.config.ConfigError` lists the stages otherwise."""
    if name not in STAGES:
        raise ConfigError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    return STAGES[name]


def check_methods(cfg: Config, *methods: str) -> None:
    """Raise a :class:`~cpmc_lib.config.ConfigError` naming the setting when a CAM method is unknown
    (``pseudo.method`` and ``methods``); the registry is :data:`~cpmc_lib.cam_methods.CAM_METHODS`."""
    for where, m in (("pseudo.method", cfg.pseudo.method), *(("method", m) for m in methods)):
        if m not in CAM_METHODS:
            raise ConfigError(f"{where}={m!r} is not a CAM method; methods: {', '.join(CAM_METHODS)}")


def sections(cfg: Config, name: str) -> set[str]:
    """The config sections stage ``name``'s outputs depend on under ``cfg``: its own, those of the
    stages it reads (recursively) and those of the CAM methods whose maps it reads."""
    s = stage(name)
    out = set(s.sections)
    for dep in s.reads(cfg):
        out |= sections(cfg, dep)
    if s.maps(cfg):
        check_methods(cfg, *s.maps(cfg))
        out |= sections(cfg, "cams")
        for m in s.maps(cfg):
            out |= set(CAM_METHODS[m].sections)
    return out


# Raised when the code changes what a stage computes under the same settings, so that no stage made
# by the old code is reused: 2, torch's PolynomialLR for the poly schedule (its recursive form
# rounds differently from the closed form used before) and the per-rank validation under torchrun.
KEY_VERSION = 2


def _digest(part: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps({**part, "key_version": KEY_VERSION}, sort_keys=True).encode()).hexdigest()[:16]


def data_identity(cfg: Config) -> dict[str, Any]:
    """What identifies the data that ``cfg``'s stages read, beyond the config's own keys.

    The synthetic benchmark, generated (or to be generated) at ``data.root``: its generator's
    version, as the ``synth`` section says the rest (:func:`cpmc_lib.synth.generated_card`; a folder
    generated with other settings is refused). Any other data: the resolved folder and, per split
    the stages read, a fingerprint of its image names (None where the split cannot be read yet;
    the stage that reads it says why).

    Raises:
        DataFolderError: ``data.root`` holds a synthetic benchmark of other settings.
    """
    root = Path(cfg.data_root())
    if cfg.data.kind == "synth" and (generated_card(cfg.synth, root) or not root.is_dir() or not any(root.iterdir())):
        return {"kind": "synth", "generator": GENERATOR_VERSION}
    d = cfg.data
    splits = sorted({d.train_split, d.cam_split, cfg.seg_split(), d.val_split})
    return {"kind": d.kind, "root": str(root.resolve()),
            "splits": {s: _names_digest(cfg, s) for s in splits}}  # fmt: skip


def _names_digest(cfg: Config, split: str) -> str | None:
    try:
        names = build_dataset(cfg, split).names
    except (OSError, ValueError):  # missing or broken: the stage reading it fails with the reason
        return None
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


def stage_hash(cfg: Config, name: str) -> str:
    """Cache key of stage ``name``: a hash of :func:`sections` of ``cfg``, the seed, the identity of
    the data read (:func:`data_identity`) and, for a stage that reads the segmentation split, that
    split when it is not the cam split."""
    d = cfg.to_dict()
    part: dict[str, Any] = {k: d[k] for k in sections(cfg, name)}
    part["seed"] = cfg.seed
    if "data" in part:  # the seg split enters below, and only where it is read and differs
        part["data"] = {k: v for k, v in part["data"].items() if k != "seg_split"}
        part["data_identity"] = data_identity(cfg)
    if stage(name).seg_split and cfg.seg_split() != cfg.data.cam_split:
        part["seg_split"] = cfg.seg_split()
    if cfg.data.kind != "synth":  # the generator does not feed real data
        part.pop("synth", None)
    if "pretrain" in part:  # whether the stand-in is used is said by the stages read, not by its weights
        part["pretrain"] = {k: v for k, v in part["pretrain"].items() if k != "enabled"}
    return _digest(part)


def method_hash(cfg: Config, method: str) -> str:
    """Cache key of one CAM method's maps: the cams stage's key plus the sections the method reads."""
    check_methods(cfg, method)
    d = cfg.to_dict()
    part = {"cams": stage_hash(cfg, "cams"), "method": method}
    part.update({k: d[k] for k in CAM_METHODS[method].sections})
    return _digest(part)


def table(cfg: Config | None = None) -> str:
    """The stage table as Markdown: each stage, what it reads under ``cfg`` (default: the library's
    default config), the config sections of its own, whether it reads the seg split, and its command.

    Example:
        >>> print(table().splitlines()[2])
        | pretrain | classifier | – | pretrain, classifier |  | `python -m cpmc_lib pretrain` |
    """
    cfg = cfg or Config()
    lines = ["| stage | step | reads | its config sections | seg split | command |", "|---|---|---|---|---|---|"]
    for s in STAGES.values():
        reads = [*s.reads(cfg), *(f"maps of {m}" for m in s.maps(cfg))]
        command = f"`python -m cpmc_lib {s.command}{' --method M' if s.per_method else ''}`"
        lines.append(f"| {s.name} | {s.step} | {', '.join(reads) or '–'} | {', '.join(s.sections)} | "
                     f"{'yes' if s.seg_split else ''} | {command} |")  # fmt: skip
    return "\n".join(lines)
