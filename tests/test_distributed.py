"""Tests of cpmc_lib.distributed: sharding, the epoch sampler, and DDP training on two gloo processes."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from cpmc_lib import classifier, distributed
from cpmc_lib.config import ClassifierConfig, Config, DataConfig, PretrainConfig, SynthConfig
from cpmc_lib.io import load_json, save_json
from cpmc_lib.synth import generate
from cpmc_lib.transforms import eval_transform

gloo = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed gloo backend unavailable",
)


def test_single_process_defaults():
    assert (distributed.world_size(), distributed.rank(), distributed.is_main()) == (1, 0, True)
    assert distributed.local_batch_size(6) == 6
    assert distributed.shard(list(range(7)), part=1, parts=3) == [1, 4]
    assert distributed.all_reduce_sum({"a": 2.0}) == {"a": 2.0}
    assert isinstance(
        distributed.make_sampler(list(range(5)), torch.Generator()), torch.utils.data.RandomSampler
    )


@pytest.mark.parametrize("n, world", [(10, 2), (11, 2), (12, 3)])
def test_rank_batches_together_are_the_single_process_batches(n, world):
    """Batch b of every rank, joined, is batch b of DataLoader(shuffle=True, generator=same seed)."""
    data, batch = list(range(n)), 2
    single = DataLoader(data, batch_size=batch * world, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(7))  # fmt: skip
    per_rank = [
        list(DataLoader(data, batch_size=batch, drop_last=True, generator=(g := torch.Generator().manual_seed(7)),
                        sampler=distributed.EpochShardSampler(data, g, world, r)))
        for r in range(world)
    ]  # fmt: skip
    expected = [sorted(b.tolist()) for b in single]
    assert [sorted(sum((p[i].tolist() for p in per_rank), [])) for i in range(len(expected))] == expected
    assert all(len(p) == len(expected) for p in per_rank)


# --- two gloo processes against one --------------------------------------------------------------

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(root, runs) -> Config:
    """A tiny from-scratch classifier, global batch 4, BatchNorm frozen (see the test's docstring)."""
    return Config(
        device="cpu",
        runs_dir=str(runs),
        data=DataConfig(kind="synth", root=str(root), num_classes=11),
        classifier=ClassifierConfig(
            layers=(1, 1), channels=(8, 16), side_channels=(4, 4, 8), batch_size=4, crop_size=32,
            epochs=2, lr=0.05, num_workers=0, freeze_bn=True,
        ),
        pretrain=PretrainConfig(enabled=False),
    )  # fmt: skip


def _no_augmentation(crop_size, **_):
    # Random crops, flips and jitter are drawn per rank; the same global batch only gets the same
    # pixels on 1 and 2 processes without them.
    return eval_transform()


def _train_on_rank(rank: int, port: int, root: str, runs: str, out: str) -> None:
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD))  # fmt: skip
    torch.set_num_threads(1)
    classifier.train_transform = _no_augmentation  # this spawned process's own module
    with distributed.process_group(torch.device("cpu")):
        result = classifier.train(_config(root, runs), out, torch.device("cpu"), progress=False)
    save_json(f"{out}/result_rank{rank}.json", result)


@gloo
def test_two_processes_train_like_one(tmp_path, monkeypatch):
    """Two gloo ranks with half the global batch each give one process's losses, weights and mAP.

    BatchNorm: PyTorch's SyncBatchNorm (what :func:`cpmc_lib.engine.data_parallel` uses on GPUs)
    does not run on CPU, and plain BatchNorm in training mode would normalise each rank's half
    batch with its own statistics, which one process never does. The classifier is therefore
    trained with ``freeze_bn`` (IRN's FixedBatchNorm, eval-mode statistics, affine trained), so
    every sample's output depends on itself only and the comparison is like with like. What
    remains to be equal is exactly what DDP provides: sharded batches, averaged gradients, the
    logged loss averaged over ranks, rank-0 validation.
    """
    import torch.multiprocessing as mp

    root = tmp_path / "synth"
    generate(SynthConfig(train=8, val=4, size=32, classes=10), root, progress=False, workers=1)
    cfg = _config(root, tmp_path / "runs")

    monkeypatch.setattr(classifier, "train_transform", _no_augmentation)
    one = classifier.train(cfg, tmp_path / "one", torch.device("cpu"), progress=False)

    two = tmp_path / "two"
    mp.spawn(_train_on_rank, args=(_free_port(), str(root), str(tmp_path / "runs"), str(two)), nprocs=WORLD)

    h1, h2 = load_json(tmp_path / "one" / "history.json"), load_json(two / "history.json")
    assert len(h1) == len(h2) == 2
    losses1, losses2 = torch.tensor([h["loss"] for h in h1]), torch.tensor([h["loss"] for h in h2])
    torch.testing.assert_close(losses2, losses1, rtol=1e-4, atol=1e-5)
    assert losses1[1] != losses1[0]  # the second epoch trained on updated weights
    w1 = torch.load(tmp_path / "one" / "model.pt", weights_only=True)
    w2 = torch.load(two / "model.pt", weights_only=True)
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-5, msg=k)
    results = [load_json(two / f"result_rank{r}.json") for r in range(WORLD)]
    for r in results:  # every rank returns rank 0's validation
        assert r["val_mAP"] == pytest.approx(one["val_mAP"], abs=1e-3)
        assert r["val_F1"] == pytest.approx(one["val_F1"], abs=1e-3)
    assert sorted(p.name for p in two.iterdir()) == [
        "checkpoint.pt", "history.json", "model.pt", "result_rank0.json", "result_rank1.json",
    ]  # fmt: skip


