"""Tests of cpmc_lib.mapfile: the saved-map format round-trips, executes nothing, and names bad files."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from cpmc_lib.mapfile import load_map, map_path, save_map


def test_round_trip_keeps_keys_and_float16_maps(tmp_path):
    cam = np.random.default_rng(0).random((2, 5, 7)).astype(np.float32)
    save_map(tmp_path / "cpmc", "img_1", np.array([3, 9]), cam)
    saved = load_map(tmp_path / "cpmc", "img_1")
    assert saved.keys.tolist() == [3, 9] and saved.keys.dtype == np.int64
    assert saved.cam.dtype == np.float16 and np.array_equal(saved.cam, cam.astype(np.float16))
    save_map(tmp_path, "none", np.zeros(0), np.zeros((0, 5, 7)))  # an image without a class
    assert load_map(tmp_path, "none").cam.shape == (0, 5, 7)


def test_maps_must_match_their_class_ids(tmp_path):
    with pytest.raises(ValueError, match=r"img\.npz: maps \(3, 4, 4\) do not match the 2 class ids"):
        save_map(tmp_path, "img", np.array([1, 2]), np.zeros((3, 4, 4)))


def test_missing_file_names_the_method_and_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"maps of 'proto' for image 'x' .*cams --method proto"):
        load_map(tmp_path / "proto", "x")


def test_a_pickle_is_refused_not_executed(tmp_path):
    class Boom:
        def __reduce__(self):
            return (RuntimeError, ("a pickle ran",))

    with open(map_path(tmp_path, "bad"), "wb") as f:  # an object array: loading it would unpickle
        np.savez(f, keys=np.array([1]), cam=np.array([Boom()], dtype=object))
    with pytest.raises(ValueError, match=r"bad\.npz is not a readable map file"):
        load_map(tmp_path, "bad")
    map_path(tmp_path, "old").write_bytes(pickle.dumps({"keys": [1]}))  # not even an npz
    with pytest.raises(ValueError, match="delete it and make the maps again"):
        load_map(tmp_path, "old")
