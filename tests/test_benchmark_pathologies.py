"""The benchmark fails the way it was designed to, measured on a classifier trained on it.

Not asserted by hand: a small classifier is trained from scratch on a small draw of the default
generator, and its CAM must show both failures the paper attacks (the dataset card's targets):
part recall well above body recall (false negatives) and more activation on class context than on
neutral background (false positives). About a minute on 2 CPU cores.
"""

import pytest

from cpmc_lib import cams, classifier, synth
from cpmc_lib.config import load_config
from cpmc_lib.store import RunStore


@pytest.fixture(scope="module")
def trained_cam(tmp_path_factory):
    root = tmp_path_factory.mktemp("pathologies")
    cfg = load_config("configs/default.yaml", [
        f"data.root={root / 'data'}", f"runs_dir={root / 'runs'}", "device=cpu",
        # the default generator at 128 px, fewer images and classes; no pretraining, one scale
        "synth.train=200", "synth.val=20", "synth.classes=6", "data.num_classes=7",
        "classifier.epochs=4", "pretrain.enabled=false", "cams.flip=false",
    ])  # fmt: skip

    synth.ensure_generated(cfg.synth, cfg.data_root())
    store = RunStore.for_config(cfg)
    classifier.run(cfg, store, progress=False)
    return cams.run(cfg, store, method="cam", progress=False)


def test_classifier_cam_misses_the_body_and_finds_the_part(trained_cam):
    p = trained_cam["pathology"]
    assert p["n_part"] > 0 and p["n_body"] > 0
    assert p["recall_part"] >= p["recall_body"] + 15, p


def test_classifier_cam_fires_on_class_context_more_than_on_neutral_background(trained_cam):
    p = trained_cam["pathology"]
    assert p["n_context"] > 0 and p["n_neutral"] > 0
    assert p["act_context"] >= 1.5 * p["act_neutral"], p
    assert p["act_distractor"] > p["act_neutral"], p  # part-less blobs with body texture, too
