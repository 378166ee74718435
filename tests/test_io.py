import errno
import os

import numpy as np
import pytest
from PIL import Image

from cpmc_lib.io import atomic_write, load_json, read_mask_png, save_json, save_mask_png, voc_palette


def test_atomic_write_interrupted_keeps_old_artifact(tmp_path):
    path = tmp_path / "metrics.json"
    save_json(path, {"miou": 1.0})
    with pytest.raises(RuntimeError):
        with atomic_write(path, "w") as f:
            f.write('{"miou": 2')  # half written ...
            raise RuntimeError("killed")  # ... when the run dies
    assert load_json(path) == {"miou": 1.0}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temp file left behind


def test_atomic_write_interrupted_leaves_nothing_when_new(tmp_path):
    path = tmp_path / "sub" / "new.bin"
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(path) as f:
            f.write(b"abc")
            raise KeyboardInterrupt
    assert not path.exists()
    assert list(path.parent.iterdir()) == []


def test_voc_palette_known_entries():
    pal = voc_palette()
    assert pal.shape == (256, 3)
    assert tuple(pal[0]) == (0, 0, 0)
    assert tuple(pal[1]) == (128, 0, 0)  # aeroplane
    assert tuple(pal[15]) == (192, 128, 128)  # person
    assert tuple(pal[255]) == (224, 224, 192)  # ignore / border


def test_mask_png_round_trip_and_rgb_error(tmp_path):
    mask = np.array([[0, 1, 2], [255, 20, 0]], dtype=np.uint8)
    path = save_mask_png(tmp_path / "m.png", mask)
    assert Image.open(path).mode == "P"
    np.testing.assert_array_equal(read_mask_png(path), mask)
    Image.new("RGB", (3, 2)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match=r"rgb.png.*palette"):
        read_mask_png(tmp_path / "rgb.png")


def _disk_full(*_args):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_names_the_file_keeps_the_old_version_and_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    save_json(path, {"miou": 1.0})
    monkeypatch.setattr(os, "fsync", _disk_full)  # the disk fills while the new version is written
    with pytest.raises(OSError) as err:
        save_json(path, {"miou": 2.0})
    assert err.value.errno == errno.ENOSPC
    assert str(path) in str(err.value) and "No space left on device" in str(err.value)
    monkeypatch.undo()
    assert load_json(path) == {"miou": 1.0}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_disk_full_on_a_new_file_leaves_nothing(tmp_path, monkeypatch):
    path = tmp_path / "masks" / "a.png"
    monkeypatch.setattr(os, "fsync", _disk_full)
    with pytest.raises(OSError, match=f"while writing {path}"):
        save_mask_png(path, np.zeros((4, 4), np.uint8))
    assert list(path.parent.iterdir()) == []


def test_other_os_errors_keep_their_type(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match=f"while writing {tmp_path / 'file' / 'sub' / 'a.json'}"):
        save_json(tmp_path / "file" / "sub" / "a.json", {})  # the parent is a file


def test_cli_disk_full_is_an_error_line(tmp_path, monkeypatch, capsys):
    from cpmc_lib.cli import main

    monkeypatch.setattr(os, "fsync", _disk_full)
    assert (
        main(["synth", "--out", str(tmp_path / "d"), "--train", "1", "--val", "0", "--size", "32", "--quiet"])
        == 2
    )
    err = capsys.readouterr().err
    assert (
        err.startswith("error: [Errno 28] No space left on device, while writing ") and "Traceback" not in err
    )


# --- loading torch files safely ------------------------------------------------------------------


def test_load_torch_refuses_what_is_not_a_state_dict_or_would_run_code(tmp_path):
    import pickle

    import torch

    from cpmc_lib.io import load_torch

    torch.save({"w": torch.ones(2)}, tmp_path / "ok.pt")
    assert torch.equal(load_torch(tmp_path / "ok.pt", "weights")["w"], torch.ones(2))
    torch.save([torch.ones(2)], tmp_path / "list.pt")
    with pytest.raises(ValueError, match=r"list\.pt: weights must be a dict of tensors .*got list"):
        load_torch(tmp_path / "list.pt", "weights")

    class Boom:
        def __reduce__(self):
            return (print, ("a pickle ran",))

    torch.save({"w": Boom()}, tmp_path / "code.pt")
    with pytest.raises(ValueError, match=r"code\.pt: cannot read it as weights .*Delete it"):
        load_torch(tmp_path / "code.pt", "weights")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "ok.pt").read_bytes()[:50])  # a damaged file
    with pytest.raises(ValueError, match=r"cut\.pt: cannot read it as weights .*damaged"):
        load_torch(tmp_path / "cut.pt", "weights")
    (tmp_path / "text.pt").write_bytes(pickle.dumps({"w": 1}))  # a plain pickle, not torch's format
    with pytest.raises(ValueError, match=r"text\.pt: cannot read it"):
        load_torch(tmp_path / "text.pt", "weights")


def test_a_checkpoint_that_is_not_one_of_fit_is_refused(tmp_path):
    import torch

    from cpmc_lib.engine import load_checkpoint

    torch.save({"conv.weight": torch.ones(1)}, tmp_path / "checkpoint.pt")  # a state dict, not a checkpoint
    with pytest.raises(ValueError, match=r"checkpoint\.pt: not a training checkpoint .*delete it"):
        load_checkpoint(tmp_path / "checkpoint.pt")
