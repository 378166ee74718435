"""Smoke test of the CAM benchmark: it runs and reports every method (its speed is never tested)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cpmc_lib.cam_methods import JOINT_METHODS
from cpmc_lib.pipeline import CAM_REPORT

JOINT = {"+".join(g) for g in JOINT_METHODS}


def test_bench_cams_quick_json_reports_every_method():
    cmd = [sys.executable, "benchmarks/bench_cams.py", "--quick", "--json", "--device", "cpu",
           "--batch", "2", "--rounds", "1", "--warmup", "0"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    result = json.loads(out)
    assert result["device"] == "cpu" and set(result["images_per_s"]) == {*CAM_REPORT, *JOINT}
    assert all(v > 0 for v in result["images_per_s"].values())


def _load(name: str):
    """A script of benchmarks/ as a module (benchmarks are scripts, not a package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bench_pipeline():
    return _load("bench_pipeline")


def test_bench_pipeline_quick_extrapolates_per_image():
    """--quick's arithmetic by hand: images each stage handles, and seconds per image x images."""
    from cpmc_lib.config import load_config

    bench = _bench_pipeline()
    full = load_config("configs/synth-voc-scale.yaml")
    part = load_config("configs/synth-voc-scale.yaml", bench.slice_overrides(full, 4))
    sizes, slice_sizes = bench.split_sizes(full), bench.split_sizes(part)
    assert sizes == {"train": 10582, "cam": 10582, "seg": 10582, "val": 1449}
    assert slice_sizes == {"train": 4, "cam": 4, "seg": 4, "val": 2}
    # classifier: drop_last batches of 16 over 5 epochs; val scored every epoch
    assert bench.workload(full, "classifier", sizes) == {"train": 10576 * 5, "eval": 1449 * 5}
    assert bench.workload(part, "classifier", slice_sizes) == {"train": 4, "eval": 2}
    assert bench.workload(full, "cams_cam", sizes) == {"eval": 10582}
    assert bench.workload(full, "seg_wsss", sizes) == {"train": 10580 * 19, "eval": 1449}
    # a segmentation split larger than the cam split (VOC: train_aug over train): DeepLab trains on
    # it, the pseudo labels cover it, and only the pseudo-label method's pass maps its extra images
    voc = {"train": 10582, "cam": 1464, "seg": 10582, "val": 1449}
    assert bench.workload(full, "seg_wsss", voc)["train"] == 10580 * 19
    assert bench.workload(full, "pseudo", voc) == {"eval": 10582}
    assert bench.workload(full, "cams_refined", voc) == {"eval": 10582}  # cpmc's joint pass
    assert bench.workload(full, "cams_cam", voc) == {"eval": 1464}
    # segmentation reports its own split of train and eval seconds
    seg = bench.extrapolate({"seconds": 9, "train_seconds": 4.0, "eval_seconds": 5.0},
                            {"train": 4, "eval": 2}, {"train": 400, "eval": 10})  # fmt: skip
    assert seg == 4.0 / 4 * 400 + 5.0 / 2 * 10
    # elsewhere one rate, an evaluated image a third of a trained one
    assert bench.extrapolate({"seconds": 10.0}, {"train": 6, "eval": 3}, {"train": 60, "eval": 30}) == 100.0
    assert bench.extrapolate({"seconds": 3.0}, {"eval": 0}, {"eval": 0}) == 3.0  # nothing to scale


def test_bench_pipeline_estimate_counts_flops_per_stage(capsys):
    """--estimate: FLOPs of every network stage, none for the others; epochs and classes scale them."""
    import pytest

    from cpmc_lib.config import load_config

    bench = _bench_pipeline()
    cfg = load_config("configs/quick.yaml")
    sizes = bench.split_sizes(cfg)
    est = bench.flop_estimate(cfg, sizes, (32, 32), gpu_tflops=50.0, classes_per_image=1.0)
    assert list(est) == bench.stages(cfg)
    for stage in ("classifier", "cams_cam", "cams_refined", "cams_gradcam", "seg_wsss", "seg_full"):
        assert est[stage]["total_flops"] > 0, stage
    for stage in ("data", "pseudo", "cams_proto", "cams_cpmc", "cams_gradcampp", "cams_layercam"):
        assert est[stage]["total_flops"] == 0, stage  # not a network, or made in an earlier pass
    assert est["classifier"]["flops_per_train_image"] > est["classifier"]["flops_per_eval_image"] > 0
    c = est["classifier"]
    assert c["total_flops"] == (c["flops_per_train_image"] * c["images"]["train"]
                                + c["flops_per_eval_image"] * c["images"]["eval"])  # fmt: skip
    assert c["gpu_hours"] == pytest.approx(c["total_flops"] / 50e12 / 3600)
    # twice the epochs: twice the training (and per-epoch validation) work
    epochs = [
        f"classifier.epochs={2 * cfg.classifier.epochs}",
        f"segmentation.epochs={2 * cfg.segmentation.epochs}",
    ]
    doubled = load_config("configs/quick.yaml", epochs)
    twice = bench.flop_estimate(doubled, sizes, (32, 32), gpu_tflops=50.0, classes_per_image=1.0)
    for stage in ("classifier", "seg_wsss"):
        train = {
            e: r[stage]["flops_per_train_image"] * r[stage]["images"]["train"]
            for e, r in ((1, est), (2, twice))
        }
        assert train[2] == pytest.approx(2 * train[1]) and train[1] > 0, stage
    assert twice["cams_cam"]["total_flops"] == est["cams_cam"]["total_flops"]
    # Grad-CAM runs one backward pass per present class
    two = bench.flop_estimate(cfg, sizes, (32, 32), gpu_tflops=50.0, classes_per_image=2.0)
    assert two["cams_gradcam"]["total_flops"] == pytest.approx(2 * est["cams_gradcam"]["total_flops"])
    # the command line: one JSON object, the assumption named; a table without --json
    args = ["--config", "configs/quick.yaml", "--estimate", "--image-size", "32", "32", "--gpu-tflops", "50",
            "--classes-per-image", "1"]  # fmt: skip
    result = bench.main([*args, "--json"])
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(result))
    assert result["gpu_tflops"] == 50 and "ASSUMED" in result["note"] and result["image_hw"] == [32, 32]
    assert result["gpu_hours"] == pytest.approx(sum(s["gpu_hours"] for s in est.values()))
    bench.main(args)
    assert "GPU h" in capsys.readouterr().out
    # --quick --estimate: CPU seconds per slice image of the stages that are not a network
    measured = {"imports": {"cpu_s": 2.0}, "data": {"cpu_s": 5.0, "slice_images": {"eval": 3}},
                "pseudo": {"cpu_s": 10.0, "slice_images": {"eval": 2}}}  # fmt: skip
    assert bench.not_network_cpu(measured) == {"data": 1.0, "pseudo": 4.0}


