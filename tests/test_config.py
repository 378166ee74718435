import pytest

from cpmc_lib.config import Config, ConfigError, apply_overrides, load_config, save_config
from cpmc_lib.stages import stage_hash


def test_defaults_round_trip_through_yaml(tmp_path):
    cfg = Config().replace(**{"classifier.epochs": 3, "cams.scales": "1.0,0.5", "run": "x"})
    path = save_config(cfg, tmp_path / "c.yaml")
    back = load_config(path)
    assert back == cfg
    assert back.cams.scales == (1.0, 0.5)
    assert stage_hash(back, "cams") == stage_hash(cfg, "cams")


def test_shipped_configs_load():
    for name in ("default", "quick", "voc", "coco"):
        cfg = load_config(f"configs/{name}.yaml")
        assert cfg.run == name
    assert load_config("configs/voc.yaml").data.num_classes == 21
    assert load_config("configs/coco.yaml").data.num_classes == 81


def test_overrides_are_typed():
    cfg = apply_overrides(
        Config(), ["classifier.epochs=7", "classifier.lr=1e-3", "classifier.pretrained=true"]
    )
    assert cfg.classifier.epochs == 7 and isinstance(cfg.classifier.epochs, int)
    assert cfg.classifier.lr == pytest.approx(1e-3)
    assert cfg.classifier.pretrained is True
    # strings stay strings even when they look like numbers
    assert apply_overrides(Config(), ["classifier.weights=123"]).classifier.weights == "123"


