import argparse
import dataclasses

import pytest

from segan import config as segan_config
from segan.cli import DATA_FLAGS, TRAIN_FLAGS, build_parser
from segan.config import Config, ConfigError, DataConfig, merge, validate

# `Config().save()` output of the release before the schema (no allow_unknown_values, no
# checkpoint_every_n_steps): run folders written by it must keep loading.
CONFIG_YAML_BEFORE_THE_SCHEMA = """\
data:
  root: ''
  train_split: train
  val_split: null
  val_fraction: 0.2
  split_seed: 0
  image_dir: null
  mask_dir: null
  roi_dir: null
  image_name: '{id}'
  mask_name: '{id}'
  roi_name: '{id}'
  pairs_file: null
  strip_prefix: null
  classes:
  - background
  - foreground
  ignore_index: 255
  threshold: 127
  invert: false
  value_map: null
  colors: null
  ignore_color: null
  in_channels: 3
  size: 256
  resize: resize
  augment: light
  rotations: true
  mean: null
  std: null
  num_workers: 2
generator:
  arch: unet
  encoder_name: resnet18
  encoder_depth: 5
  encoder_weights: null
discriminator:
  base_channels: 16
  n_layers: 3
  spectral_norm: true
  input_guard: smooth
  guard_strength: 0.1
loss:
  dice_weight: 1.0
  ce_weight: 1.0
  adv_mode: vanilla
  adv_weight: 0.01
  adv_warmup_epochs: 2
train:
  epochs: 20
  batch_size: 8
  lr: 0.001
  d_lr: 0.0002
  weight_decay: 0.0
  seed: 0
  accelerator: auto
  devices: 1
  precision: 32-true
  out: weights/run
"""
DATA_KEYS = ", ".join(f.name for f in dataclasses.fields(DataConfig))
TRAIN_KEYS = ("epochs, time_budget, batch_size, lr, d_lr, weight_decay, ema_decay, seed, accelerator, devices, "
              "precision, "
              "checkpoint_every_n_steps, min_epoch_steps, validate_every, compile, progress_png, out")


def problems(values) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        Config.from_dict(values)
    return caught.value.problems


def test_yaml_round_trip(tmp_path):
    config = merge(Config(), {"data": {"classes": ["bg", "a", "b"], "size": 96}, "loss": {"adv_weight": 0.2}})
    config.save(tmp_path / "c.yaml")
    assert Config.load(tmp_path / "c.yaml") == config
    assert config.data.num_classes == 3 and not config.data.binary


def test_a_config_written_before_the_schema_still_loads(tmp_path):
    (tmp_path / "config.yaml").write_text(CONFIG_YAML_BEFORE_THE_SCHEMA)
    config = Config.load(tmp_path / "config.yaml")
    # it says 32-true, so a run written before `auto` existed keeps training (and resuming) in float32
    assert config == merge(Config(), {"train": {"precision": "32-true"}})
    assert config.data.allow_unknown_values is False and config.train.checkpoint_every_n_steps is None


def test_every_problem_is_listed_in_one_error(tmp_path):
    (tmp_path / "c.yaml").write_text("train:\n  epochs: ten\n  epoch: 3\ngenerator:\n  encodr_name: x\n")
    with pytest.raises(ConfigError) as caught:
        Config.load(tmp_path / "c.yaml")
    assert caught.value.problems == [
        "generator.encodr_name: unknown setting (did you mean 'encoder_name'?); "
        "known: arch, encoder_name, encoder_depth, encoder_weights, decoder_width",
        "train.epochs: expected an integer >= 1, got 'ten'",
        f"train.epoch: unknown setting (did you mean 'epochs'?); known: {TRAIN_KEYS}",
    ]
    assert str(caught.value) == f"invalid config in {tmp_path / 'c.yaml'}:\n  " + "\n  ".join(caught.value.problems)
    assert isinstance(caught.value, ValueError)


def test_unknown_sections_and_keys_are_named(tmp_path):
    assert problems({"data": {"sizee": 3}}) == [
        f"data.sizee: unknown setting (did you mean 'size'?); known: {DATA_KEYS}"]
    assert problems({"optimiser": {}}) == [
        "optimiser: unknown section; known: data, generator, discriminator, loss, semi, train"]
    assert problems({"trian": {"epochs": 3}}) == [
        "trian: unknown section (did you mean 'train'?); known: data, generator, discriminator, loss, semi, train"]
    assert problems({"loss": 5}) == ["loss: expected a mapping of settings, got 5"]
    assert problems([1, 2]) == ["expected a mapping of sections (data, generator, discriminator, loss, semi, train), "
                                "got [1, 2]"]


