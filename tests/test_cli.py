import subprocess
import sys

from cpmc_lib.cli import main


def test_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "cpmc_lib", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for cmd in ("synth", "train", "cams", "config"):
        assert cmd in out.stdout


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
