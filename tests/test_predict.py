"""segan predict: padding, tiling, TTA, formats, bad files, the output tree, resume, refusals, shards."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from segan.batch_predict import PredictInputError, collect_inputs, in_shard, parse_shard, predict_folder
from segan.cli import main
from segan.inference import Predictor, RunFolderError, tile_starts

from conftest import make_run, smooth_image


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("binary_run"))


def test_tile_starts_cover_the_axis():
    assert tile_starts(100, 128, 0.25) == [0]
    starts = tile_starts(1000, 256, 0.25)
    assert starts[0] == 0 and starts[-1] == 1000 - 256
    assert all(b - a <= 192 for a, b in zip(starts, starts[1:]))


def test_padded_prediction_agrees_with_whole_image(binary_run):
    predictor = Predictor.from_pretrained(binary_run, device="cpu")
    image = smooth_image(128, 128)
    whole = predictor.predict_proba(image)
    assert whole.std() > 0.2, "the model's output should vary for this test to mean anything"
    cropped = predictor.predict_proba(image[:115, :101])  # padded to 128 x 128 inside
    assert cropped.shape == (1, 115, 101)
    inner = (slice(None), slice(0, 80), slice(0, 70))  # away from where the padding differs
    assert np.abs(cropped[inner] - whole[inner]).mean() < 0.02


def test_tiled_prediction_agrees_with_whole_image(binary_run):
    image = smooth_image(256, 320, seed=1)
    whole = Predictor.from_pretrained(binary_run, device="cpu", tile_size=1024).predict_proba(image)
    tiled_predictor = Predictor.from_pretrained(binary_run, device="cpu", tile_size=128, tile_overlap=0.5)
    assert tiled_predictor.needs_tiling(tiled_predictor.prepare(image))
    tiled = tiled_predictor.predict_proba(image)
    assert tiled.shape == whole.shape == (1, 256, 320)
    assert whole.std() > 0.2, "the model's output should vary for this test to mean anything"
    # 128 px tiles are small beside a U-Net's context, and this untrained net uses all of it;
    # a trained one agrees more closely.
    assert np.abs(tiled - whole).mean() < 0.04
    assert ((tiled > 0.5) == (whole > 0.5)).mean() > 0.96
    # No seams: the blended map is as smooth across tile borders as elsewhere.
    column_steps = np.abs(np.diff(tiled[0], axis=1)).mean(axis=0)
    assert column_steps.max() < 5 * np.median(column_steps) + 1e-3


@pytest.mark.parametrize("classes, rotations", [(("bg", "fg"), True), (("a", "b", "c"), True), (("a", "b", "c"), False)])
def test_tta_is_the_average_of_the_views_undone(tmp_path, classes, rotations):
    import segmentation_models_pytorch as smp
    run = make_run(tmp_path / "run", classes=classes, rotations=rotations)
    plain = Predictor.from_pretrained(run, device="cpu", precision="fp32")
    tta = Predictor.from_pretrained(run, device="cpu", tta=True, precision="fp32")  # a float32 reference below
    channels = 1 if len(classes) == 2 else len(classes)
    odd = smooth_image(70, 100, seed=2)  # not square, not a stride multiple
    assert plain.predict_proba(odd).shape == tta.predict_proba(odd).shape == (channels, 70, 100)
    assert tta.predict(odd).shape == (70, 100)

    # By hand, on sides that need no padding: turn and/or mirror the normalised image, run the
    # network, undo the turn and mirror on the probabilities, average.
    image = smooth_image(64, 96, seed=2)
    x = ((image.astype(np.float32) - 0.5 * 255) / (0.25 * 255)).transpose(2, 0, 1)  # make_run's mean, std
    model = smp.from_pretrained(str(run / "generator")).eval()
    views = [(turns, flip) for turns in (range(4) if rotations else [0]) for flip in (False, True)]
    undone = []
    for turns, flip in views:
        view = np.rot90(x, turns, axes=(1, 2))
        view = view[:, :, ::-1] if flip else view
        with torch.no_grad():
            logits = model(torch.from_numpy(np.ascontiguousarray(view))[None])[0]
        probs = (torch.sigmoid(logits) if channels == 1 else torch.softmax(logits, dim=0)).numpy()
        probs = probs[:, :, ::-1] if flip else probs
        undone.append(np.rot90(probs, -turns, axes=(1, 2)))
    assert len(undone) == (8 if rotations else 2)
    # 1e-4: the predictor runs NHWC, the reference NCHW; float32 sums in another order
    np.testing.assert_allclose(plain.predict_proba(image), undone[0], atol=1e-4)
    np.testing.assert_allclose(tta.predict_proba(image), np.mean(undone, axis=0), atol=1e-4)
    # The views disagree, so the average is not the plain map: the test could tell them apart.
    assert np.abs(np.mean(undone, axis=0) - undone[0]).max() > 0.01


def test_multi_scale_tta_averages_the_scales_resized_back(tmp_path):
    """tta_scales 0.5 and 1: the 64 x 96 image also runs at 32 x 48, its probabilities resized
    (bilinear) back to 64 x 96, and the two maps averaged."""
    import segmentation_models_pytorch as smp
    import torch.nn.functional as F
    run = make_run(tmp_path / "run", classes=("a", "b", "c"))
    scales = Predictor.from_pretrained(run, device="cpu", precision="fp32", tta_scales=(0.5, 1.0))
    image = smooth_image(64, 96, seed=2)
    x = torch.from_numpy(((image.astype(np.float32) - 0.5 * 255) / (0.25 * 255)).transpose(2, 0, 1))[None]
    model = smp.from_pretrained(str(run / "generator")).eval()
    with torch.no_grad():
        full = torch.softmax(model(x), dim=1)
        half = torch.softmax(model(F.interpolate(x, size=(32, 48), mode="bilinear", align_corners=False)), dim=1)
    half = F.interpolate(half, size=(64, 96), mode="bilinear", align_corners=False)
    expected = ((full + half) / 2)[0].numpy()
    np.testing.assert_allclose(scales.predict_proba(image), expected, atol=1e-4)
    assert np.abs(expected - full[0].numpy()).max() > 0.01  # the scales disagree: the test can tell
    with pytest.raises(ValueError, match="tta_scales must be positive"):
        Predictor.from_pretrained(run, device="cpu", tta_scales=(0.0,))


def test_sixteen_bit_arrays_are_scaled_like_files(binary_run):
    """A 12-bit image in a uint16 array predicts exactly as its 8-bit equivalent (4095 is full scale)."""
    predictor = Predictor.from_pretrained(binary_run, device="cpu")
    eight = smooth_image(40, 48, seed=3)
    eight[0, 0] = 255  # full scale, so the 12-bit copy reaches 4095
    twelve = np.rint(eight.astype(np.float64) * 4095 / 255).astype(np.uint16)
    assert twelve.max() == 4095
    assert np.array_equal(predictor.predict_proba(twelve), predictor.predict_proba(eight))


def write_formats(folder: Path) -> dict[str, tuple[int, int]]:
    """One image per supported format and pixel kind; returns name -> (height, width)."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = smooth_image(45, 61)
    grey = rgb[:, :, 0]
    files = {
        "rgb.png": rgb, "grey.png": grey, "rgba.png": np.dstack([rgb, np.full(grey.shape, 200, np.uint8)]),
        "sixteen.tif": grey.astype(np.uint16) * 257, "photo.jpg": rgb, "plain.bmp": rgb, "portable.ppm": rgb,
        "modern.webp": rgb, "odd_size.png": smooth_image(33, 97),
    }
    sizes = {}
    for name, array in files.items():
        assert cv2.imwrite(str(folder / name), array), name
        sizes[Path(name).stem] = array.shape[:2]
    Image.fromarray(rgb).save(folder / "anim.gif")
    sizes["anim"] = rgb.shape[:2]
    return sizes


