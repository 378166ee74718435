"""What the default pipeline is made of: each component, where it comes from, and what measures it.

Every component is labelled by its origin, so a page can tell what CPMC does from what was added:

- ``paper``: CPMC as its abstract describes it (classifier CAM, context refinement, prototype CAM,
  FN and FP local prototypes, pseudo labels, a segmentation network);
- ``reconstruction``: this book's reading of a step the paper leaves unspecified (its code and full
  text are not available; ``book/method.md``);
- ``lineage``: taken from a method CPMC builds on (SIPE, SFC, IRN);
- ``field``: a standard of the field (the dense CRF, ImageNet-style pretraining);
- ``book``: this book's own addition, kept in the default only where it helps.

A component with a ``variant`` is measured on the test family (:mod:`cpmc_lib.families`): the
sweep point of ``papermill_runs/<sweep>.yaml`` named ``<variant>-<setting>-seed-<seed>`` switches
it off, and its gain is the default's ``metric`` minus the variant's, run by run. ``within``
measures it inside the default's own runs instead (two numbers of one ``metrics.json``).

Example:
    >>> [c.name for c in COMPONENTS if c.origin == "paper"]
    ['classifier CAM', 'context refinement', 'prototype CAM', 'FN and FP local prototypes']
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["COMPONENTS", "ORIGINS", "ORIGIN_NAMES", "Component"]

ORIGINS = ("paper", "reconstruction", "lineage", "field", "book")
# what a page calls each origin
ORIGIN_NAMES = {"paper": "CPMC (the paper)", "reconstruction": "our reading of the paper", "lineage": "SIPE / SFC / IRN",
                "field": "field standard", "book": "this book's addition"}  # fmt: skip


@dataclass(frozen=True)
class Component:
    """One part of the default pipeline.

    Attributes:
        name: what a reader calls it.
        origin: one of :data:`ORIGINS`, with ``source`` saying which paper or standard.
        keys: the config keys that switch or shape it.
        sweep, variant: the test-family sweep and its variant that switches the component off
            (``""``: not switched off on the test family).
        metric: the dotted ``metrics.json`` path its gain is read on.
        within: instead of a variant, the path of the same run's number without the component.
    """

    name: str
    origin: str
    source: str
    keys: tuple[str, ...]
    sweep: str = ""
    variant: str = ""
    metric: str = ""
    within: str = ""


COMPONENTS: tuple[Component, ...] = (
    Component("classifier CAM", "paper", "CAM (Zhou et al.)", ("classifier.backbone",)),
    # the paper's steps: each map against the one before it, both cut by the pipeline's own GT-free rule
    Component(
        "context refinement", "paper", "CPMC step 2; SFC's affinity", ("refinement.iterations", "refinement.power"),
        metric="cams.refined.gt_free.miou", within="cams.cam.gt_free.miou",
    ),  # fmt: skip
    Component(
        "prototype CAM", "paper", "CPMC step 3; SIPE", ("prototypes.feature", "prototypes.seed_rule"),
        metric="cams.proto.gt_free.miou", within="cams.refined.gt_free.miou",
    ),  # fmt: skip
    Component(
        "FN and FP local prototypes", "paper", "CPMC step 4", ("calibration.use_fn", "calibration.use_fp"),
        metric="cams.cpmc.gt_free.miou", within="cams.proto.gt_free.miou",
    ),  # fmt: skip
    Component(
        "guards against false positives", "reconstruction", "this book (book/method.md)",
        ("calibration.proto_bg_factor", "calibration.fn_radius", "calibration.gate"),
        sweep="test_labels", variant="no-guards", metric="pseudo.cpmc_crf.miou",
    ),  # fmt: skip
    Component("background decision without ground truth", "reconstruction", "Otsu's plane per image",
              ("pseudo.threshold_rule",)),  # fmt: skip
    Component("ignore zone around the plane", "lineage", "IRN's confident planes", ("pseudo.band",)),
    Component("dense CRF on the pseudo labels", "field", "IRN / SIPE / SFC (pydensecrf)", ("pseudo.crf", "crf.iterations")),
    Component(
        "part-anchored class assignment", "book", "this book", ("pseudo.assign", "pseudo.part_share"),
        sweep="test_labels", variant="no-parts", metric="pseudo.cpmc_crf.miou",
    ),  # fmt: skip
    Component(
        "negative prototypes in the labels", "book", "this book, after W-OoD",
        ("pseudo.negatives", "pseudo.negative_outlier"),
        sweep="test_labels", variant="no-negatives", metric="pseudo.cpmc_crf.miou",
    ),  # fmt: skip
    Component("stand-in pretraining", "field", "ImageNet weights' stand-in", ("pretrain.enabled",)),
    Component(
        "test-time dense CRF", "field", "DeepLab's protocol", ("segmentation.test_crf",),
        metric="seg.wsss.miou_crf", within="seg.wsss.miou",
    ),  # fmt: skip
    Component(
        "both label additions (the default against the paper-only pipeline)", "book", "this book",
        ("pseudo.assign", "pseudo.negatives"), sweep="test", variant="paper", metric="seg.wsss.miou_crf",
    ),  # fmt: skip
)
