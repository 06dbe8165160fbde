"""segan export, the inference backends, and the precision each one runs in."""

from __future__ import annotations

import importlib.util
import json
import logging

import cv2
import numpy as np
import pytest
import torch

from segan import hardware
from segan.backends import BackendError
from segan.cli import main
from segan.export import ExportError, export_run
from segan.inference import Predictor

from conftest import make_run, smooth_image

# ONNX Runtime and OpenVINO against torch, all float32: the same arithmetic in another order.
# make_run's sharpened head gives logits of some tens, so this is about 1e-5 relative.
LOGIT_TOLERANCE = 1e-3
PROBABILITY_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("image") / "check.png"
    cv2.imwrite(str(path), smooth_image(72, 90, seed=5))
    return path


@pytest.fixture(scope="module")
def exported_run(tmp_path_factory, image_file):
    """A binary run exported to ONNX and OpenVINO once for the tests that only read it."""
    run = make_run(tmp_path_factory.mktemp("exported") / "run")
    export_run(run, "openvino", image=image_file)
    return run


@pytest.mark.parametrize("classes", [("background", "foreground"), ("bg", "a", "b")])
def test_exported_models_reproduce_the_generator_at_any_batch_and_size(tmp_path, image_file, classes):
    run = make_run(tmp_path / "run", classes=classes)
    settings = export_run(run, "openvino", image=image_file)
    assert set(settings["files"]) == {"model.onnx", "model.xml", "model.bin"}
    assert all((run / "export" / rel).is_file() for rel in settings["files"].values())
    saved = json.loads((run / "export" / "predict.json").read_text())
    assert saved == settings
    # what a predictor outside segan needs, from the run's own config
    assert saved["pad_multiple"] == 8 and saved["classes"] == list(classes)  # a depth-3 U-Net
    assert saved["normalization"]["mean"] == [127.5] * 3 and saved["normalization"]["std"] == [63.75] * 3
    assert saved["size_policy"]["mode"] == "crop" and saved["input"]["channels"] == 3
    assert saved["output"]["activation"] == ("sigmoid" if len(classes) == 2 else "softmax over channels")
    assert saved["threshold"] == (0.5 if len(classes) == 2 else None)
    assert saved["palette"][:2] == [[0, 0, 0], [230, 25, 75]] and len(saved["palette"]) == len(classes)
    check = saved["check"]
    assert check["image"] == str(image_file) and check["input_shape"] == [1, 3, 72, 96]  # 90 padded to 96
    assert max(check["max_abs_logit_difference"].values()) < LOGIT_TOLERANCE

    # Dynamic batch and size: a batch of 3 at a size the check never saw.
    torch_predictor = Predictor.from_pretrained(run, device="cpu", precision="fp32")
    batch = torch.randn(3, 3, 48, 40)
    expected = torch_predictor.network(batch)
    for backend in ("onnxruntime", "openvino"):
        network = Predictor.from_pretrained(run, device="cpu", backend=backend, precision="fp32").network
        got = network(batch)
        assert got.shape == expected.shape == (3, 1 if len(classes) == 2 else 3, 48, 40)
        assert (got - expected).abs().max().item() < LOGIT_TOLERANCE, backend


def test_every_backend_gives_the_torch_masks_through_predict(exported_run):
    """Same preprocessing, padding and TTA around every backend: in float32 the masks agree."""
    run = exported_run
    image = smooth_image(70, 100, seed=2)
    reference = Predictor.from_pretrained(run, device="cpu", precision="fp32", tta=True)
    expected = reference.predict_proba(image)
    assert 0.05 < (expected >= 0.5).mean() < 0.95  # a mask with both classes, so agreement means something
    for backend in ("onnxruntime", "openvino"):
        predictor = Predictor.from_pretrained(run, device="cpu", backend=backend, precision="fp32", tta=True)
        probs = predictor.predict_proba(image)
        assert np.abs(probs - expected).max() < PROBABILITY_TOLERANCE
        assert (predictor.predict(image) == reference.predict(image)).mean() >= 0.999


def test_bf16_inference_stays_close_to_float32(exported_run):
    """bf16 (torch autocast, OpenVINO's precision hint) rounds the arithmetic, not the method:
    probabilities within a hundredth on average (make_run's 40x head magnifies rounding at the
    boundary), nearly every pixel on the same side."""
    run = exported_run
    image = smooth_image(70, 100, seed=2)
    reference = Predictor.from_pretrained(run, device="cpu", precision="fp32")
    for backend in ("torch", "openvino"):
        predictor = Predictor.from_pretrained(run, device="cpu", backend=backend, precision="bf16")
        assert predictor.precision == "bf16"
        assert np.abs(predictor.predict_proba(image) - reference.predict_proba(image)).mean() < 0.01
        assert (predictor.predict(image) == reference.predict(image)).mean() >= 0.98