def test_summarize_metrics_checks_each_promise_against_its_numbers(tmp_path, capsys, monkeypatch):
    summary = _load("summarize_metrics")
    path = lambda **p: {"recall_body": 70.0, "recall_atypical": 60.0, "fp_context": 10.0, "fp_distractor": 20.0, **p}  # noqa: E731
    m = {
        "cams": {
            "cam": {"miou": 55.0, "threshold": 0.1, "pathology": path(), "gt_free": {"miou": 54.5, "pathology": path()}},
            "proto": {"miou": 66.0, "threshold": 0.3, "pathology": path(), "gt_free": {"miou": 65.5, "pathology": path()}},
            "cpmc": {"miou": 70.0, "threshold": 0.4, "pathology": path(fp_distractor=19.0),  # oracle view: holds
                     "gt_free": {"miou": 69.5, "pathology": path(recall_body=76.0, fp_distractor=21.0)}},
        },  # the promises read each map at the ground-truth-free decision
        "pseudo": {"threshold_rule": "otsu"},
        "seg": {"ratio": 0.9, "full": {"miou": 80.0, "curve": [70.0, 79.8, 80.0, 80.2]}},
    }
    assert "| **CPMC** | 70.0 (0.40) |" in summary.table(m)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.json").write_text(json.dumps(m))
    monkeypatch.setattr("sys.argv", ["summarize_metrics.py", str(tmp_path / "run" / "metrics.json")])
    summary.main()
    out = capsys.readouterr().out
    assert "PASS  CPMC 69.5 >= CAM 54.5 + 10" in out and "PASS  CPMC 69.5 >= prototype CAM 65.5 + 3" in out
    assert "PASS  CPMC at the ground-truth-free decision 69.5 within 1 point of its oracle" in out
    assert "FAIL  distractor labelled object 21.0 > prototype CAM's 20.0" in out  # the sentence says what was measured
    assert "PASS  context labelled object 10.0" in out and "PASS  ceiling moved +0.40" in out
    assert "PASS  weak / full 0.900 >= 0.88" in out


