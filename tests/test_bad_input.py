"""Bad input, table-driven: each row is a mistake people make, run through the command line.

Every row asserts the exit code, that the message names the file or setting, that there is no
stack trace, and that no file that was there before changed (hashed before and after).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pytest

from segan.cli import main
from segan.data import make_demo_dataset

from conftest import make_run, tiny_config, write

from test_reliability import png_header_only


def hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def make_world(root: Path) -> Path:
    """A tiny dataset, a finished run trained on it, predictions and an evaluation of them."""
    data = make_demo_dataset(root / "data", n_train=8, n_val=2, size=32, seed=0)
    config = tiny_config(data, root / "run", data={"size": 32}, train={"epochs": 1})
    config.save(root / "run.yaml")
    assert main(["train", "--config", str(root / "run.yaml")]) == 0
    assert main(["predict", "--model", str(root / "run"), "--input", str(data / "validation" / "images"),
                 "--output", str(root / "pred"), "--num-workers", "0", "--no-progress", "--device", "cpu"]) == 0
    assert main(["evaluate", "--pred", str(root / "pred"), "--gt", str(data / "validation"),
                 "--out", str(root / "eval")]) == 0
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """One world for the table's rows: none of them may change it (each row checks)."""
    return make_world(tmp_path_factory.mktemp("world"))


def train_onto_the_finished_run(w: Path) -> list[str]:
    return ["train", "--config", str(w / "run.yaml")]


def config_with_two_mistakes(w: Path) -> list[str]:
    (w / "bad.yaml").write_text("data: {root: %s}\ntrain: {epochs: ten, epoch: 3}\n" % (w / "data"))
    return ["train", "--config", str(w / "bad.yaml"), "--out", str(w / "new-run")]


def prediction_holding_value_2(w: Path) -> list[str]:
    pred = w / "pred2"
    for mask in sorted((w / "data" / "validation" / "masks").iterdir()):
        write(pred / mask.name, (cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE) > 0).astype(np.uint8) * 2)
    return ["evaluate", "--pred", str(pred), "--gt", str(w / "data" / "validation"), "--out", str(w / "eval2")]


def training_mask_value_7(w: Path) -> list[str]:
    data = make_demo_dataset(w / "data7", n_train=4, n_val=2, size=32, seed=0)
    mask = (cv2.imread(str(data / "train" / "masks" / "0001.png"), cv2.IMREAD_GRAYSCALE) > 0).astype(np.uint8)
    mask[:4, :4] = 7  # a 0/1 mask with a value no rule places (in a 0/255 mask 7 would be JPEG noise)
    write(data / "train" / "masks" / "0001.png", mask)
    return ["train", "--data", str(data), "--out", str(w / "run7"), "--size", "32", "--epochs", "1"]


def data_check_mask_value_7(w: Path) -> list[str]:
    training_mask_value_7(w)
    return ["data", "check", str(w / "data7"), "--no-progress"]


def evaluate_onto_an_earlier_evaluation(w: Path) -> list[str]:
    return ["evaluate", "--pred", str(w / "pred"), "--gt", str(w / "data" / "validation"), "--out", str(w / "eval")]


def predict_onto_earlier_predictions(w: Path) -> list[str]:
    return ["predict", "--model", str(w / "run"), "--input", str(w / "data" / "validation" / "images"),
            "--output", str(w / "pred"), "--num-workers", "0", "--no-progress", "--device", "cpu"]


def resume_with_another_encoder(w: Path) -> list[str]:
    return ["train", "--resume", "--out", str(w / "run"), "--encoder", "resnet34", "--epochs", "2"]


def resume_of_a_folder_without_a_run(w: Path) -> list[str]:
    return ["train", "--resume", "--out", str(w / "nothing-here")]


def unreadable_image_among_good_ones(w: Path) -> list[str]:
    inputs = w / "mixed"
    for i in range(2):
        write(inputs / f"good{i}.png", np.full((20, 24, 3), 80 * i, np.uint8))
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return ["predict", "--model", str(w / "run"), "--input", str(inputs), "--output", str(w / "mixed-out"),
            "--num-workers", "0", "--no-progress", "--device", "cpu"]


def huge_image(w: Path) -> list[str]:
    inputs = w / "huge"
    inputs.mkdir(exist_ok=True)
    (inputs / "huge.png").write_bytes(png_header_only(70_000, 70_000))
    return ["predict", "--model", str(w / "run"), "--input", str(inputs), "--output", str(w / "huge-out"),
            "--num-workers", "0", "--no-progress", "--device", "cpu"]


