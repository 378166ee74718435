import pytest

from cpmc_lib.config import Config, ConfigError, apply_overrides, load_config, save_config


def test_defaults_round_trip_through_yaml(tmp_path):
    cfg = Config().replace(**{"classifier.epochs": 3, "cams.scales": "1.0,0.5", "run": "x"})
    path = save_config(cfg, tmp_path / "c.yaml")
    back = load_config(path)
    assert back == cfg
    assert back.cams.scales == (1.0, 0.5)
    assert back.stage_hash("cams") == cfg.stage_hash("cams")


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
    assert crf.stage_hash("classifier") == base.stage_hash("classifier")
    assert crf.stage_hash("pseudo") != base.stage_hash("pseudo")
    epochs = base.replace(**{"classifier.epochs": 1})
    assert epochs.stage_hash("classifier") != base.stage_hash("classifier")
    assert epochs.stage_hash("cams") != base.stage_hash("cams")
    assert base.replace(seed=1).stage_hash("classifier") != base.stage_hash("classifier")
    # the run name is where results go, not what they are
    assert base.replace(run="other").stage_hash("cams") == base.stage_hash("cams")
    with pytest.raises(ConfigError, match="unknown stage"):
        base.stage_hash("nope")


def test_data_root_env_override(monkeypatch):
    cfg = Config()
    monkeypatch.delenv("CPMC_DATA", raising=False)
    assert str(cfg.data_root()) == cfg.data.root
    monkeypatch.setenv("CPMC_DATA", "/elsewhere/VOC2012")
    assert str(cfg.data_root()) == "/elsewhere/VOC2012"


def test_choice_fields_list_their_values():
    from cpmc_lib.config import ConfigError, load_config

    cfg = load_config("configs/default.yaml", ["calibration.gate=attached", "pseudo.threshold_rule=fixed"])
    assert cfg.calibration.gate == "attached" and cfg.pseudo.threshold_rule == "fixed"
    with pytest.raises(ConfigError, match="pseudo.threshold_rule: 'best' is not one of fixed, otsu, oracle"):
        load_config("configs/default.yaml", ["pseudo.threshold_rule=best"])