def test_a_backend_without_its_export_or_package_names_the_fix(tmp_path, monkeypatch):
    run = make_run(tmp_path / "run")
    with pytest.raises(BackendError, match=rf"model.onnx not found: .*segan export {run} --format onnx"):
        Predictor.from_pretrained(run, device="cpu", backend="onnxruntime")
    with pytest.raises(BackendError, match=rf"segan export {run} --format openvino"):
        Predictor.from_pretrained(run, device="cpu", backend="openvino")
    export_run(run, "onnx")  # the run's data is not there: checked on a synthetic image, said so
    assert json.loads((run / "export" / "predict.json").read_text())["check"]["image"] == "synthetic demo image"
    with pytest.raises(BackendError, match="runs float32 only; for bf16 use --backend openvino or torch"):
        Predictor.from_pretrained(run, device="cpu", backend="onnxruntime", precision="bf16")
    with pytest.raises(ValueError, match="backend must be one of torch, onnxruntime, openvino, got 'tensorrt'"):
        Predictor.from_pretrained(run, device="cpu", backend="tensorrt")

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "openvino" else real_find_spec(name, *args))
    with pytest.raises(BackendError, match=r"needs the openvino package, which is not installed: "
                                           r"pip install 'segan\[openvino\]' \(or use --backend torch\)"):
        Predictor.from_pretrained(run, device="cpu", backend="openvino")
    with pytest.raises(BackendError, match=r"pip install 'segan\[openvino\]'"):
        export_run(run, "openvino")


def test_an_export_that_does_not_reproduce_the_generator_keeps_nothing(tmp_path, image_file, monkeypatch):
    run = make_run(tmp_path / "run")
    monkeypatch.setattr("segan.export.TOLERANCE", -1.0)  # no difference can pass
    with pytest.raises(ExportError, match="does not reproduce the torch generator on .*check.png"):
        export_run(run, "openvino", image=image_file)
    assert sorted(p.name for p in (run / "export").rglob("*") if p.is_file()) == []


def test_precision_auto_follows_the_hardware(monkeypatch, caplog):
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: True)
    with caplog.at_level(logging.INFO, logger="segan.hardware"):
        assert hardware.resolve_training_precision("auto", "cpu") == "bf16-mixed"
    assert "precision: bf16-mixed (auto: cpu has native bf16; --precision 32-true to opt out)" in caplog.text
    assert hardware.resolve_inference_precision("auto", torch.device("cpu")) == "bf16"
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: False)
    assert hardware.resolve_training_precision("auto", "cpu") == "32-true"
    assert hardware.resolve_inference_precision("auto", torch.device("cpu")) == "fp32"
    # GPUs: bf16 where the card computes it natively (NVIDIA from compute capability 8.0), not emulated
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for native in (True, False):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native)
        expected = "bf16-mixed" if native else "32-true"
        assert hardware.resolve_training_precision("auto", "gpu") == expected
        assert hardware.resolve_training_precision("auto", "auto") == expected  # auto trains on the GPU
        assert hardware.resolve_inference_precision("auto", torch.device("cuda")) == ("bf16" if native else "fp32")
    assert hardware.resolve_training_precision("auto", "cpu") == "32-true"  # the CPU still has none here
    # an explicit choice is kept whatever the hardware
    assert hardware.resolve_training_precision("bf16-mixed", "cpu") == "bf16-mixed"
    assert hardware.resolve_inference_precision("bf16", torch.device("cpu")) == "bf16"