@pytest.mark.parametrize("values, problem", [
    ({"data": {"size": 100}}, "data.size: expected a multiple of the network stride 32, got 100; use 96"),
    ({"data": {"size": 16}}, "data.size: expected a multiple of the network stride 32, got 16; use 32"),
    ({"generator": {"decoder_width": 100}},
     "generator.decoder_width: expected an integer >= 16 and a multiple of 16, got 100; use 96"),
    ({"data": {"classes": ["only"]}},
     "data.classes: expected a list of at least 2 different class names, background first, got ['only']"),
    ({"data": {"classes": ["a", "a"]}},
     "data.classes: expected a list of at least 2 different class names, background first, got ['a', 'a']"),
    ({"data": {"ignore_index": 1}},
     "data.ignore_index: 1 is also class 'foreground'; use a value of 2 or more (255 is usual)"),
    ({"data": {"in_channels": 2}}, "data.in_channels: expected one of 1, 3, got 2"),
    ({"data": {"in_channels": 1, "mean": [0.5, 0.5, 0.5]}},
     "data.mean: expected 1 value(s), one per input channel (data.in_channels is 1), got [0.5, 0.5, 0.5]"),
    ({"data": {"std": [0.2, 0.0, 0.2]}}, "data.std: expected a list of numbers > 0 or null, got [0.2, 0.0, 0.2]"),
    ({"data": {"val_fraction": 1}}, "data.val_fraction: expected a number > 0 and < 1, got 1"),
    ({"data": {"threshold": 255}}, "data.threshold: expected an integer from 0 to 254, got 255"),
    ({"data": {"augment": "extreme"}},
     "data.augment: expected one of 'none', 'light', 'medium', 'heavy', got 'extreme'"),
    ({"data": {"resize": "Crop"}}, "data.resize: expected one of 'resize', 'crop', got 'Crop'"),
    ({"data": {"ignore_color": [0, 0]}},
     "data.ignore_color: expected an [R, G, B] colour of three integers from 0 to 255 or null, got [0, 0]"),
    ({"data": {"colors": [[0, 0, 0], [0, 0, 256]]}},
     "data.colors: expected a list of [R, G, B] colours of three integers from 0 to 255, or null, "
     "got [[0, 0, 0], [0, 0, 256]]"),
    ({"data": {"value_map": {"one": 1}}},
     "data.value_map: expected a mapping of integers to integers or null, got {'one': 1}"),
    ({"data": {"invert": "sometimes"}}, "data.invert: expected true or false, got 'sometimes'"),
    ({"generator": {"encoder_depth": 6}}, "generator.encoder_depth: expected an integer from 3 to 5, got 6"),
    ({"discriminator": {"input_guard": "blur"}},
     "discriminator.input_guard: expected one of 'none', 'smooth', 'noise', got 'blur'"),
    ({"loss": {"adv_mode": "wgan"}}, "loss.adv_mode: expected one of 'vanilla', 'lsgan', 'hinge', got 'wgan'"),
    ({"loss": {"adv_weight": -0.1}}, "loss.adv_weight: expected a number >= 0, got -0.1"),
    ({"train": {"lr": 0}}, "train.lr: expected a number > 0, got 0"),
    ({"train": {"d_lr": ".nan"}}, "train.d_lr: expected a number > 0, got '.nan'"),
    ({"train": {"batch_size": 2.5}}, "train.batch_size: expected an integer >= 1, got 2.5"),
    ({"train": {"precision": 16}},
     "train.precision: expected one of 'auto', '32-true', '16-mixed', 'bf16-mixed', '16-true', 'bf16-true', '64-true', "
     "got 16"),
    ({"train": {"devices": [0, "a"]}},
     "train.devices: expected a device count, a list of device indices, or 'auto', got [0, 'a']"),
    ({"train": {"checkpoint_every_n_steps": 0}},
     "train.checkpoint_every_n_steps: expected an integer >= 1 or null, got 0"),
])
def test_each_rule_names_the_setting_the_value_and_what_is_allowed(values, problem):
    assert problems(values) == [problem]


def test_type_errors_and_rules_between_settings_are_reported_together():
    assert problems({"data": {"size": 100, "ignore_index": 0, "in_channels": 1, "std": [0.2, 0.2]}}) == [
        "data.size: expected a multiple of the network stride 32, got 100; use 96",
        "data.ignore_index: 0 is also class 'background'; use a value of 2 or more (255 is usual)",
        "data.std: expected 1 value(s), one per input channel (data.in_channels is 1), got [0.2, 0.2]",
    ]
    # A rule between settings is left out where one of them is wrong by itself: one line per mistake.
    assert problems({"data": {"classes": ["only"], "ignore_index": 0, "in_channels": 2, "std": [0.2]}}) == [
        "data.classes: expected a list of at least 2 different class names, background first, got ['only']",
        "data.in_channels: expected one of 1, 3, got 2",
    ]


