import pytest

from segan.cli import build_parser, TRAIN_FLAGS
from segan.config import Config, merge


def test_yaml_round_trip(tmp_path):
    config = merge(Config(), {"data": {"classes": ["bg", "a", "b"], "size": 96}, "loss": {"adv_weight": 0.2}})
    config.save(tmp_path / "c.yaml")
    assert Config.load(tmp_path / "c.yaml") == config
    assert config.data.num_classes == 3 and not config.data.binary


def test_unknown_keys_are_named(tmp_path):
    with pytest.raises(KeyError, match="sizee"):
        merge(Config(), {"data": {"sizee": 3}})
    with pytest.raises(KeyError, match="optimiser"):
        merge(Config(), {"optimiser": {}})
    (tmp_path / "bad.yaml").write_text("data:\n  rezise: crop\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*rezise"):
        Config.load(tmp_path / "bad.yaml")


def test_every_train_flag_maps_to_a_real_setting():
    defaults = Config()
    for flag, (section, key) in TRAIN_FLAGS.items():
        assert hasattr(getattr(defaults, section), key), flag


def test_flags_override_the_config_file(tmp_path, monkeypatch):
    (tmp_path / "c.yaml").write_text("train:\n  epochs: 7\n  lr: 0.01\nloss:\n  adv_weight: 0.5\n")
    captured = {}
    import segan.training
    monkeypatch.setattr(segan.training, "train", lambda config, resume=False: captured.setdefault("c", config) and
                        (_ for _ in ()).throw(SystemExit(0)))
    args = build_parser().parse_args(["train", "--config", str(tmp_path / "c.yaml"), "--data", "d", "--epochs", "3",
                                      "--adv-weight", "0", "--encoder-weights", "none"])
    with pytest.raises(SystemExit):
        args.handler(args)
    config = captured["c"]
    assert config.train.epochs == 3          # flag beats file
    assert config.train.lr == 0.01           # file beats default
    assert config.loss.adv_weight == 0.0
    assert config.generator.encoder_weights is None
    assert config.data.root == "d"


def test_help_lists_defaults(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    text = capsys.readouterr().out
    for flag in ("--epochs", "--encoder", "--size", "--batch-size", "--lr", "--adv-weight", "--resume", "--seed"):
        assert flag in text
    assert "(0.01)" in text  # the default adversarial weight is shown