@pytest.mark.parametrize(
    "override, message",
    [
        ("classifier.epoch=3", r"unknown config key 'classifier.epoch'.*epochs"),
        ("clasifier.epochs=3", r"unknown config key 'clasifier.epochs'.*classifier"),
        ("classifier.epochs=three", r"classifier.epochs: expected int"),
        ("classifier.epochs=2.5", r"classifier.epochs: expected int"),
        ("classifier.pretrained=maybe", r"classifier.pretrained: expected bool"),
        ("classifier=3", r"is a section"),
        ("seed.x=1", r"is a value, not a section"),
        ("classifier.epochs", r"key=value"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(Config(), [override])


@pytest.mark.parametrize(
    "override, message",
    [
        ("calibration.detached=fpp", "calibration.detached='fpp' is not one of 'keep', 'drop', 'fp'"),
        ("calibration.pairing=protoo", "calibration.pairing='protoo' is not one of 'classifier', 'proto'"),
        ("prototypes.bg_mode=none", "prototypes.bg_mode='none' is not one of 'drop', 'subtract', 'gate'"),
        ("pseudo.method=cmpc", "pseudo.method='cmpc' is not one of 'cam', .*'cpmc'"),
        ("data.kind=pascal", "data.kind='pascal' is not one of 'synth', 'voc', 'coco'"),
    ],
)
def test_a_bad_choice_fails_at_load_listing_the_valid_values(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("configs/default.yaml", [override])
    section, rest = override.split(".", 1)
    key, value = rest.split("=")
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"{section}:\n  {key}: {value}\n")
    with pytest.raises(ConfigError, match=f"bad.yaml: {message}"):  # in a YAML file too
        load_config(bad)


def test_every_choice_field_is_checked_and_its_choices_load():
    """Each Literal field accepts each of its values (as --set strings: "off" would be False in YAML)."""
    import dataclasses
    import typing

    cfg = Config()
    checked = 0
    for section in dataclasses.fields(cfg):
        sub = getattr(cfg, section.name)
        if not dataclasses.is_dataclass(sub):
            continue
        for name, tp in typing.get_type_hints(type(sub)).items():
            if typing.get_origin(tp) is typing.Literal:
                checked += 1
                for value in typing.get_args(tp):
                    got = apply_overrides(cfg, [f"{section.name}.{name}={value}"])
                    assert getattr(getattr(got, section.name), name) == value
    assert checked >= 10


def test_unknown_yaml_key_names_file_and_valid_keys(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("classifier:\n  epocs: 3\n")
    with pytest.raises(
        ConfigError, match=r"bad.yaml.*'classifier.epocs'.*valid keys in classifier: backbone"
    ):
        load_config(p)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_stage_hash_tracks_upstream_only():
    base = Config()
    crf = base.replace(**{"crf.iterations": 5})
    assert stage_hash(crf, "classifier") == stage_hash(base, "classifier")
    assert stage_hash(crf, "pseudo") != stage_hash(base, "pseudo")
    epochs = base.replace(**{"classifier.epochs": 1})
    assert stage_hash(epochs, "classifier") != stage_hash(base, "classifier")
    assert stage_hash(epochs, "cams") != stage_hash(base, "cams")
    assert stage_hash(base.replace(seed=1), "classifier") != stage_hash(base, "classifier")
    # the run name is where results go, not what they are
    assert stage_hash(base.replace(run="other"), "cams") == stage_hash(base, "cams")
    with pytest.raises(ConfigError, match="unknown stage"):
        stage_hash(base, "nope")


def test_seg_split_keys_only_the_stages_that_read_it():
    """data.seg_split: "" means the cam split and keeps every key; another split changes pseudo on."""
    base = Config()
    assert base.seg_split() == base.data.cam_split == "train"
    same = base.replace(**{"data.seg_split": "train"})
    aug = base.replace(**{"data.seg_split": "train_aug"})
    assert aug.seg_split() == "train_aug"
    for stage in ("classifier", "pretrain", "cams", "pseudo", "segmentation", "segmentation_gt"):
        assert stage_hash(same, stage) == stage_hash(base, stage), stage
    for stage in ("classifier", "cams"):
        assert stage_hash(aug, stage) == stage_hash(base, stage), stage
    for stage in ("pseudo", "segmentation", "segmentation_gt"):
        assert stage_hash(aug, stage) != stage_hash(base, stage), stage


def test_the_data_root_is_the_one_the_config_names(monkeypatch, capsys):
    """No environment variable overrides data.root: what `config` prints is what the loaders read."""
    from cpmc_lib.cli import main

    monkeypatch.setenv("CPMC_DATA", "/elsewhere/VOC2012")  # the variable of old versions: ignored
    assert str(Config().data_root()) == Config().data.root
    assert main(["config", "--config", "configs/default.yaml", "--data", "/data/a"]) == 0
    assert "root: /data/a" in capsys.readouterr().out
    assert str(load_config("configs/default.yaml", ["data.root=/data/a"]).data_root()) == "/data/a"


def test_choice_fields_list_their_values():
    from cpmc_lib.config import ConfigError, load_config

    cfg = load_config("configs/default.yaml", ["calibration.gate=attached", "pseudo.threshold_rule=fixed"])
    assert cfg.calibration.gate == "attached" and cfg.pseudo.threshold_rule == "fixed"
    with pytest.raises(ConfigError, match="pseudo.threshold_rule='best' is not one of 'fixed', 'otsu', 'oracle'"):
        load_config("configs/default.yaml", ["pseudo.threshold_rule=best"])


def test_the_library_default_is_the_books_default():
    """One default: configs/default.yaml resolves to Config() (the YAML only names the run)."""
    from cpmc_lib.config import Config, load_config

    assert load_config("configs/default.yaml") == Config()
    assert Config().pseudo.negatives and Config().segmentation.test_crf


@pytest.mark.parametrize(
    "override, message",
    [
        ("classifier.epochs=0", "classifier.epochs=0 must be at least 1"),
        ("segmentation.epochs=-2", "segmentation.epochs=-2 must be at least 1"),
        ("classifier.lr=0", "classifier.lr=0.0 must be > 0"),
        ("segmentation.lr=-0.1", "segmentation.lr=-0.1 must be > 0"),
        ("classifier.crop_size=0", "classifier.crop_size=0 must be at least 16 pixels"),
        ("segmentation.crop_size=8", "segmentation.crop_size=8 must be at least 16 pixels"),
        ("segmentation.batch_size=1", "segmentation.batch_size=1 must be at least 2"),
        ("pseudo.band=[0.5, 0.9]", r"pseudo.band=\(0.5, 0.9\) must satisfy"),
        ("cams.scales=[]", "cams.scales=.* must be one or more factors"),
    ],
)
def test_values_out_of_range_fail_at_load_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("configs/default.yaml", [override])


@pytest.mark.parametrize("name", ["../x", "../../x", "a/b", ".hidden", "", "x/.."])
def test_a_run_name_is_one_folder_under_runs_dir(name):
    with pytest.raises(ConfigError, match="a run name is one folder name under runs_dir"):
        load_config("configs/default.yaml", [f"run={name}"])


def test_cli_run_outside_runs_is_an_error(capsys):
    from cpmc_lib.cli import main

    assert main(["train", "--config", "configs/default.yaml", "--run", "../x", "--quiet"]) == 2
    assert "a run name is one folder name" in capsys.readouterr().err


def test_a_yaml_list_for_a_single_value_is_an_error(tmp_path):
    (tmp_path / "c.yaml").write_text("data:\n  root: [a, b]\n")
    with pytest.raises(ConfigError, match=r"c.yaml: data.root: expected str, got \['a', 'b'\]"):
        load_config(tmp_path / "c.yaml")