def test_weak_full_gap_oracle_fix_sets_one_kind_of_error_to_the_ground_truth(tiny_cam_run, tmp_path):
    from cpmc_lib import pseudo
    from cpmc_lib.datasets import build_dataset
    from cpmc_lib.io import read_mask_png
    from cpmc_lib.synth import ATYPICAL, BODY, CONTEXT_ABSENT, CONTEXT_PRESENT, DISTRACTOR

    gap = _load("weak_full_gap")
    regions = {"context": (CONTEXT_PRESENT, CONTEXT_ABSENT), "distractor": (DISTRACTOR,)}
    cfg, store = tiny_cam_run
    cfg = cfg.replace(**{"pseudo.method": "cam"})
    labels = Path(pseudo.run(cfg, store, progress=False)["labels"])
    ds = build_dataset(cfg, cfg.seg_split())
    changed_by_kind = {}
    for kind in ("class", "missed", "background", "context", "distractor"):
        out = tmp_path / kind
        out.mkdir()
        found = gap.oracle_fixed_labels(cfg, store, out, kind)
        changed = total = 0
        for name in ds.names:
            before, after = read_mask_png(labels / f"{name}.png"), read_mask_png(out / f"{name}.png")
            gt, diag = ds.targets(name)
            if kind == "background":
                obj = gt == 0
            elif kind in regions:
                obj = (gt == 0) & np.isin(diag, regions[kind])
            else:
                obj = (diag == BODY) | (diag == ATYPICAL)
            diff = before != after
            assert (after[diff] == gt[diff]).all() and obj[diff].all()  # only that kind, only to the truth
            if kind == "class":  # body labelled another class
                wrong = obj & (before != gt) & (before != 255) & (before > 0)
            elif kind == "missed":  # body labelled background or ignored
                wrong = obj & ((before == 0) | (before == 255))
            else:  # background (or its context / distractor) labelled object; ignored stays ignored
                wrong = obj & (before > 0) & (before != 255)
                assert (after[obj & (before == 255)] == 255).all()
            assert (after[wrong] == gt[wrong]).all()
            changed, total = changed + int(diff.sum()), total + int(obj.sum())
            changed_by_kind[kind] = changed_by_kind.get(kind, 0) + int(diff.sum())
        assert found["changed"] == pytest.approx(100 * changed / total)
        assert found["of"] == {"class": "body", "missed": "body"}.get(kind, kind)
    assert changed_by_kind["background"] > 0  # the tiny run's labels do put objects on background
    # context and distractor are parts of the background: their fixes are among its fixes
    assert changed_by_kind["context"] + changed_by_kind["distractor"] <= changed_by_kind["background"]


def test_tune_over_seeds_keeps_only_settings_that_hold_on_every_seed(tmp_path, capsys, monkeypatch):
    tos = _load("tune_over_seeds")

    def row(which, setting, miou, body=70.0, ctx=10.0, dist=20.0):
        return {"map": which, "setting": setting, "miou": miou, "thr": 0.4, "body": body, "fp_ctx": ctx, "dist": dist}

    def grid(greedy_ctx):  # "greedy" is best on mIoU but labels more context than the prototype CAM on one seed
        return [row("cam", "classifier CAM", 55.0), row("proto", "base", 62.0),
                row("cpmc", "greedy", 70.0, body=80.0, ctx=greedy_ctx),
                row("cpmc", "careful", 68.0, body=76.0, ctx=9.0),
                row("cpmc", "weak", 64.0, body=76.0, ctx=9.0)]  # fmt: skip

    grids = [grid(9.5), grid(12.0)]
    summary = {s["setting"]: s for s in tos.summarize(grids)}
    assert summary["greedy"]["claims"]["context FP <= proto"] == (1, -2.0)
    assert summary["weak"]["claims"]["CPMC >= proto + 3"] == (0, -1.0)
    chosen, every = tos.select(list(summary.values()), 2)
    assert every and [s["setting"] for s in chosen] == ["careful"]
    # no setting holds everything: the rule says so and falls back to the most promise-seed pairs
    chosen, every = tos.select([summary["greedy"], summary["weak"]], 2)
    assert not every and [s["setting"] for s in chosen] == ["greedy"]
    for i, g in enumerate(grids):
        (tmp_path / f"s{i}.json").write_text(json.dumps(g))
    monkeypatch.setattr("sys.argv", ["tune_over_seeds.py", str(tmp_path / "s0.json"), str(tmp_path / "s1.json")])
    tos.main()
    out = capsys.readouterr().out
    assert "| careful | 68.0 | 68.0 | 68.0 ± 0.0 |" in out and "selected (keeps every promise on every seed" in out
    with pytest.raises(ValueError, match="no 'proto' row named 'base'"):
        tos.seed_promises([r for r in grids[0] if r["map"] != "proto"])


