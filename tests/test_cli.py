import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from segan import metrics as segan_metrics
from segan.cli import build_parser, main

from conftest import make_run, shared_dataset


def test_data_demo_writes_layout(tmp_path, capsys):
    assert main(["data", "demo", str(tmp_path / "d"), "--n-train", "2", "--n-val", "1", "--size", "32"]) == 0
    assert len(list((tmp_path / "d" / "train" / "images").glob("*.png"))) == 2
    assert len(list((tmp_path / "d" / "validation" / "masks").glob("*.png"))) == 1


def test_version(capsys):
    from segan import __version__
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out == f"segan {__version__}\n"


def test_unlabeled_paths_on_the_command_line_are_relative_to_the_working_directory(tmp_path, monkeypatch):
    from segan.cli import TRAIN_FLAGS, _config
    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(["train", "--data", "data", "--unlabeled", "extra/", "/abs/more", "x/*.png"])
    config = _config(args, TRAIN_FLAGS)
    assert config.data.unlabeled == [str(tmp_path / "extra"), "/abs/more", str(tmp_path / "x" / "*.png")]


def test_train_on_a_missing_folder_exits_nonzero_with_a_message(tmp_path, capsys):
    code = main(["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "run")])
    assert code == 2
    assert "nope" in capsys.readouterr().err


def test_bad_config_value_fails_before_training(tmp_path, capsys):
    data = tmp_path / "d"
    main(["data", "demo", str(data), "--n-train", "2", "--n-val", "1", "--size", "32"])
    code = main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--arch", "nonsense"])
    assert code == 2
    assert "nonsense" in capsys.readouterr().err


def test_an_invalid_config_file_exits_2_naming_every_problem_without_a_traceback(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  epochs: ten\n  epoch: 3\ngenerator:\n  encodr_name: x\n")
    code = main(["train", "--config", str(config), "--data", str(tmp_path), "--out", str(tmp_path / "run")])
    assert code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"segan: error: invalid config in {config}:",
        "  generator.encodr_name: unknown setting (did you mean 'encoder_name'?); "
        "known: arch, encoder_name, encoder_depth, encoder_weights, decoder_width",
        "  train.epochs: expected an integer >= 1, got 'ten'",
        "  train.epoch: unknown setting (did you mean 'epochs'?); known: epochs, time_budget, batch_size, lr, d_lr, "
        "weight_decay, ema_decay, seed, accelerator, devices, precision, checkpoint_every_n_steps, min_epoch_steps, "
        "validate_every, compile, progress_png, out",
    ]
    assert not (tmp_path / "run").exists()


def test_flags_and_the_config_file_are_checked_together(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("data:\n  classes: [a, b, c]\n")
    code = main(["train", "--config", str(config), "--data", str(tmp_path), "--out", str(tmp_path / "run"),
                 "--ignore-index", "1"])
    assert code == 2
    assert capsys.readouterr().err == ("segan: error: invalid config:\n"
                                       "  data.ignore_index: 1 is also class 'b'; use a value of 3 or more (255 is usual)\n")


@pytest.mark.parametrize("before, after, expected", [
    ([], [], (False, None)),
    (["-v", "--max-image-pixels", "7"], [], (True, 7)),
    ([], ["--verbose", "--max-image-pixels", "5"], (True, 5)),
    (["-v", "--max-image-pixels", "7"], ["--max-image-pixels", "5"], (True, 5)),  # a later value wins
])
def test_global_flags_are_accepted_on_either_side_of_the_subcommand(before, after, expected):
    predict = ["--model", "m", "--input", "i", "--output", "o"]
    args = build_parser().parse_args([*before, "predict", *after, *predict])
    assert (args.verbose, args.max_image_pixels) == expected
    args = build_parser().parse_args([*before, "data", "check", "d", *after])
    assert (args.verbose, args.max_image_pixels) == expected


def test_predict_takes_max_image_pixels_after_the_subcommand(tmp_path, capsys, monkeypatch):
    from segan.data import io
    # main() sets the limit for the whole process (and its workers, through the environment).
    # Recorded here so that both are restored afterwards (delenv of an unset variable records nothing).
    monkeypatch.setattr(io, "MAX_IMAGE_PIXELS", io.MAX_IMAGE_PIXELS)
    monkeypatch.setenv("SEGAN_MAX_IMAGE_PIXELS", str(io.MAX_IMAGE_PIXELS))
    run = make_run(tmp_path / "run")
    (tmp_path / "in").mkdir()
    image = tmp_path / "in" / "a.png"
    cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    code = main(["predict", "--max-image-pixels", "5", "--model", str(run), "--input", str(tmp_path / "in"),
                 "--output", str(tmp_path / "out"), "--num-workers", "0", "--no-progress", "--device", "cpu"])
    assert code == 1
    assert io.MAX_IMAGE_PIXELS == 5
    assert "declares 8x8 pixels, above the limit of 5" in capsys.readouterr().out


@pytest.mark.slow
def test_train_end_to_end_on_real_kvasir_subset(tmp_path):
    """A short run on a few real Kvasir-SEG images (JPEG images, noisy JPEG masks)."""
    kvasir = shared_dataset("kvasir-seg")
    subset = tmp_path / "kvasir"
    for split, count in (("train", 16), ("validation", 8)):
        for kind in ("images", "masks"):
            (subset / split / kind).mkdir(parents=True)
        for image in sorted((kvasir / split / "images").glob("*.jpg"))[:count]:
            for kind in ("images", "masks"):
                (subset / split / kind / image.name).symlink_to(kvasir / split / kind / image.name)
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "segan", "train", "--data", str(subset), "--out", str(run),
                           "--size", "64", "--epochs", "2", "--batch-size", "4", "--num-workers", "1",
                           "--warmup-epochs", "1", "--accelerator", "cpu"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["steps"] == 8
    assert json.loads(done.stdout.strip().splitlines()[-1]) == summary

    # The reported Dice and IoU, recomputed from the exported (best) generator: each validation
    # image resized to 64 x 64 (bilinear, its mask nearest), normalised as config.yaml records,
    # run as validation runs it (NHWC; bf16 autocast where the default precision chose it, with
    # float32 logits), foreground where the probability is at least 0.5, micro over the split.
    from segan.hardware import cpu_has_bf16
    assert summary["precision"] == ("bf16-mixed" if cpu_has_bf16() else "32-true")
    import segmentation_models_pytorch as smp
    from segan.config import Config
    from segan.data import read_image, read_mask
    data = Config.load(run / "config.yaml").data
    mean, std = (np.asarray(v, np.float32) * 255 for v in data.normalization())
    model = smp.from_pretrained(str(run / "generator")).eval().to(memory_format=torch.channels_last)
    confusion = torch.zeros(2, 2, dtype=torch.long)
    for path in sorted((subset / "validation" / "images").glob("*.jpg")):
        image = cv2.resize(read_image(path, 3), (64, 64), interpolation=cv2.INTER_LINEAR)
        x = torch.from_numpy(((image.astype(np.float32) - mean) / std).transpose(2, 0, 1))[None]
        with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=summary["precision"] == "bf16-mixed"):
            logits = model(x.contiguous(memory_format=torch.channels_last)).float()
        predicted = (torch.sigmoid(logits)[:, 0] >= 0.5).long()
        truth = cv2.resize(read_mask(subset / "validation" / "masks" / path.name), (64, 64),
                           interpolation=cv2.INTER_NEAREST)
        confusion += segan_metrics.confusion_matrix(predicted, torch.from_numpy(truth)[None], 2,
                                                    data.ignore_index)[0]
    scores = segan_metrics.summary(confusion, binary=True)
    # Lightning logs float32; summary.json rounds to 4 decimals.
    assert summary["best_val_dice"] == round(float(np.float32(scores["dice"])), 4)
    assert summary["best_val_iou"] == round(float(np.float32(scores["iou"])), 4)


@pytest.mark.slow
def test_camvid_multiclass_train_predict_evaluate_from_the_cli(tmp_path, capsys):
    """11 classes with void = 11 ignored, {split}/ + {split}annot/ layout, recipe config, no code."""
    camvid = shared_dataset("camvid")
    subset = tmp_path / "camvid"
    for split, count in (("train", 8), ("val", 4)):
        for folder in (split, f"{split}annot"):
            (subset / folder).mkdir(parents=True)
        for image in sorted((camvid / split).glob("*.png"))[:count]:
            for folder in (split, f"{split}annot"):
                (subset / folder / image.name).symlink_to(camvid / folder / image.name)
    recipe = Path(__file__).resolve().parents[1] / "datasets" / "camvid" / "config.yaml"
    run, preds = tmp_path / "run", tmp_path / "preds"

    def segan(*args):  # the CLI in this process: a fresh one would spend ~8 s importing
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        assert code == 0, err[-3000:]
        return json.loads(out.strip().splitlines()[-1])

    assert segan("data", "check", str(subset), "--config", str(recipe), "--no-progress")["ok"]
    # with issue 21's levers on: crops rescaled and centred on rare classes, weighted OHEM cross-entropy
    segan("train", "--config", str(recipe), "--data", str(subset), "--out", str(run), "--size", "64", "--epochs", "1",
          "--batch-size", "4", "--num-workers", "0", "--accelerator", "cpu", "--resize", "crop",
          "--scale-range", "0.5", "1.5", "--rare-class-crops", "0.5", "--class-weights", "median-frequency",
          "--ohem-keep", "0.25", "--loss", "dice=1", "ce=1", "lovasz=0.5")
    recorded = yaml.safe_load((run / "config.yaml").read_text())["loss"]
    assert len(recorded["class_weights"]) == 11 and recorded["terms"] == {"dice": 1.0, "ce": 1.0, "lovasz": 0.5}
    assert recorded["class_weights"] == json.loads((run / "class_stats.json").read_text())["class_weights"]
    predicted = segan("predict", "--model", str(run), "--input", str(subset / "val"), "--output", str(preds),
                      "--no-progress")
    assert predicted["written"] == 4 and predicted["classes"][3] == "Road"
    scored = segan("evaluate", "--pred", str(preds), "--gt", str(subset / "valannot"), "--ignore-index", "11")
    metrics = json.loads((preds / "evaluation" / "metrics.json").read_text())
    assert list(metrics["per_class"]) == predicted["classes"]  # class names travel from the run to the report
    # The headline (mean IoU over the classes present, void left out), recomputed from the written masks.
    confusions = []
    for truth_file in sorted((subset / "valannot").glob("*.png")):
        pred = np.array(Image.open(preds / "masks" / truth_file.name))  # palette PNG: class indices
        truth = cv2.imread(str(truth_file), cv2.IMREAD_UNCHANGED)
        confusions.append(segan_metrics.confusion_matrix(torch.from_numpy(pred)[None], torch.from_numpy(truth)[None],
                                                         11, ignore_index=11)[0])
    assert len(confusions) == 4
    assert scored["iou"] == segan_metrics.report(torch.stack(confusions), predicted["classes"])["headline"]["iou"]
    by_model = segan("evaluate", "--model", str(run), "--data", str(subset), "--out", str(tmp_path / "ev"))
    assert by_model["iou"] == pytest.approx(scored["iou"], abs=1e-9)