def test_export_and_predict_from_the_command_line(tmp_path, image_file, capsys, caplog):
    run = make_run(tmp_path / "run")
    inputs = tmp_path / "in"
    inputs.mkdir()
    for index in range(3):
        cv2.imwrite(str(inputs / f"{index}.png"), smooth_image(60 + 10 * index, 80, seed=index))

    def segan(*args):  # the CLI in this process: a fresh one would spend ~8 s importing
        capsys.readouterr()
        code = main([*map(str, args)])
        return code, *capsys.readouterr()

    code, out, err = segan("export", run, "--format", "onnx", "--image", image_file)
    assert code == 0, err[-2000:]
    assert f"written {run / 'export' / 'model.onnx'}" in out
    assert "onnx: largest logit difference from the torch generator" in out
    assert json.loads(out.strip().splitlines()[-1])["files"] == [str(run / "export" / "model.onnx")]
    masks = {}
    for backend in ("torch", "onnxruntime"):
        caplog.clear()
        with caplog.at_level(logging.INFO):
            code, out, err = segan("predict", "--model", run, "--input", inputs, "--output", tmp_path / backend,
                                   "--backend", backend, "--precision", "fp32", "--num-workers", "0", "--no-progress")
        assert code == 0, err[-2000:]
        assert f"segmenting with {backend} in fp32 on cpu" in caplog.text
        masks[backend] = [cv2.imread(str(tmp_path / backend / "masks" / f"{i}.png"), cv2.IMREAD_UNCHANGED)
                          for i in range(3)]
    agreement = np.mean([(a == b).mean() for a, b in zip(masks["torch"], masks["onnxruntime"])])
    assert agreement >= 0.999
    code, out, err = segan("predict", "--model", run, "--input", inputs, "--output", tmp_path / "ov", "--backend",
                           "openvino")
    assert code == 2
    assert f"segan export {run} --format openvino" in err


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A binary run trained until it segments (validation Dice above 0.9): bright noisy rectangles
    on a dark ground, 24 training and 6 validation images; int8 is checked on a model that
    segments, not on random weights."""
    from segan.training import train
    from conftest import tiny_config, write
    root = tmp_path_factory.mktemp("int8")
    rng = np.random.default_rng(0)
    for split, count in (("train", 24), ("validation", 6)):
        for i in range(count):
            mask = np.zeros((64, 64), np.uint8)
            for _ in range(2):
                top, left, height, width = *rng.integers(0, 44, 2), *rng.integers(8, 20, 2)
                mask[top:top + height, left:left + width] = 1
            image = (40 + 150 * mask[..., None] + rng.normal(0, 20, (64, 64, 3))).clip(0, 255).astype(np.uint8)
            write(root / "data" / split / "images" / f"{i:03d}.png", image)
            write(root / "data" / split / "masks" / f"{i:03d}.png", mask * 255)
    run = root / "run"
    train(tiny_config(root / "data", run, loss={"adv_weight": 0.0}, train={"epochs": 8, "batch_size": 8}))
    assert json.loads((run / "summary.json").read_text())["best_val_dice"] > 0.9
    return run


@pytest.mark.heavy
def test_int8_export_is_calibrated_checked_and_predicts_like_float32(trained_run, tmp_path):
    import openvino
    assert main(["export", str(trained_run), "--format", "openvino", "--int8", "--calibration-images", "12"]) == 0
    settings = json.loads((trained_run / "export" / "predict.json").read_text())
    assert settings["precision"] == "int8"
    int8 = settings["int8"]
    assert int8["calibration"] == {"split": "train", "images": 12, "seed": 0,
                                   "preprocessing": "segan's prepare_image, padded to the stride"}
    check = int8["check"]
    assert (check["split"], check["images"], check["score"]) == ("val", 6, "Dice")
    assert check["drop"] == pytest.approx(check["float32"] - check["int8"])
    assert check["pixel_agreement"] >= 0.99
    assert check["drop"] <= 0.005 or int8["method"] == "accuracy-controlled quantisation"
    # the file on disk is the quantised model: its convolutions read int8 weights through FakeQuantize
    model = openvino.Core().read_model(str(trained_run / "export" / "openvino" / "model.xml"))
    assert sum(op.get_type_name() == "FakeQuantize" for op in model.get_ops()) >= 10

    # predict --backend openvino runs it; its masks agree with the torch generator's
    images = trained_run.parent / "data" / "validation" / "images"
    for backend in ("torch", "openvino"):
        assert main(["predict", "--model", str(trained_run), "--input", str(images), "--output",
                     str(tmp_path / backend), "--backend", backend, "--precision", "fp32", "--device", "cpu",
                     "--num-workers", "0", "--no-progress"]) == 0
    torch_masks = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted((tmp_path / "torch" / "masks").glob("*.png"))]
    int8_masks = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted((tmp_path / "openvino" / "masks").glob("*.png"))]
    assert len(torch_masks) == len(int8_masks) == 6
    assert np.mean([(a == b).mean() for a, b in zip(torch_masks, int8_masks)]) >= 0.99


def test_int8_needs_openvino_nncf_and_the_runs_data(trained_run, tmp_path, monkeypatch, capsys):
    from segan.quantize import QuantizationError
    assert main(["export", str(trained_run), "--format", "onnx", "--int8"]) == 2
    assert "--int8 quantises the OpenVINO model: give --format openvino --int8" in capsys.readouterr().err
    export = trained_run / "export"
    before = {path: path.stat().st_mtime_ns for path in export.rglob("*")} if export.exists() else {}
    with pytest.raises(QuantizationError, match=r"--data DIR"):
        export_run(trained_run, "openvino", int8=True, data_root=tmp_path / "nowhere")
    after = {path: path.stat().st_mtime_ns for path in export.rglob("*")} if export.exists() else {}
    assert after == before  # refused before anything was written
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name == "nncf"
                        else real_find_spec(name, *args))
    with pytest.raises(QuantizationError, match=r"pip install 'segan\[int8\]'"):
        export_run(trained_run, "openvino", int8=True)


@pytest.mark.heavy
def test_int8_falls_back_to_accuracy_control_when_plain_quantisation_loses_too_much(trained_run):
    # No quantised model can lose less than nothing (the bound is below zero): the fallback must run.
    settings = export_run(trained_run, "openvino", int8=True, calibration_images=8, max_drop=-1.0)
    assert settings["int8"]["method"] == "accuracy-controlled quantisation"
    assert settings["int8"]["check"]["max_drop"] == -1.0
