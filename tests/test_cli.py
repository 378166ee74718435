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
