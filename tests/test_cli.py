import subprocess
import sys

from cpmc_lib.cli import main


def test_help_lists_commands():
    from cpmc_lib.stages import STAGES

    out = subprocess.run([sys.executable, "-m", "cpmc_lib", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for cmd in ("synth", "config", "pipeline", "sweep", "stages", *(s.command for s in STAGES.values())):
        assert cmd in out.stdout
    for s in STAGES.values():  # each stage command with the table's help line
        assert s.help[:40] in " ".join(out.stdout.split())


def test_stages_prints_the_stage_table(capsys):
    assert main(["stages", "--config", "configs/default.yaml"]) == 0
    out = capsys.readouterr().out
    assert "| segmentation_gt | segmentation | pretrain |" in out and "`python -m cpmc_lib ceiling`" in out


def test_config_error_exit_code_and_message(capsys):
    assert main(["config", "--set", "classifier.epoch=1"]) == 2
    assert "valid keys in classifier" in capsys.readouterr().err


def test_config_prints_resolved_overrides(capsys):
    assert (
        main(["config", "--config", "configs/default.yaml", "--set", "classifier.epochs=4", "--run", "r1"])
        == 0
    )
    out = capsys.readouterr().out
    assert "run: r1" in out and "epochs: 4" in out


def test_run_folder_that_cannot_be_created(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["train", "--set", f"runs_dir={tmp_path / 'file' / 'runs'}", "--run", "r1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot create the run folder {tmp_path / 'file' / 'runs' / 'r1'}")
    assert "--set runs_dir=DIR" in err and "--run NAME" in err and "Traceback" not in err


def test_under_torchrun_a_batch_that_does_not_split_is_found_before_anything_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "3")  # as torchrun --nproc_per_node 3 sets it
    args = ["train", "--config", "configs/default.yaml", "--set", f"runs_dir={tmp_path / 'runs'}", "--quiet"]
    assert main(args) == 2
    assert "pretrain.batch_size=32 is the global batch and must be divisible by the 3 processes" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # no stage began


def test_a_damaged_model_file_is_an_error_naming_it(tmp_path, capsys):
    from cpmc_lib.models import build_model

    cfg_sets = ["--set", f"runs_dir={tmp_path}", "--set", "pretrain.enabled=false", "--set", "device=cpu"]
    from cpmc_lib.config import load_config
    from cpmc_lib.io import save_torch
    from cpmc_lib.stages import stage_hash
    from cpmc_lib.store import RunStore

    cfg = load_config("configs/default.yaml", ["pretrain.enabled=false", f"runs_dir={tmp_path}", "device=cpu"])
    store = RunStore.for_config(cfg)
    with store.stage("classifier", cfg) as st:  # a finished classifier stage ...
        save_torch(st.path / "model.pt", build_model(cfg, pretrained=False).state_dict())
    path = store.path("classifier") / "model.pt"
    path.write_bytes(path.read_bytes()[:100])  # ... whose model file was cut short
    assert store.is_done("classifier", stage_hash(cfg, "classifier"))
    assert main(["cams", "--config", "configs/default.yaml", "--quiet", *cfg_sets]) == 2
    err = capsys.readouterr().err
    assert f"{path}: cannot read it as weights" in err and "Delete it and rerun the stage that makes it" in err
