"""The learned affinity and its random walk (cpmc_lib.affinity)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cpmc_lib.affinity import (
    AffinityHead,
    affinity_loss,
    affinity_targets,
    neighbour_offsets,
    pairwise_affinity,
    random_walk,
)
from cpmc_lib.io import IGNORE_INDEX

sys.path.insert(0, str(Path(__file__).parent))
from conftest import TINY_OVERRIDES  # noqa: E402


def test_offsets_form_a_symmetric_disc():
    offsets = neighbour_offsets(5)
    assert (0, 0) in offsets and (0, 0) not in neighbour_offsets(5, center=False)
    assert set(offsets) == {(-dy, -dx) for dy, dx in offsets}
    assert all(dy * dy + dx * dx < 25 for dy, dx in offsets)
    assert (4, 0) in offsets and (4, 3) not in offsets
    with pytest.raises(ValueError, match="radius"):
        neighbour_offsets(0)


def test_half_offsets_give_the_same_loss_at_half_the_pairs():
    torch.manual_seed(0)
    feat = torch.randn(2, 4, 6, 6)
    seed = torch.from_numpy(np.random.default_rng(1).choice([0, 1, 2, IGNORE_INDEX], size=(2, 6, 6))).long()
    full, half = neighbour_offsets(3, center=False), neighbour_offsets(3, center=False, half=True)
    assert len(half) * 2 == len(full) and set(half) | {(-dy, -dx) for dy, dx in half} == set(full)
    losses = [affinity_loss(pairwise_affinity(feat, o), affinity_targets(seed, o)) for o in (full, half)]
    for key in ("loss", "bg", "fg", "neg"):
        torch.testing.assert_close(losses[0][key], losses[1][key])


def test_affinity_is_symmetric_and_zero_outside_the_grid():
    torch.manual_seed(0)
    feat, offsets = torch.randn(2, 6, 5, 7), neighbour_offsets(3)
    aff = pairwise_affinity(feat, offsets)
    assert aff.shape == (2, len(offsets), 5, 7)
    for p, (dy, dx) in enumerate(offsets):
        q = offsets.index((-dy, -dx))
        for y in range(5):
            for x in range(7):
                inside = 0 <= y + dy < 5 and 0 <= x + dx < 7
                if not inside:
                    assert aff[:, p, y, x].eq(0).all()
                else:
                    expected = torch.exp(-(feat[:, :, y, x] - feat[:, :, y + dy, x + dx]).abs().mean(1))
                    torch.testing.assert_close(aff[:, p, y, x], expected)
                    torch.testing.assert_close(aff[:, p, y, x], aff[:, q, y + dy, x + dx])
    assert pairwise_affinity(torch.zeros(1, 3, 4, 4), offsets)[:, offsets.index((0, 0))].eq(1).all()


def test_targets_match_a_brute_force_count():
    rng = np.random.default_rng(0)
    seed = torch.from_numpy(rng.choice([0, 1, 2, IGNORE_INDEX], size=(2, 6, 6))).long()
    offsets = neighbour_offsets(3, center=False)
    t = affinity_targets(seed, offsets)
    count = {"bg_pos": 0, "fg_pos": 0, "neg": 0}
    for b in range(2):
        for y in range(6):
            for x in range(6):
                for dy, dx in offsets:
                    if not (0 <= y + dy < 6 and 0 <= x + dx < 6):
                        continue
                    a, c = int(seed[b, y, x]), int(seed[b, y + dy, x + dx])
                    if IGNORE_INDEX in (a, c):
                        continue
                    count["neg" if a != c else ("bg_pos" if a == 0 else "fg_pos")] += 1
    assert {k: int(v.sum()) for k, v in t.items()} == count
    assert not (t["bg_pos"] & t["neg"]).any() and not (t["fg_pos"] & t["neg"]).any()


def test_loss_prefers_affinities_that_agree_with_the_seeds():
    seed = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1]]])
    offsets = neighbour_offsets(2, center=False)
    t = affinity_targets(seed, offsets)
    right = torch.where(t["neg"], 0.05, 0.95).float()
    wrong = 1 - right
    assert affinity_loss(right, t)["loss"] < affinity_loss(wrong, t)["loss"]
    empty = {k: torch.zeros_like(v) for k, v in t.items()}  # no pairs at all: a finite zero
    assert affinity_loss(right, empty)["loss"].item() == 0.0


def test_walk_keeps_constants_and_stops_at_boundaries():
    offsets = neighbour_offsets(2)
    # two regions of different features: affinity ~1 inside each, ~0 across the boundary
    feat = torch.zeros(1, 1, 6, 6)
    feat[..., 3:] = 40.0
    aff = pairwise_affinity(feat, offsets)
    torch.testing.assert_close(
        random_walk(torch.full((1, 2, 6, 6), 0.7), aff, offsets, 8.0, 5), torch.full((1, 2, 6, 6), 0.7)
    )
    assert random_walk(torch.zeros(1, 1, 6, 6), aff, offsets, 8.0, 5).eq(0).all()
    cam = torch.zeros(1, 1, 6, 6)
    cam[..., 2, 0] = 1.0  # one activated cell on the left region
    walked = random_walk(cam, aff, offsets, 8.0, 6)
    assert walked[..., :3].min() > 0  # spread over its whole region
    assert walked[..., 3:].max() < 1e-6  # and not across the boundary
    with pytest.raises(ValueError, match="0, 0"):
        random_walk(cam, aff[:, 1:], neighbour_offsets(2, center=False), 8.0, 1)


def test_head_learns_to_separate_seeded_regions():
    torch.manual_seed(0)
    stages = [torch.randn(2, 8, 8, 8), torch.randn(2, 16, 4, 4)]
    stages[0][:, :4, :, 4:] += 2.0  # the right half differs in the finest stage
    seed = torch.zeros(2, 8, 8, dtype=torch.long)
    seed[:, :, 4:] = 1
    head, offsets = AffinityHead([8, 16], width=8, dim=8), neighbour_offsets(3, center=False)
    assert head(stages, (8, 8)).shape == (2, 8, 8, 8) and head(stages, (4, 4)).shape == (2, 8, 4, 4)
    targets = affinity_targets(seed, offsets)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = affinity_loss(pairwise_affinity(head(stages, (8, 8)), offsets), targets)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    aff = pairwise_affinity(head(stages, (8, 8)), offsets).detach()
    assert aff[targets["neg"]].mean() < aff[targets["fg_pos"] | targets["bg_pos"]].mean()


@pytest.fixture(scope="module")
def walked_run(tmp_path_factory):
    from cpmc_lib import pipeline
    from cpmc_lib.config import load_config

    root = tmp_path_factory.mktemp("affinity")
    base = [*TINY_OVERRIDES, f"data.root={root / 'data'}", f"runs_dir={root / 'runs'}", "affinity.epochs=1"]
    cfg = load_config("configs/default.yaml", [*base, "affinity.enabled=true"])
    metrics = pipeline.run(cfg, progress=False, methods=("cpmc",), until="pseudo")
    return cfg, metrics, load_config("configs/default.yaml", base)


def test_stage_walks_every_image_and_feeds_the_pseudo_labels(walked_run):
    from cpmc_lib import pipeline
    from cpmc_lib.affinity import maps_dir
    from cpmc_lib.cams import load_cams
    from cpmc_lib.datasets import build_dataset
    from cpmc_lib.store import RunStore

    cfg, metrics, plain = walked_run
    store = RunStore.for_config(cfg)
    names = build_dataset(cfg, cfg.data.cam_split).names
    folder = maps_dir(store)
    assert sorted(p.stem for p in folder.glob("*.npy")) == sorted(names)
    for name in names[:3]:
        walked, source = load_cams(folder.parent, "maps", name), load_cams(store.root, "cpmc", name)
        np.testing.assert_array_equal(walked["keys"], source["keys"])
        assert walked["cam"].shape == source["cam"].shape and np.isfinite(walked["cam"]).all()
        assert walked["cam"].max() <= 1.0
    a = metrics["affinity"]
    assert a["method"] == "cpmc" and 0 <= a["miou"] <= 100 and "gt_free" in a
    assert abs(sum(a["seed_share"].values()) - 1) < 1e-6
    assert metrics["pseudo"]["affinity"] is True and "cpmc_crf" in metrics["pseudo"]
    # the labels come from the walked maps: without the walk they differ
    plain_metrics = pipeline.run(plain, progress=False, methods=("cpmc",), until="pseudo")
    assert plain_metrics["pseudo"]["affinity"] is False and "affinity" not in plain_metrics
    assert plain_metrics["pseudo"]["cpmc"]["miou"] != metrics["pseudo"]["cpmc"]["miou"]
    # a second call reuses the stage: the manifest of the first stays
    manifest = (store.path("affinity") / "manifest.json").read_text()
    again = pipeline.ensure(cfg, "affinity", store, progress=False)
    assert (store.path("affinity") / "manifest.json").read_text() == manifest
    assert again["miou"] == a["miou"]


def test_affinity_settings_reach_only_the_stages_that_read_them():
    from cpmc_lib.config import load_config
    from cpmc_lib.store import stage_hash

    off = load_config("configs/default.yaml")
    off2 = off.replace(**{"affinity.beta": off.affinity.beta + 1})
    on, on2 = off.replace(**{"affinity.enabled": True}), off2.replace(**{"affinity.enabled": True})
    for stage in ("cams", "classifier", "segmentation_gt"):
        assert stage_hash(off, stage) == stage_hash(on2, stage)
    for stage in ("pseudo", "segmentation"):  # off, its settings change nothing downstream
        assert (
            stage_hash(off, stage)
            == stage_hash(off2, stage)
            != stage_hash(on, stage)
            != stage_hash(on2, stage)
        )
    assert stage_hash(on, "affinity") != stage_hash(on2, "affinity")
    assert stage_hash(on, "affinity") != stage_hash(on.replace(**{"pseudo.method": "proto"}), "affinity")


def test_tune_affinity_reproduces_the_stages_own_row(walked_run, capsys):
    from test_benchmarks import _load

    cfg, metrics, _ = walked_run
    tune = _load("tune_affinity")
    sets = [f"{k}={v}" for k, v in (("runs_dir", cfg.runs_dir), ("data.root", cfg.data.root))]
    sets += [*TINY_OVERRIDES, "affinity.epochs=1"]
    a = cfg.affinity
    tune.main(
        [
            "--limit",
            "0",
            "--beta",
            str(a.beta),
            "--steps",
            str(a.steps),
            *(x for s in sets for x in ("--set", s)),
        ]
    )
    out = capsys.readouterr().out
    p = metrics["pseudo"]
    assert (
        f"| beta {a.beta:g}, {a.steps} steps | {p['cpmc']['miou']:.1f} | {p['cpmc_crf']['miou']:.1f} |" in out
    )
    assert "| no walk |" in out


def test_missing_inputs_name_the_command(tiny_cam_run):
    from cpmc_lib import affinity, pseudo
    from cpmc_lib.store import StageMissingError

    cfg, store = tiny_cam_run
    cfg = cfg.replace(**{"pseudo.method": "cam", "affinity.enabled": True})
    with pytest.raises(StageMissingError, match=r"walked maps .*python -m cpmc_lib pseudo "):
        pseudo.run(cfg, store, progress=False)
    with pytest.raises(StageMissingError, match=r"trained classifier .*python -m cpmc_lib train "):
        affinity.run(cfg, store, progress=False)
