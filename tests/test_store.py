import os

import pytest

from cpmc_lib.config import Config
from cpmc_lib.io import load_json, save_json
from cpmc_lib.stages import stage_hash
from cpmc_lib.store import RunDirError, RunStore


def _run_stage(store, cfg, calls):
    with store.stage("classifier", cfg, device="cpu") as st:
        if not st.done:
            calls.append(cfg.classifier.epochs)
            save_json(st.path / "weights.json", {"epochs": cfg.classifier.epochs})
            st.result = {"acc": 0.5}
    return st


def test_stage_reused_for_same_config_and_recomputed_on_change(tmp_path):
    store, calls = RunStore(tmp_path / "run"), []
    cfg = Config()
    st = _run_stage(store, cfg, calls)
    m = st.manifest
    assert m["status"] == "complete" and m["config_hash"] == stage_hash(cfg, "classifier")
    assert m["config"]["classifier"]["epochs"] == cfg.classifier.epochs
    for key in ("seed", "git_commit", "packages", "device", "started", "finished"):
        assert key in m
    st = _run_stage(store, cfg, calls)
    assert st.done and st.result == {"acc": 0.5} and len(calls) == 1
    # a downstream-only change does not invalidate this stage
    _run_stage(store, cfg.replace(**{"crf.iterations": 3}), calls)
    assert len(calls) == 1
    changed = cfg.replace(**{"classifier.epochs": 1})
    _run_stage(store, changed, calls)
    assert calls == [cfg.classifier.epochs, 1]
    assert load_json(store.path("classifier") / "weights.json") == {"epochs": 1}


def test_crashed_stage_is_redone_and_keeps_checkpoint(tmp_path):
    store, cfg = RunStore(tmp_path / "run"), Config()
    try:
        with store.stage("classifier", cfg) as st:
            save_json(st.path / "checkpoint.pt", {"epoch": 3})
            save_json(st.path / "partial.json", {})
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert not store.is_done("classifier", stage_hash(cfg, "classifier"))
    with store.stage("classifier", cfg, keep=("checkpoint.pt",)) as st:
        assert not st.done
        assert (st.path / "checkpoint.pt").exists()  # resume point survives the crash
        assert not (st.path / "partial.json").exists()  # half-made outputs do not
    # a different config must not resume from another config's checkpoint
    with store.stage("classifier", cfg.replace(**{"classifier.lr": 0.5}), keep=("checkpoint.pt",)) as st:
        assert not (st.path / "checkpoint.pt").exists()


def test_sibling_run_with_same_config_is_linked_not_recomputed(tmp_path):
    calls = []
    cfg = Config()
    _run_stage(RunStore(tmp_path / "a"), cfg, calls)
    st = _run_stage(RunStore(tmp_path / "b"), cfg.replace(run="b"), calls)
    assert calls == [cfg.classifier.epochs]  # computed once, for run a
    assert st.done and load_json(st.path / "weights.json") == {"epochs": cfg.classifier.epochs}
    assert (tmp_path / "b" / "classifier" / "weights.json").stat().st_ino == (
        tmp_path / "a" / "classifier" / "weights.json"
    ).stat().st_ino  # hard link, no copy
    _run_stage(RunStore(tmp_path / "c", share=False), cfg, calls)
    assert len(calls) == 2  # sharing off: computed again


def test_run_folder_under_a_file_names_the_folder_and_the_settings(tmp_path):
    (tmp_path / "notes.txt").write_text("mine\n")
    store = RunStore(tmp_path / "notes.txt" / "runs" / "default")
    with pytest.raises(RunDirError) as err:
        _run_stage(store, Config(), [])
    msg = str(err.value)
    assert str(store.root) in msg and "runs_dir" in msg and "--set runs_dir=" in msg and "--run NAME" in msg
    assert (tmp_path / "notes.txt").read_text() == "mine\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_run_folder_in_a_read_only_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(RunDirError, match="Permission denied.*--set runs_dir="):
            _run_stage(RunStore(locked / "runs" / "default"), Config(), [])
    finally:
        locked.chmod(0o755)