# --- pseudo labels and CRF sharded over two gloo processes ----------------------------------------


def _pseudo_config(root) -> Config:
    from cpmc_lib.config import CrfConfig

    return Config(device="cpu", data=DataConfig(kind="synth", root=str(root), num_classes=11),
                  crf=CrfConfig(workers=0))  # fmt: skip


def _fake_maps(root, folder) -> None:
    """Random maps of each image's classes, saved as the cams stage saves them."""
    import numpy as np

    from cpmc_lib.datasets import build_dataset
    from cpmc_lib.mapfile import save_map

    ds = build_dataset(_pseudo_config(root), "train")
    rng = np.random.default_rng(0)
    for i, name in enumerate(ds.names):
        keys = (ds[i]["label"].nonzero().flatten() + 1).numpy()
        save_map(folder, name, keys, rng.random((len(keys), 32, 32)).astype(np.float16))


def _labels_on_rank(rank: int, port: int, root: str, maps: str, out: str) -> None:
    import os
    from pathlib import Path

    from cpmc_lib import pseudo

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD))  # fmt: skip
    torch.set_num_threads(1)
    with distributed.process_group(torch.device("cpu")):
        result = pseudo.make_labels(
            _pseudo_config(root), Path(maps), 0.3, out=Path(out) / f"rank{rank}", progress=False
        )
    save_json(f"{out}/result_rank{rank}.json", result)


@gloo
def test_two_processes_make_the_pseudo_labels_of_one(tmp_path, monkeypatch):
    """Each rank labels (and CRFs) half the images; the scores are those of one process."""
    import numpy as np
    import torch.multiprocessing as mp
    from PIL import Image

    from cpmc_lib import pseudo

    root, maps = tmp_path / "synth", tmp_path / "maps"
    generate(SynthConfig(train=6, val=2, size=32, classes=10), root, progress=False, workers=1)
    _fake_maps(root, maps)
    one = pseudo.make_labels(_pseudo_config(root), maps, 0.3, out=tmp_path / "one" / "labels", progress=False)
    mp.spawn(_labels_on_rank, args=(_free_port(), str(root), str(maps), str(tmp_path / "two")), nprocs=WORLD)
    for r in range(WORLD):
        two = load_json(tmp_path / "two" / f"result_rank{r}.json")
        assert two["images"] == one["images"] == 6
        for key in ("miou", "miou_crf", "precision_crf", "recall", "ignore_frac", "ignore_frac_crf"):
            assert two[key] == pytest.approx(one[key], abs=1e-9), key
    # each rank labelled its half of the images; together, the labels of one process
    shards = [sorted((tmp_path / "two" / f"rank{r}").iterdir()) for r in range(WORLD)]
    assert [len(s) for s in shards] == [3, 3]
    assert sorted(p.name for s in shards for p in s) == sorted(
        p.name for p in (tmp_path / "one" / "labels").iterdir()
    )
    for path in shards[0] + shards[1]:
        np.testing.assert_array_equal(
            np.asarray(Image.open(path)), np.asarray(Image.open(tmp_path / "one" / "labels" / path.name))
        )


# --- segmentation evaluation sharded over two gloo processes ---------------------------------------


def _segnet_config(root) -> Config:
    from cpmc_lib.config import CrfConfig, SegmentationConfig

    return Config(device="cpu", data=DataConfig(kind="synth", root=str(root), num_classes=11),
                  crf=CrfConfig(workers=0),
                  segmentation=SegmentationConfig(channels=(8, 16), head_channels=8, batch_size=2))  # fmt: skip


def _evaluate(cfg: Config, weights: str) -> dict:
    from cpmc_lib import segmentation
    from cpmc_lib.datasets import build_dataset

    model = segmentation.load_segnet(cfg, weights)
    val = distributed.shard_dataset(build_dataset(cfg, "val", eval_transform()))
    return segmentation.evaluate(model, val, torch.device("cpu"), 11, crf=cfg.crf, batch_size=2, progress=False)


def _evaluate_on_rank(rank: int, port: int, root: str, weights: str, out: str) -> None:
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD))  # fmt: skip
    torch.set_num_threads(1)
    with distributed.process_group(torch.device("cpu")):
        result = _evaluate(_segnet_config(root), weights)
    save_json(f"{out}/result_rank{rank}.json", result)


@gloo
def test_two_processes_score_the_segmentation_of_one(tmp_path, monkeypatch):
    """Each rank scores half the val images (plain and CRF); the summed confusions give one process's scores."""
    import torch.multiprocessing as mp

    from cpmc_lib.models import build_segnet

    root = tmp_path / "synth"
    generate(SynthConfig(train=2, val=5, size=32, classes=10), root, progress=False, workers=1)
    cfg = _segnet_config(root)
    torch.manual_seed(0)
    model = build_segnet(cfg)
    with torch.no_grad():  # a head that predicts several classes, so the scores are not trivial
        model.head[-1].bias.copy_(torch.linspace(-1, 1, 11))
    weights = tmp_path / "model.pt"
    torch.save(model.state_dict(), weights)
    one = _evaluate(cfg, str(weights))
    mp.spawn(_evaluate_on_rank, args=(_free_port(), str(root), str(weights), str(tmp_path)), nprocs=WORLD)
    for r in range(WORLD):
        two = load_json(tmp_path / f"result_rank{r}.json")
        for key in ("miou", "miou_crf", "precision", "recall_crf"):
            assert two[key] == pytest.approx(one[key], abs=1e-9), key
        assert two["iou"] == pytest.approx(one["iou"], abs=1e-9, nan_ok=True)