@pytest.mark.parametrize("in_channels", [1, 3])
def test_formats_channels_and_sizes(tmp_path, in_channels):
    run = make_run(tmp_path / "run", in_channels=in_channels)
    sizes = write_formats(tmp_path / "in")
    summary = predict_folder(Predictor.from_pretrained(run, device="cpu"), [tmp_path / "in"], tmp_path / "out",
                             num_workers=0, progress=False)
    assert summary.failed == 0, summary.failures
    assert summary.written == len(sizes)
    for stem, size in sizes.items():
        mask = cv2.imread(str(tmp_path / "out" / "masks" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == size, stem
        assert set(np.unique(mask)) <= {0, 255}


def test_corrupt_files_are_reported_and_the_rest_written(tmp_path, binary_run, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(5):
        cv2.imwrite(str(inputs / f"good{i}.png"), smooth_image(40, 40, seed=i))
    (inputs / "empty.png").write_bytes(b"")
    (inputs / "truncated.jpg").write_bytes((inputs / "good0.png").read_bytes()[:10])
    (inputs / "text.png").write_text("hello")
    (inputs / "notes.txt").write_text("not an image: ignored, not an error")
    code = main(["predict", "--model", str(binary_run), "--input", str(inputs), "--output", str(tmp_path / "out"),
                 "--num-workers", "2", "--batch-size", "2", "--no-progress"])
    assert code == 1
    out = capsys.readouterr().out
    assert "5 written" in out and "3 failed" in out and "truncated.jpg" in out
    assert len(list((tmp_path / "out" / "masks").glob("*.png"))) == 5
    rows = list(csv.DictReader(open(tmp_path / "out" / "manifest.csv")))
    status = {Path(r["input"]).name: r["status"] for r in rows}
    assert status == {**{f"good{i}.png": "written" for i in range(5)},
                      "empty.png": "failed", "truncated.jpg": "failed", "text.png": "failed"}
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["failed"] == 3
    assert not list((tmp_path / "out").rglob("*.tmp")), "no temporary files left behind"


def test_output_tree_mirrors_input_with_probs_and_overlays(tmp_path, binary_run):
    for rel in ("a/x.png", "a/b/y.jpg", "z.png"):
        path = tmp_path / "in" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), smooth_image(32, 48))
    summary = predict_folder(Predictor.from_pretrained(binary_run, device="cpu"), [tmp_path / "in"], tmp_path / "out",
                             num_workers=0, save_probs=True, overlay=True, progress=False)
    assert summary.written == 3
    out = tmp_path / "out"
    for rel in ("a/x", "a/b/y", "z"):
        assert (out / "masks" / f"{rel}.png").is_file()
        assert np.load(out / "probs" / f"{rel}.npy").shape == (1, 32, 48)
        assert cv2.imread(str(out / "overlays" / f"{rel}.jpg")).shape == (32, 48, 3)


def test_multiclass_masks_are_palette_pngs(tmp_path):
    run = make_run(tmp_path / "run", classes=("a", "b", "c", "d"))
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "x.png"), smooth_image(64, 64))
    predict_folder(Predictor.from_pretrained(run, device="cpu"), [tmp_path / "in"], tmp_path / "out",
                   num_workers=0, progress=False)
    mask = Image.open(tmp_path / "out" / "masks" / "x.png")
    assert mask.mode == "P" and mask.size == (64, 64)
    assert set(np.unique(np.array(mask))) <= {0, 1, 2, 3}


