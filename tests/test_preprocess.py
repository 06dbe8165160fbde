"""The one preprocessing path and the one threshold rule, shared by validation, evaluate and predict."""

import json

import numpy as np
import pytest
import torch

from segan.config import Config, DataConfig
from segan.evaluation import evaluate_model
from segan.inference import Predictor
from segan.preprocess import (EvalTransform, labels, labels_from_probabilities, pad_multiple, pad_to_multiple,
                              padded_logits, prepare_image, restore)
from segan.progress import ValidationImages
from segan.training import train

from conftest import make_run, smooth_image, tiny_config, write


@pytest.mark.parametrize("resize, precision", [("resize", "fp32"), ("crop", "fp32"), ("resize", "bf16")])
def test_validation_iou_in_summary_equals_evaluate_model_on_the_same_split(tmp_path, demo_root, resize, precision):
    """Training's validation and `segan evaluate --model` segment and score the same images the
    same way (images at the training size, so resize mode scales nothing either), in bf16 too:
    the same layout, the same autocast, float32 logits before the threshold."""
    run = tmp_path / "run"
    lightning_precision = {"fp32": "32-true", "bf16": "bf16-mixed"}[precision]
    train(tiny_config(demo_root, run, data={"resize": resize}, train={"epochs": 2, "precision": lightning_precision}))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["precision"] == lightning_precision
    result = evaluate_model(run, split="val", device="cpu", num_workers=0, progress=False, precision=precision)
    headline = result.report["headline"]
    assert (round(headline["iou"], 4), round(headline["dice"], 4)) == (summary["best_val_iou"],
                                                                       summary["best_val_dice"])


def test_native_validation_scores_what_evaluate_model_scores(tmp_path):
    """Resize mode with data.val_native: validation resizes each prediction back to its image's
    own size, as `segan predict` does, so the run's best Dice is `segan evaluate --model`'s on
    validation images of other sizes than the 64 px the run trains at; without it, validation
    scores at 64 px, another figure."""
    root = tmp_path / "data"
    for split, sizes in (("train", [(64, 64)] * 8), ("validation", [(80, 96), (120, 72), (50, 70)])):
        for index, (height, width) in enumerate(sizes):
            image = smooth_image(height, width, seed=index)
            write(root / split / "images" / f"{index}.png", image)
            write(root / split / "masks" / f"{index}.png", np.where(image[:, :, 0] > 128, 255, 0).astype(np.uint8))
    scores = {}
    for native in (True, False):
        run = tmp_path / f"native-{native}"
        train(tiny_config(root, run, data={"val_native": native}, loss={"adv_weight": 0.0}))
        scores[native] = json.loads((run / "summary.json").read_text())["best_val_dice"]
    evaluated = evaluate_model(tmp_path / "native-True", split="val", precision="fp32", num_workers=0,
                               progress=False).report["headline"]["dice"]
    assert scores[True] == round(float(np.float32(evaluated)), 4)
    assert abs(scores[False] - scores[True]) > 1e-3  # 0.7585 against 0.7559 when written


def test_restore_resizes_probabilities_back_to_an_image_and_leaves_its_own_size_alone():
    probs = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])  # (C, h, w)
    assert restore(probs, 2, 2) is probs
    restored = restore(probs, 4, 6)
    assert restored.shape == (1, 4, 6)
    assert torch.equal(restore(probs[None], 4, 6), restored[None])  # a batch (B, C, h, w) the same
    assert restored[0, 0, 0] == 0.0 and restored[0, 0, -1] == 1.0  # bilinear, corners kept (half-pixel centres)


def test_native_validation_keeps_the_mask_as_stored_and_pictures_it_at_its_shape():
    data = DataConfig(size=32, resize="resize", val_native=True)
    image, mask = np.full((40, 50, 3), 100, np.uint8), np.zeros((40, 50), np.uint8)
    sample = EvalTransform(data)(image=image, mask=mask)
    assert sample["image"].shape == (32, 32, 3) and sample["mask"] is mask
    config = Config(data=data)
    row = ValidationImages(config, height=20).row(torch.from_numpy(sample["image"].transpose(2, 0, 1)),
                                                  torch.from_numpy(mask), torch.from_numpy(mask))
    assert row.shape == (20, 3 * 25, 3)  # three panels at the stored 40x50's aspect, 20 px high


def test_a_probability_of_exactly_the_threshold_is_foreground_everywhere():
    zero_logits = torch.zeros(1, 1, 2, 3)
    assert labels(zero_logits).tolist() == [[[1, 1, 1], [1, 1, 1]]]  # sigmoid(0) = 0.5 >= 0.5
    probs = torch.tensor([[[[0.5, 0.4999, 0.7]]]])
    assert labels_from_probabilities(probs, 0.5).tolist() == [[[1, 0, 1]]]
    assert labels_from_probabilities(probs, 0.7).tolist() == [[[0, 0, 1]]]


class ZeroNet(torch.nn.Module):
    """Answers logit 0 everywhere: every pixel sits exactly on the binary boundary."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] * 0


@pytest.mark.parametrize("tta", [False, True])
def test_predict_and_tta_put_the_boundary_on_the_same_side_as_training(tmp_path, tta):
    run = make_run(tmp_path / "run")
    predictor = Predictor(ZeroNet(), Config.load(run / "config.yaml"), "cpu", tta=tta)
    image = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    assert (predictor.predict(image) == 1).all()
    assert np.array_equal(predictor.predict_proba(image), np.full((1, 20, 30), 0.5, np.float32))


def test_padding_mirrors_the_image_and_the_output_is_cropped_back(tmp_path):
    run = make_run(tmp_path / "run")  # a depth-3 U-Net: stride 8
    model = Predictor.from_pretrained(run, device="cpu").network.model
    assert pad_multiple(model) == 8
    batch = torch.arange(2 * 3 * 10 * 13, dtype=torch.float32).reshape(2, 3, 10, 13)
    padded = pad_to_multiple(batch, 8)
    assert padded.shape == (2, 3, 16, 16)
    assert torch.equal(padded[..., :10, :13], batch)
    assert torch.equal(padded[..., 10, :13], batch[..., 8, :])  # row 10 mirrors row 8 about row 9
    with torch.no_grad():
        assert padded_logits(model.eval(), batch).shape == (2, 1, 10, 13)


def test_eval_transform_is_prepare_image_for_the_dataset():
    data = DataConfig(size=32, resize="resize", mean=[0.5] * 3, std=[0.25] * 3)
    image = np.full((40, 50, 3), 100, np.uint8)
    mask = np.zeros((40, 50), np.uint8)
    mask[:20] = 1
    sample = EvalTransform(data)(image=image, mask=mask)
    assert np.array_equal(sample["image"].transpose(2, 0, 1), prepare_image(image, data))
    assert sample["image"].shape == (32, 32, 3) and sample["mask"].shape == (32, 32)
    assert float(sample["image"][0, 0, 0]) == pytest.approx((100 / 255 - 0.5) / 0.25, abs=1e-6)
    assert set(np.unique(sample["mask"]).tolist()) == {0, 1}  # nearest neighbour: no class invented