def test_values_given_as_text_or_numbers_are_converted():
    # YAML 1.1 reads 1e-3 as a string; the command line gives text; numbers name splits.
    config = Config.from_dict({"train": {"lr": "1e-3", "devices": "2", "epochs": 3.0},
                               "data": {"train_split": 2012, "value_map": {"1": 0}}, "loss": None})
    assert (config.train.lr, config.train.devices, config.train.epochs) == (0.001, 2, 3)
    assert (config.data.train_split, config.data.value_map) == ("2012", {1: 0})
    assert config.loss == Config().loss  # an empty section changes nothing
    assert Config.from_dict({"train": {"devices": "0,1"}}).train.devices == "0,1"
    assert Config.from_dict({"train": {"devices": [0, 1]}}).train.devices == [0, 1]
    assert Config.from_dict({"train": {"devices": "auto"}}).train.devices == "auto"


def test_merge_checks_the_base_config_too():
    config = Config()
    config.train.epochs = 0  # code may change a config after it was built
    with pytest.raises(ConfigError) as caught:
        merge(config, {"train": {"lr": 0.1}})
    assert caught.value.problems == ["train.epochs: expected an integer >= 1, got 0"]


def test_validate_needs_a_dataset_and_rechecks_the_schema():
    config = Config()
    config.data.size = 100
    with pytest.raises(ConfigError) as caught:
        validate(config)
    assert str(caught.value) == ("the config cannot work:\n"
                                 "  data.root: no dataset; set data.root (--data DIR)\n"
                                 "  data.size: expected a multiple of the network stride 32, got 100; use 96")
    validate(merge(Config(), {"data": {"root": "d"}}))  # the defaults work once there is a dataset