def test_skip_existing_resumes(tmp_path, binary_run):
    (tmp_path / "in").mkdir()
    for i in range(4):
        cv2.imwrite(str(tmp_path / "in" / f"{i}.png"), smooth_image(32, 32, seed=i))
    predictor = Predictor.from_pretrained(binary_run, device="cpu")
    predict_folder(predictor, [tmp_path / "in"], tmp_path / "out", num_workers=0, progress=False)
    (tmp_path / "out" / "masks" / "2.png").unlink()
    again = predict_folder(predictor, [tmp_path / "in"], tmp_path / "out", num_workers=0, progress=False,
                           skip_existing=True)
    assert (again.written, again.skipped_existing) == (1, 3)
    assert (tmp_path / "out" / "masks" / "2.png").is_file()


def test_refuses_output_in_input_and_missing_inputs(tmp_path, binary_run, capsys):
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "a.png"), smooth_image(32, 32))
    for output in (tmp_path / "in", tmp_path / "in" / "preds"):
        with pytest.raises(PredictInputError, match="inside the input folder"):
            collect_inputs([tmp_path / "in"], output)
        assert main(["predict", "--model", str(binary_run), "--input", str(tmp_path / "in"),
                     "--output", str(output), "--no-progress"]) == 2
    assert not (tmp_path / "in" / "preds").exists()
    assert [p.name for p in (tmp_path / "in").iterdir()] == ["a.png"]
    with pytest.raises(PredictInputError, match="not found"):
        collect_inputs([tmp_path / "missing"], tmp_path / "out")
    with pytest.raises(PredictInputError, match="no files match"):
        collect_inputs([str(tmp_path / "in" / "*.tif")], tmp_path / "out")


