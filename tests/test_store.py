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


# --- nothing is deleted before its replacement exists ---------------------------------------------


def test_a_failed_run_after_a_config_change_leaves_the_finished_stage(tmp_path):
    store, calls, cfg = RunStore(tmp_path / "run"), [], Config()
    _run_stage(store, cfg, calls)
    save_json(store.root / "metrics.json", {"classifier": {"epochs": cfg.classifier.epochs}})
    changed = cfg.replace(**{"classifier.epochs": 1})
    with pytest.raises(KeyboardInterrupt), store.stage("classifier", changed) as st:
        assert st.path == store.partial("classifier") and not st.done
        save_json(st.path / "weights.json", {"epochs": 1})
        raise KeyboardInterrupt  # killed half way
    # the finished stage is still there, whole, and still the one metrics.json describes
    assert store.is_done("classifier", stage_hash(cfg, "classifier"))
    assert load_json(store.path("classifier") / "weights.json") == {"epochs": cfg.classifier.epochs}
    assert load_json(store.root / "metrics.json")["classifier"]["epochs"] == cfg.classifier.epochs
    assert not store.is_done("classifier", stage_hash(changed, "classifier"))
    # the rerun replaces it only once it has finished
    st = _run_stage(store, changed, calls)
    assert st.done is False and load_json(store.path("classifier") / "weights.json") == {"epochs": 1}
    assert not store.partial("classifier").exists() and st.manifest["result"] == {"acc": 0.5}


def test_a_replacement_interrupted_between_its_renames_is_undone(tmp_path):
    store, calls, cfg = RunStore(tmp_path / "run"), [], Config()
    _run_stage(store, cfg, calls)
    store.path("classifier").rename(store.root / ".classifier.old")  # the crash: old moved away, new not in
    assert not store.is_done("classifier", stage_hash(cfg, "classifier"))
    _run_stage(store, cfg, calls)  # opening the stage puts the finished one back and reuses it
    assert calls == [cfg.classifier.epochs] and store.is_done("classifier", stage_hash(cfg, "classifier"))


def test_the_store_writes_only_into_its_own_run_folders(tmp_path):
    mine = tmp_path / "runs" / "notes"
    mine.mkdir(parents=True)
    (mine / "thesis.tex").write_text("months of work\n")
    with pytest.raises(RunDirError, match=r"notes exists and was not made by cpmc_lib .*thesis.tex.*--run NAME"):
        _run_stage(RunStore(mine), Config(), [])
    assert (mine / "thesis.tex").read_text() == "months of work\n" and sorted(p.name for p in mine.iterdir()) == ["thesis.tex"]
    # a run folder of an older version (stage folders with manifests, no marker) is adopted
    old, calls = tmp_path / "runs" / "old", []
    _run_stage(RunStore(old), Config(), calls)
    (old / ".cpmc-run").unlink()
    _run_stage(RunStore(old), Config(), calls)
    assert calls == [Config().classifier.epochs] and (old / ".cpmc-run").is_file()


# --- one writer at a time -------------------------------------------------------------------------


def _writer(root: str, log: str, tag: str, release: str) -> None:
    """A process that opens the classifier stage of ``root`` and 'trains' until ``release`` exists."""
    import sys
    import time
    from pathlib import Path

    sys.stderr = open(f"{log}.{tag}.err", "w", buffering=1)  # what the process says while it waits
    store = RunStore(root)
    with store.stage("classifier", Config()) as st:
        if not st.done:
            with open(log, "a") as f:
                f.write(f"{tag} start\n")
            deadline = time.monotonic() + 60
            while not Path(release).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            save_json(st.path / "weights.json", {"by": tag})
            st.result = {"by": tag}
            with open(log, "a") as f:
                f.write(f"{tag} end\n")


def _wait_for(path, text: str, seconds: float = 60) -> None:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} never said {text!r}")


def test_two_writers_on_one_run_never_interleave(tmp_path):
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    log, release = tmp_path / "log.txt", tmp_path / "release"
    args = lambda tag: (str(tmp_path / "run"), str(log), tag, str(release))  # noqa: E731
    first = ctx.Process(target=_writer, args=args("a"))
    first.start()
    _wait_for(log, "a start")  # a holds the run's lock and is half way through the stage
    second = ctx.Process(target=_writer, args=args("b"))
    second.start()
    _wait_for(tmp_path / "log.txt.b.err", "is being written by process")  # b waits, naming the holder
    release.touch()
    for p in (first, second):
        p.join(60)
    assert [first.exitcode, second.exitcode] == [0, 0]
    assert log.read_text().split("\n")[:2] == ["a start", "a end"]  # b never began: it found the stage done
    assert "b start" not in log.read_text() and RunStore(tmp_path / "run").result("classifier") == {"by": "a"}