def test_yaml_that_is_not_a_config_is_a_config_error(tmp_path):
    (tmp_path / "bad.yaml").write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match=r"^cannot read .*bad\.yaml:\n  not valid YAML: "):
        Config.load(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- data\n")
    with pytest.raises(ConfigError) as caught:
        Config.load(tmp_path / "list.yaml")
    assert caught.value.problems == [
        "expected a mapping of sections (data, generator, discriminator, loss, semi, train), got ['data']"]
    with pytest.raises(FileNotFoundError, match="config file not found"):
        Config.load(tmp_path / "missing.yaml")


def test_option_lists_are_defined_once_in_the_config():
    from segan import losses, transforms
    assert losses.ADVERSARIAL_MODES is segan_config.ADVERSARIAL_MODES == ("vanilla", "lsgan", "hinge")
    assert tuple(transforms.PRESETS) == segan_config.AUGMENT_PRESETS == ("none", "light", "medium", "heavy")
    assert segan_config.INPUT_GUARDS == ("none", "smooth", "noise")
    assert segan_config.RESIZE_MODES == ("resize", "crop")
    assert segan_config.PRECISIONS == ("auto", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true")


def _actions(parser: argparse.ArgumentParser, *command: str) -> dict[str, argparse.Action]:
    """{dest: action} of a (nested) subcommand's parser."""
    for name in command:
        subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = subparsers.choices[name]
    return {action.dest: action for action in parser._actions}


def test_cli_option_lists_are_the_schemas():
    train = _actions(build_parser(), "train")
    assert train["resize"].choices is segan_config.RESIZE_MODES
    assert train["augment"].choices is segan_config.AUGMENT_PRESETS
    assert train["input_guard"].choices is segan_config.INPUT_GUARDS
    assert train["adv_mode"].choices is segan_config.ADVERSARIAL_MODES
    assert train["precision"].choices is segan_config.PRECISIONS
    assert train["in_channels"].choices is segan_config.IN_CHANNELS
    assert _actions(build_parser(), "data", "check")["in_channels"].choices is segan_config.IN_CHANNELS


def test_every_config_flag_maps_to_a_real_setting_and_is_on_its_parsers():
    defaults = Config()
    for flag, (section, key) in TRAIN_FLAGS.items():
        assert hasattr(getattr(defaults, section), key), flag
    assert set(TRAIN_FLAGS) <= set(_actions(build_parser(), "train"))
    assert set(DATA_FLAGS) <= set(_actions(build_parser(), "data", "check"))


def test_new_flags_are_parsed():
    args = build_parser().parse_args(["train", "--checkpoint-every-n-steps", "50", "--allow-unknown-values",
                                      "--overwrite"])
    assert (args.checkpoint_every_n_steps, args.allow_unknown_values, args.overwrite) == (50, True, True)
    args = build_parser().parse_args(["train"])
    assert (args.checkpoint_every_n_steps, args.allow_unknown_values, args.overwrite) == (None, None, False)
    assert build_parser().parse_args(["data", "check", "d", "--allow-unknown-values"]).allow_unknown_values is True
    for command in (["predict", "--model", "m", "--input", "i", "--output", "o"], ["evaluate"]):
        assert build_parser().parse_args(command).overwrite is False
        assert build_parser().parse_args([*command, "--overwrite"]).overwrite is True


def test_flags_override_the_config_file(tmp_path, monkeypatch):
    (tmp_path / "c.yaml").write_text("train:\n  epochs: 7\n  lr: 0.01\nloss:\n  adv_weight: 0.5\n")
    captured = {}

    def train(config, **options):
        captured["config"] = config
        raise SystemExit(0)

    import segan.training
    monkeypatch.setattr(segan.training, "train", train)
    args = build_parser().parse_args(["train", "--config", str(tmp_path / "c.yaml"), "--data", "d", "--epochs", "3",
                                      "--adv-weight", "0", "--encoder-weights", "none", "--devices", "auto",
                                      "--lr", "1e-4", "--allow-unknown-values", "--checkpoint-every-n-steps", "20"])
    with pytest.raises(SystemExit):
        args.handler(args)
    config = captured["config"]
    assert config.train.epochs == 3          # flag beats file
    assert config.train.lr == 0.0001
    assert config.train.devices == "auto"
    assert config.loss.adv_weight == 0.0
    assert config.loss.adv_warmup_epochs == 2  # default: neither file nor flag
    assert config.generator.encoder_weights is None
    assert config.data.root == "d"
    assert config.data.allow_unknown_values is True
    assert config.train.checkpoint_every_n_steps == 20
    (tmp_path / "c.yaml").write_text("train:\n  epochs: 7\n")
    args = build_parser().parse_args(["train", "--config", str(tmp_path / "c.yaml")])
    with pytest.raises(SystemExit):
        args.handler(args)
    assert captured["config"].train.epochs == 7  # file beats default
    assert captured["config"].data.allow_unknown_values is False  # an unset switch leaves the file's value


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "0"], "argument --epochs: train.epochs: expected an integer >= 1, got '0'"),
    (["--epochs", "ten"], "argument --epochs: train.epochs: expected an integer >= 1, got 'ten'"),
    (["--size", "100"], "argument --size: data.size: expected a multiple of the network stride 32, got '100'; use 96"),
    (["--lr", "-1"], "argument --lr: train.lr: expected a number > 0, got '-1'"),
    (["--resize", "pad"], "argument --resize: data.resize: expected one of 'resize', 'crop', got 'pad'"),
    (["--precision", "16"], "argument --precision: train.precision: expected one of 'auto', '32-true', '16-mixed', "
                            "'bf16-mixed', '16-true', 'bf16-true', '64-true', got '16'"),
])
def test_a_bad_flag_value_gets_the_config_files_message(flags, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(["train", *flags])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"segan train: error: {message}"


@pytest.mark.parametrize("command", [["train"], ["predict"], ["evaluate"], ["data", "check"], ["data", "demo"], []])
def test_help_shows_each_default_once(command, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([*command, "--help"])
    text = " ".join(capsys.readouterr().out.split())  # undo the line wrapping
    assert "(default: None)" not in text and "(default: False)" not in text
    assert text.count("(default: ") == text.count("default: ")  # no "(20) (default: None)" pairs either
    if command == ["train"]:
        for flag in ("--epochs", "--encoder", "--size", "--batch-size", "--lr", "--adv-weight", "--resume", "--seed"):
            assert flag in text
        for shown in ("training epochs (default: 20)", "adversarial weight; 0 = plain supervised (default: 0.01)",
                      "augmentation preset (default: light)", "(default: background foreground)"):
            assert text.count(shown) == 1, shown
    if command == ["predict"]:
        assert text.count("images per forward pass (default: 8)") == 1


def test_a_moving_average_needs_float32_weights():
    with pytest.raises(ConfigError, match="train.ema_decay: a moving average needs float32 weights"):
        Config.from_dict({"train": {"ema_decay": 0.999, "precision": "bf16-true"}})
    assert Config.from_dict({"train": {"ema_decay": 0.999, "precision": "bf16-mixed"}}).train.ema_decay == 0.999