def test_an_output_that_is_a_file_is_refused_as_not_a_folder(tmp_path, binary_run, capsys):
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "a.png"), smooth_image(32, 32))
    (tmp_path / "out.png").write_bytes(b"mine")
    assert main(["predict", "--model", str(binary_run), "--input", str(tmp_path / "in"),
                 "--output", str(tmp_path / "out.png"), "--no-progress"]) == 2
    assert capsys.readouterr().err == (f"segan: error: {tmp_path / 'out.png'} is a file: --output must be a folder "
                                       "(segan predict writes OUTPUT/masks/, OUTPUT/manifest.csv and more); give a "
                                       "new folder name\n")
    assert (tmp_path / "out.png").read_bytes() == b"mine"


def test_incomplete_run_folder_is_a_clear_error(tmp_path, binary_run):
    with pytest.raises(RunFolderError, match="config.yaml"):
        Predictor.from_pretrained(tmp_path)
    broken = make_run(tmp_path / "broken")
    weights = broken / "generator" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(RunFolderError, match="cannot load the generator"):
        Predictor.from_pretrained(broken)


def test_globs_and_files(tmp_path):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    for rel in ("a.png", "b.jpg", "sub/c.png"):
        cv2.imwrite(str(tmp_path / "in" / rel), smooth_image(8, 8))
    items, _ = collect_inputs([str(tmp_path / "in" / "**" / "*.png")], tmp_path / "out")
    assert sorted(i.rel.as_posix() for i in items) == ["a.png", "sub/c.png"]
    items, _ = collect_inputs([tmp_path / "in" / "b.jpg"], tmp_path / "out")
    assert [i.rel.as_posix() for i in items] == ["b.jpg"]


def test_shards_partition_the_inputs(monkeypatch):
    rels = [Path(f"dir{i % 7}/img{i}.png") for i in range(500)]
    parts = [{r for r in rels if in_shard(r, k, 4)} for k in range(4)]
    assert set().union(*parts) == set(rels)
    assert sum(len(p) for p in parts) == len(rels)
    assert all(len(p) > 80 for p in parts)
    assert parse_shard("1/4") == (1, 4)
    with pytest.raises(PredictInputError):
        parse_shard("4/4")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert parse_shard(None) == (2, 3)


def test_sharded_runs_write_everything_once(tmp_path, binary_run):
    (tmp_path / "in").mkdir()
    for i in range(12):
        cv2.imwrite(str(tmp_path / "in" / f"{i:02d}.png"), smooth_image(32, 32, seed=i))
    predictor = Predictor.from_pretrained(binary_run, device="cpu")
    written = [predict_folder(predictor, [tmp_path / "in"], tmp_path / "out", num_workers=0, progress=False,
                              shard=(k, 3)).written for k in range(3)]
    assert sum(written) == 12
    assert len(list((tmp_path / "out" / "masks").glob("*.png"))) == 12
    assert len(list((tmp_path / "out").glob("manifest-*-of-3.csv"))) == 3


@pytest.mark.parametrize("in_channels", [1, 3])
def test_in_memory_arrays_of_any_channel_layout(tmp_path, in_channels):
    """predict() takes the same layouts read_image does: grey, grey+alpha, RGB, RGBA, 16-bit."""
    predictor = Predictor.from_pretrained(make_run(tmp_path / "run", in_channels=in_channels), device="cpu")
    rgb = smooth_image(40, 48)
    grey = rgb[:, :, 0]
    for array in (grey, np.dstack([grey, grey]), rgb, np.dstack([rgb, grey]), grey.astype(np.uint16) * 257):
        assert predictor.predict(array).shape == (40, 48)