@pytest.mark.slow
def test_weak_full_gap_by_class_reads_the_same_table_from_the_saved_artefacts(tiny_pipeline):
    import torch

    from cpmc_lib import report
    from cpmc_lib.store import RunStore

    gap = _load("weak_full_gap")
    cfg, metrics = tiny_pipeline
    text = gap.class_breakdown(cfg, RunStore.for_config(cfg), torch.device("cpu"))
    assert text and text == report.metrics_class_table(metrics)


def test_absent_class_probe_completion_fills_only_attached_unlabelled_pixels():
    import torch

    probe = _load("absent_class_probe")
    label = np.array([[2, 0, 255, 0, 0, 0]])  # class 2 labelled at the left
    absent = torch.tensor([[0.1, 0.9, 0.9, 0.2, 0.9, 0.9]])  # an attached run, then a detached blob
    out = probe.complete(label, absent, present=[2], tau=0.5)
    assert out.tolist() == [[2, 2, 2, 0, 0, 0]]
    assert probe.complete(label, absent, present=[2], tau=0.95).tolist() == label.tolist()


def test_absent_class_probe_ring_prototype_is_the_body_around_the_part():
    import torch

    probe = _load("absent_class_probe")
    label = np.array([[1, 0, 0, 0, 0, 0]])
    per_class = torch.tensor([[[0.1, 0.9, 0.9, 0.2, 0.9, 0.9]], [[0.9] * 6]])  # (K-1, H, W): class 2's is ignored
    assert probe.complete(label, per_class, present=[1], tau=0.5).tolist() == [[1, 1, 1, 0, 0, 0]]

    body, other = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    hie = torch.stack([other] * 2 + [body] * 5 + [other] * 2, 1)[:, None, :]  # (D, 1, 9): a body in the middle
    cam = torch.zeros(1, 2, 1, 9)
    cam[0, 0, 0, 4] = 1.0  # class 1's part, at the body's centre

    class Fake(torch.nn.Module):
        def forward(self, x):
            return {"cam": cam, "hie": hie[None]}

    sims = probe.ring_maps(Fake(), torch.zeros(3, 1, 9), torch.tensor([1.0, 0.0]), (1, 9), part=0.5)
    assert sims[0, 0].tolist() == [0.0] * 2 + [1.0] * 5 + [0.0] * 2  # the ring (cells 3, 5) is body
    assert sims[1].eq(0).all()  # an absent class has no ring
    against = probe.ring_maps(Fake(), torch.zeros(3, 1, 9), torch.tensor([1.0, 0.0]), (1, 9), 0.5, background=0.5)
    # the background prototype: the mean of the 8 cells below 0.5 (4 body, 4 other), at 45 degrees to both
    assert torch.allclose(against[0, 0], sims[0, 0] - 2**-0.5)


def test_tune_assign_reproduces_the_stages_own_row(tiny_pipeline, capsys):
    from conftest import TINY_OVERRIDES

    cfg, metrics = tiny_pipeline
    tune = _load("tune_assign")
    sets = [*TINY_OVERRIDES, f"runs_dir={cfg.runs_dir}", f"data.root={cfg.data.root}"]
    p = cfg.pseudo
    args = ["--limit", "0", "--part-share", str(p.part_share), "--contest-share", str(p.contest_share)]
    tune.main([*args, *(x for s in sets for x in ("--set", s))])
    out = capsys.readouterr().out
    stage = metrics["pseudo"]
    row = f"| parts, part share {p.part_share:g}, contest share {p.contest_share:g} |"
    assert f"{row} {stage['cpmc']['miou']:.1f} | {stage['cpmc_crf']['miou']:.1f} |" in out
    assert "| arg-max |" in out