# (case, argv builder, exit code, fragments the message must hold)
CASES: list[tuple[str, Callable[[Path], list[str]], int, list[str]]] = [
    ("train onto a finished run", train_onto_the_finished_run, 2,
     ["already holds a run", "--resume", "--out NEW_FOLDER", "--overwrite"]),
    ("config with two mistakes", config_with_two_mistakes, 2,
     ["train.epochs: expected an integer >= 1, got 'ten'", "train.epoch"]),
    ("prediction holding value 2", prediction_holding_value_2, 2, ["0001.png", "2"]),
    ("training mask with value 7", training_mask_value_7, 2, ["0001.png", "7", "nothing was trained"]),
    ("data check, mask with value 7", data_check_mask_value_7, 1, ["0001.png", "7"]),
    ("evaluate onto an earlier evaluation", evaluate_onto_an_earlier_evaluation, 2,
     ["already holds an evaluation", "--overwrite"]),
    ("predict onto earlier predictions", predict_onto_earlier_predictions, 2,
     ["already holds the results", "--skip-existing", "--overwrite"]),
    ("resume with another encoder", resume_with_another_encoder, 2,
     ["generator.encoder_name: 'resnet18' in the run, 'resnet34' given"]),
    ("resume of a folder without a run", resume_of_a_folder_without_a_run, 2, ["nothing-here: it holds no segan run"]),
    ("unreadable image among good ones", unreadable_image_among_good_ones, 1, ["broken.png"]),
    ("huge image", huge_image, 1, ["huge.png", "--max-image-pixels"]),
]


@pytest.mark.parametrize("case, build, code, fragments", CASES, ids=[case[0] for case in CASES])
def test_bad_input_is_one_clear_message_and_changes_nothing(world, capsys, case, build, code, fragments):
    argv = build(world)
    capsys.readouterr()
    before = hashes(world)
    assert main(argv) == code
    captured = capsys.readouterr()
    said = captured.out + captured.err
    assert "Traceback" not in said
    for fragment in fragments:
        assert fragment in said, f"{case}: {fragment!r} not in\n{said[-2000:]}"
    after = hashes(world)
    assert {name: digest for name, digest in after.items() if name in before} == before, case


def test_the_advice_in_each_message_works(tmp_path, capsys, monkeypatch):
    """Run what the messages advise: --overwrite replaces, --skip-existing resumes, a raised
    --max-image-pixels (after the subcommand) lets the huge image through to decoding. In a world
    of its own: following the advice changes it, and the table's rows may run after this test."""
    world = make_world(tmp_path)
    from segan.data import io
    # --max-image-pixels sets the limit for the process and its workers: restored afterwards
    monkeypatch.setattr(io, "MAX_IMAGE_PIXELS", io.MAX_IMAGE_PIXELS)
    monkeypatch.setenv("SEGAN_MAX_IMAGE_PIXELS", str(io.MAX_IMAGE_PIXELS))
    assert main(train_onto_the_finished_run(world) + ["--overwrite"]) == 0
    assert json.loads((world / "run" / "summary.json").read_text())["epochs"] == 1
    assert not (world / ".run.replaced").exists()
    assert main(predict_onto_earlier_predictions(world) + ["--skip-existing"]) == 0
    assert "2 already there" in capsys.readouterr().out
    assert main(evaluate_onto_an_earlier_evaluation(world) + ["--overwrite"]) == 0
    assert main(training_mask_value_7(world) + ["--allow-unknown-values"]) == 0
    huge_image(world)
    assert main(huge_image(world) + ["--max-image-pixels", str(70_000 * 70_000), "--overwrite"]) == 1
    manifest = (world / "huge-out" / "manifest.csv").read_text()
    assert "above the limit" not in manifest and "huge.png" in manifest  # refused later, by the decoder


def test_a_failed_overwrite_restores_the_earlier_run(tmp_path, monkeypatch):
    import segan.training as training
    data = make_demo_dataset(tmp_path / "data", n_train=4, n_val=2, size=32, seed=0)
    run = make_run(tmp_path / "run")
    before = hashes(run)
    config = tiny_config(data, run, data={"size": 32})
    (data / "train" / "images" / "0001.png").write_bytes(b"broken")
    with pytest.raises(ValueError, match="0001.png"):  # the data check fails before anything is moved
        training.train(config, overwrite=True)
    assert hashes(run) == before
    make_demo_dataset(tmp_path / "data", n_train=4, n_val=2, size=32, seed=0)

    def fails(self, batch, batch_idx):
        raise RuntimeError("out of memory in the first batch")

    monkeypatch.setattr(training.SeganModule, "training_step", fails)
    with pytest.raises(RuntimeError, match="out of memory"):
        training.train(config, overwrite=True)
    assert hashes(run) == before and not (tmp_path / ".run.replaced").exists()
