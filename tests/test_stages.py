"""Tests of cpmc_lib.stages: the cache keys follow the data actually read and the sections read."""

from __future__ import annotations

import shutil

import pytest

from cpmc_lib.config import Config
from cpmc_lib.stages import STAGES, data_identity, sections, stage_hash
from cpmc_lib.synth import DataFolderError, generate

DATA_STAGES = [s for s in STAGES if "data" in sections(Config(), s)]


def _voc(root) -> Config:
    return Config().replace(**{"data.kind": "voc", "data.root": str(root), "data.num_classes": 21, "pseudo.negatives": False})


def test_another_data_folder_recomputes_every_stage_that_reads_data(fake_voc_root, tmp_path):
    assert set(DATA_STAGES) == set(STAGES) - {"pretrain"}
    copy = tmp_path / "copy" / "VOC2012"
    shutil.copytree(fake_voc_root, copy)
    a, b = _voc(fake_voc_root), _voc(copy)
    assert data_identity(a)["splits"] == data_identity(b)["splits"] and data_identity(a) != data_identity(b)
    for s in STAGES:  # the same files elsewhere: another folder, another key (pretrain reads no data)
        assert (stage_hash(a, s) != stage_hash(b, s)) == (s in DATA_STAGES), s
    before = {s: stage_hash(b, s) for s in DATA_STAGES}
    (copy / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_000001\n")  # the folder changes
    assert all(stage_hash(b, s) != before[s] for s in DATA_STAGES)


def test_the_synthetic_benchmark_is_identified_by_its_settings_and_folder(tmp_path):
    small = {"synth.train": 4, "synth.val": 2, "synth.size": 32, "synth.classes": 2, "data.num_classes": 3}
    here, there = (Config().replace(**small, **{"data.root": str(tmp_path / d)}) for d in ("a", "b"))
    generate(here.synth, tmp_path / "a", progress=False, workers=1)
    assert data_identity(here) == data_identity(there)  # generated or to be generated: the settings say it
    assert stage_hash(here, "segmentation") != stage_hash(there, "segmentation")  # data.root as written
    other = here.replace(**{"synth.seed": 7})  # a config whose settings the folder was not made with
    with pytest.raises(DataFolderError, match="synth.seed"):
        stage_hash(other, "classifier")
    assert stage_hash(other, "pretrain")  # a stage that reads no data does not look