def test_negatives_gain_compares_each_point_with_the_default_it_reruns(tmp_path):
    gain = _load("negatives_gain")

    def metrics(labels, net, ratio, negatives=None):
        patho = {"fp_context": 10.0, "fp_distractor": 20.0}
        m = {"pseudo": {"cpmc_crf": {"miou": labels, "pathology": patho}},
             "seg": {"wsss": {"miou": net, "pathology": patho}, "ratio": ratio}}  # fmt: skip
        if negatives is not None:
            m["pseudo"]["negatives"] = negatives
        return {"metrics": m}

    records = {
        "negatives": {"seed-1": metrics(82.0, 76.0, 0.84, {"black-disc": 4})},
        "parts/robustness": {"seed-1": metrics(80.0, 74.5, 0.82)},
        "parts/heldout": {},
    }
    (tmp_path / "parts").mkdir()
    for name, points in records.items():
        (tmp_path / f"{name}.json").write_text(json.dumps({"points": points}))
    lines = gain.table(tmp_path).splitlines()
    assert len(lines) == 2 + len(gain.PAIRS)
    seed1 = next(line for line in lines if line.startswith("| seed-1 "))
    assert "black-disc" in seed1 and "80.0 -> 82.0" in seed1 and "74.5 -> 76.0 (+1.5)" in seed1 and "82.0 -> 84.0" in seed1
    assert sum("missing from the records" in line for line in lines) == len(gain.PAIRS) - 1
    # a sweep's previous-default record against its current one, with the CRF ratio where scored
    current = metrics(83.0, 77.0, 0.85, {"black-disc": 4})
    current["metrics"]["seg"]["ratio_crf"] = 0.88
    (tmp_path / "robustness.json").write_text(json.dumps({"points": {"seed-1": current}}))
    lines = gain.table(tmp_path, sweep="robustness").splitlines()
    assert len(lines) == 3 and "74.5 -> 77.0 (+2.5)" in lines[2] and "82.0 -> 85.0 (with CRF 88.0)" in lines[2]
    # the validation sweep's previous-default record is parts/heldout (the sweep's name then)
    (tmp_path / "parts" / "heldout.json").write_text(json.dumps({"points": {"seed-1": metrics(80.0, 74.5, 0.82)}}))
    (tmp_path / "validation.json").write_text(json.dumps({"points": {"seed-1": current}}))
    lines = gain.table(tmp_path, sweep="validation").splitlines()
    assert len(lines) == 3 and "74.5 -> 77.0 (+2.5)" in lines[2]


def test_compare_metrics_finds_every_changed_result_and_ignores_timings():
    compare = _load("compare_metrics")
    a = {"cams": {"cpmc": {"miou": 71.4, "curve": [1.0, 2.0]}}, "seconds": {"total": 5.0}, "x": float("nan")}
    b = {"cams": {"cpmc": {"miou": 71.4, "curve": [1.0, 2.5]}}, "seconds": {"total": 9.0}, "x": float("nan"), "y": 1}
    assert compare.differences(a, a) == [] and len(compare.results(a)) == 4  # miou, two curve points, x
    assert compare.differences(a, b) == [("cams.cpmc.curve.1", 2.0, 2.5), ("y", "<absent>", 1)]


def _metrics(train: int, cpmc: float, curve: list[float], seconds: float) -> dict:
    return {
        "config": {"run": f"r{train}", "synth": {"train": train, "seed": 0}, "data": {"root": f"data/{train}"}},
        "classifier": {"val_mAP": 99.0},
        "cams": {"cpmc": {"miou": cpmc, "gt_free": {"miou": cpmc - 0.2}}},
        "pseudo": {"cpmc_crf": {"miou": 85.0, "ignore_frac": 0.1, "miou_bg": 70.0}},
        "seg": {"full": {"miou": curve[-1], "curve": curve}, "ratio": 0.87},
        "stage_seconds": {"classifier": seconds, "pseudo": 10.0},
    }


def test_workload_record_reads_each_number_before_and_after_and_the_keys_changed():
    workload = _load("workload")
    before = _metrics(2000, 71.4, [88.0, 90.9, 91.1], 250.0)
    after = _metrics(1000, 68.7, [88.7, 88.3, 88.2], 170.0)
    record = workload.workload_record(before, after, book_seconds=880.0)
    assert record["changed"] == {"synth.train": [2000, 1000]}  # run name and data root left out
    rows = {r["path"]: r for r in record["numbers"]}
    assert rows["cams.cpmc.miou"]["change"] == pytest.approx(68.7 - 71.4)
    assert rows["pseudo.cpmc_crf.ignore_frac"]["after"] == pytest.approx(10.0)  # a share, in percent
    assert rows["seg.wsss.miou"]["change"] is None  # absent from both runs: no cost claimed
    assert record["ceiling_moved"]["after"] == pytest.approx(88.2 - 88.7)
    assert record["pipeline_seconds"] == {"before": 260.0, "after": 180.0}
