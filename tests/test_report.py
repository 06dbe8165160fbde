"""The run report, the comparison of runs, and the pictures written during training."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from segan.checkpointing import load_checkpoint
from segan.cli import main
from segan.config import Config
from segan.data import make_demo_dataset
from segan.metrics import Reliability
from segan.metrics.structure import LABELS, LOWER_IS_BETTER
from segan.report import ReportError, bootstrap_interval, verdict
from segan.training import train

from conftest import make_run, tiny_config, write

REPO = Path(__file__).resolve().parents[1]
RUN_FLAGS = ["--device", "cpu", "--num-workers", "0", "--no-progress", "--precision", "fp32"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """A GAN run and the same run with --adv-weight 0 (and a moving average of its weights), two
    epochs each on the demo data."""
    root = tmp_path_factory.mktemp("report")
    data = make_demo_dataset(root / "data", n_train=8, n_val=5, size=64, seed=2)
    gan = root / "gan"
    train(tiny_config(data, gan, train={"epochs": 2, "batch_size": 4, "progress_png": True}))
    plain = root / "plain"
    train(tiny_config(data, plain, loss={"adv_weight": 0.0}, train={"epochs": 2, "batch_size": 4, "ema_decay": 0.9}))
    return gan, plain


class References(HTMLParser):
    """Every src and href in a page, and the rows of its per-image table."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.rows: list[list[str]] = []
        self.in_table = False
        self.cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.links += [attrs[key] for key in ("src", "href") if key in attrs]
        if tag == "table" and attrs.get("id") == "per-image":
            self.in_table = True
        elif tag == "tr" and self.in_table:
            self.rows.append([])
        elif tag in ("td", "th") and self.in_table:
            self.cell = []

    def handle_endtag(self, tag):
        if tag == "table":
            self.in_table = False
        elif tag in ("td", "th") and self.cell is not None:
            self.rows[-1].append("".join(self.cell).strip())
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def parse(page: Path) -> References:
    references = References()
    references.feed(page.read_text())
    return references


def assert_self_contained(page: Path) -> References:
    """Every picture and link of the page is a file beside it; nothing is fetched from a network."""
    references = parse(page)
    text = page.read_text()
    assert not re.search(r"(src|href)=\"(https?:)?//", text) and "url(" not in text and "@import" not in text
    for link in references.links:
        assert (page.parent / unquote(link)).is_file(), link
    return references


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_training_writes_progress_png_and_validation_images_to_tensorboard(two_runs):
    gan, _ = two_runs
    progress = cv2.imread(str(gan / "progress.png"))
    assert progress is not None and progress.shape[1] > 1000  # six panels side by side
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(gan / "tensorboard"), size_guidance={"images": 0}).Reload()
    images = events.Images("val/images")
    assert len(images) == 2  # one per epoch
    grid = cv2.imdecode(np.frombuffer(images[-1].encoded_image_string, np.uint8), cv2.IMREAD_COLOR)
    assert grid.shape[0] == 4 * (160 + 4)  # four validation images, a row each: image | truth | prediction
    assert grid.shape[1] == 3 * 160
    logged = read_csv(gan / "metrics.csv")
    lr = tiny_config(gan, gan).train.lr  # cosine over 2 epochs: full, then half
    assert [float(row["lr/generator"]) for row in logged if row.get("lr/generator")] == pytest.approx([lr, lr / 2])


def test_run_report_is_self_contained_and_its_table_is_evaluates_csv(two_runs, tmp_path):
    gan, _ = two_runs
    assert main(["report", str(gan), "--out", str(tmp_path / "report"), *RUN_FLAGS]) == 0
    page = tmp_path / "report" / "index.html"
    references = assert_self_contained(page)
    assert {"training.png", "reliability.png"} <= set(references.links)
    pictures = [link for link in references.links if link.startswith("pictures/")]
    assert len(set(pictures)) == 5  # every validation image has its picture

    # the same figures as segan evaluate --model, run on its own
    assert main(["evaluate", "--model", str(gan), "--out", str(tmp_path / "evaluate"), *RUN_FLAGS[:2],
                 "--precision", "fp32"]) == 0
    expected = read_csv(tmp_path / "evaluate" / "per_image.csv")
    header, *rows = references.rows
    columns = [c for c in expected[0] if c not in ("prediction", "ground_truth")]
    assert header == columns + ["picture"]
    assert [row[:-1] for row in rows] == [[e[c] or "undefined" for c in columns] for e in expected]
    assert all(row[-1] == "view" for row in rows)
    assert "fp_pixels" in columns and "fn_pixels" in columns

    summary = json.loads((tmp_path / "report" / "report.json").read_text())
    evaluated = json.loads((tmp_path / "evaluate" / "metrics.json").read_text())
    assert summary["headline"] == evaluated["headline"]
    text = page.read_text()
    assert f"segan train --config {gan / 'config.yaml'} --out NEW_RUN" in text
    assert "loss.adv_warmup_epochs" in text  # a setting that differs from the defaults, with both values
    for figure, entry in evaluated["structure"]["per_class"]["foreground"].items():  # the structure table
        assert (f"<td>foreground</td><td>{LABELS[figure]}</td><td class=\"num\">{entry['mean']:.4f}</td>" in text
                if entry["mean"] is not None else LABELS[figure] in text)
    # a folder that holds other files is not a report's to fill or clear
    keep = write(tmp_path / "mine" / "evaluation" / "notes.png", [[0, 255]])
    assert main(["report", str(gan), "--out", str(tmp_path / "mine"), "--overwrite", *RUN_FLAGS]) == 2
    assert keep.is_file() and not (tmp_path / "mine" / "index.html").exists()


def test_reliability_matches_the_saved_probabilities(two_runs, tmp_path):
    """The report's calibration error, recomputed by hand from predict's probability maps."""
    gan, _ = two_runs
    assert main(["report", str(gan), "--out", str(tmp_path / "report"), *RUN_FLAGS]) == 0
    reported = json.loads((tmp_path / "report" / "report.json").read_text())["reliability"]
    main(["evaluate", "--model", str(gan), "--out", str(tmp_path / "e"), *RUN_FLAGS[:2], "--precision", "fp32"])
    rows = read_csv(tmp_path / "e" / "per_image.csv")
    edges = np.linspace(0, 1, 16)
    confidence, truth = [], []
    assert main(["predict", "--model", str(gan), "--input", str(Path(rows[0]["ground_truth"]).parents[1] / "images"),
                 "--output", str(tmp_path / "p"), "--save-probs", *RUN_FLAGS]) == 0
    for row in rows:
        probs = np.load(tmp_path / "p" / "probs" / f"{row['name']}.npy").astype(np.float32)[0]
        confidence.append(probs.ravel())
        truth.append((cv2.imread(row["ground_truth"], cv2.IMREAD_GRAYSCALE) > 127).ravel())
    confidence, truth = np.concatenate(confidence), np.concatenate(truth)
    bins = np.clip(np.digitize(confidence, edges) - 1, 0, 14)
    ece = sum((bins == b).sum() / len(bins) * abs(truth[bins == b].mean() - confidence[bins == b].mean())
              for b in range(15) if (bins == b).any())
    # float16 storage of the saved maps moves a few pixels across bin edges
    assert reported["ece"] == pytest.approx(ece, abs=2e-3)
    assert reported["pixels"] == len(confidence)


def test_comparison_paired_mean_is_the_difference_of_per_image_means(two_runs, tmp_path):
    gan, plain = two_runs
    out = tmp_path / "compare"
    assert main(["report", str(gan), str(plain), "--out", str(out), *RUN_FLAGS]) == 0
    assert_self_contained(out / "index.html")
    figures = json.loads((out / "report.json").read_text())["comparisons"][0]
    dice = {run: np.array([float(r["dice"]) for r in sorted(read_csv(out / "evaluation" / run / "per_image.csv"),
                                                               key=lambda r: r["name"])])
            for run in ("gan", "plain")}
    assert figures["images"] == 5
    assert figures["mean_difference"] == pytest.approx(dice["plain"].mean() - dice["gan"].mean(), abs=1e-12)
    low, high = figures["interval_95"]
    assert low <= figures["mean_difference"] <= high
    assert figures["better"] + figures["worse"] + figures["equal"] == 5
    # Each structure metric: the mean of the per-image differences of evaluate's own columns.
    rows = {run: {r["name"]: r for r in read_csv(out / "evaluation" / run / "per_image.csv")} for run in ("gan", "plain")}
    structure = {row["figure"]: row for row in figures["structure"]}
    assert list(structure) == ["hd", "hd95", "assd", "nsd", "boundary_f1", "boundary_iou", "cldice", "betti0_error",
                               "betti1_error"]
    for figure, row in structure.items():
        column = f"{figure}_foreground"
        pairs = [(float(rows["gan"][n][column]), float(rows["plain"][n][column])) for n in sorted(rows["gan"])
                 if rows["gan"][n][column] and rows["plain"][n][column]]
        assert row["images"] == len(pairs) and row["lower_is_better"] == (figure in LOWER_IS_BETTER)
        # per_image.csv rounds to 6 decimals
        assert row["mean_difference"] == pytest.approx(np.mean([b - a for a, b in pairs]), abs=1e-6)
        assert row["verdict"] == verdict(tuple(row["interval_95"]), row["lower_is_better"])
    assert "HD95 (px) (lower is better)" in (out / "index.html").read_text()
    # an existing comparison is kept unless --overwrite
    before = (out / "index.html").read_bytes()
    assert main(["report", str(gan), str(plain), "--out", str(out), *RUN_FLAGS]) == 2
    assert (out / "index.html").read_bytes() == before


def test_multiclass_report_has_class_bars_confusion_and_a_legend(tmp_path):
    classes = ("background", "road", "pole")
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    for i in range(3):
        mask = np.zeros((64, 80), np.uint8)
        mask[30:, :] = 1
        mask[:, 40 + i:43 + i] = 2  # a thin class
        mask[0, 0] = 255  # not scored
        write(root / "validation" / "images" / f"{i}.png", rng.integers(0, 255, (64, 80, 3)))
        write(root / "validation" / "masks" / f"{i}.png", mask)
        write(root / "train" / "images" / f"{i}.png", rng.integers(0, 255, (64, 80, 3)))
        write(root / "train" / "masks" / f"{i}.png", mask)
    run = make_run(tmp_path / "run", classes=classes)
    assert main(["report", str(run), "--data", str(root), *RUN_FLAGS]) == 0
    page = run / "report" / "index.html"
    references = assert_self_contained(page)
    assert {"classes.png", "confusion.png", "reliability.png"} <= set(references.links)
    assert "training.png" not in references.links and "has no metrics.csv" in page.read_text()
    header = references.rows[0]
    assert "wrong_pixels" in header and "fp_pixels" not in header
    reliability = json.loads((run / "report" / "report.json").read_text())["reliability"]
    assert reliability["pixels"] == 3 * (64 * 80 - 1)
    assert reliability["frequency_name"] == "observed accuracy"


def test_reliability_bins_and_calibration_error_by_hand():
    reliability = Reliability(bins=2)
    # foreground probabilities 0.2, 0.2, 0.8, 0.8 with truth 0, 1, 1, 1
    reliability.add(np.array([[[0.2, 0.2, 0.8, 0.8]]]), np.array([[0, 1, 1, 1]]))
    result = reliability.result()
    assert [b["pixels"] for b in result["bins"]] == [2, 2]
    assert [b["frequency"] for b in result["bins"]] == [0.5, 1.0]
    assert result["ece"] == pytest.approx(0.5 * abs(0.5 - 0.2) + 0.5 * abs(1.0 - 0.8))
    multi = Reliability(bins=2)
    # top-class probability 0.7 (right) and 0.6 (wrong); the third pixel is not scored
    probs = np.array([[[0.7, 0.4, 0.9]], [[0.3, 0.6, 0.1]]])
    multi.add(probs, np.array([[0, 0, 1]]), scored=np.array([[True, True, False]]))
    assert multi.result()["ece"] == pytest.approx(abs(0.5 - 0.65))


def test_bootstrap_interval_covers_the_mean_and_narrows_with_more_images():
    rng = np.random.default_rng(1)
    small, large = rng.normal(0.02, 0.05, 20), rng.normal(0.02, 0.05, 2000)
    low, high = bootstrap_interval(small)
    assert low < small.mean() < high
    low_large, high_large = bootstrap_interval(large)
    assert (high_large - low_large) < (high - low) / 5  # ~ sqrt(100) narrower
    assert bootstrap_interval(small) == (low, high)  # seeded: a report is reproducible


def test_verdict_reads_the_interval_on_the_figures_good_side():
    assert verdict((0.01, 0.03)) == "better" and verdict((-0.03, -0.01)) == "worse"
    assert verdict((0.01, 0.03), lower_is_better=True) == "worse"  # an error that grew
    assert verdict((-0.03, -0.01), lower_is_better=True) == "better"
    assert verdict((-0.01, 0.02)) == verdict((-0.01, 0.02), lower_is_better=True) == "not distinguishable"
    assert verdict((0.0, 0.02)) == "not distinguishable"  # an interval touching 0 does not leave it out


def test_comparison_of_runs_with_other_classes_is_refused(tmp_path):
    data = make_demo_dataset(tmp_path / "data", n_train=2, n_val=2, size=64)
    binary = make_run(tmp_path / "binary")
    multi = make_run(tmp_path / "multi", classes=("a", "b", "c"))
    from segan.report import compare_runs
    with pytest.raises(ReportError, match="different classes"):
        compare_runs([binary, multi], data, out=tmp_path / "out", device="cpu", num_workers=0, progress=False)
    other = make_run(tmp_path / "other")
    for run, root in ((binary, data), (other, tmp_path / "elsewhere")):
        config = Config.load(run / "config.yaml")
        config.data.root = str(root)
        config.save(run / "config.yaml")
    with pytest.raises(ReportError, match="different data folders"):
        compare_runs([binary, other], out=tmp_path / "out", device="cpu", num_workers=0, progress=False)
    assert not (tmp_path / "out").exists()  # refused before anything was written


@pytest.mark.skipif(not any(shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")),
                    reason="no Chromium on this machine (apt-get install chromium) to render the report")
def test_report_renders_with_its_pictures_in_headless_chromium(two_runs, tmp_path):
    gan, _ = two_runs
    assert main(["report", str(gan), "--out", str(tmp_path / "report"), *RUN_FLAGS]) == 0
    shot = tmp_path / "shot.png"
    done = subprocess.run(["bash", str(REPO / "scripts" / "screenshot.sh"), str(tmp_path / "report" / "index.html"),
                           str(shot), "1200", "3000"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    pixels = cv2.cvtColor(cv2.imread(str(shot)), cv2.COLOR_BGR2RGB).reshape(-1, 3).astype(int)
    assert len(pixels) == 1200 * 3000

    def near(colour, tolerance=40):
        return int((np.abs(pixels - colour).max(axis=1) < tolerance).sum())
    # the pictures are there: the error maps' false-positive orange and the reliability curve's colour
    assert near((230, 159, 0)) > 500
    assert near((213, 94, 0)) > 50


def test_image_names_that_need_escaping_link_to_their_pictures(tmp_path):
    root = tmp_path / "data"
    rng = np.random.default_rng(3)
    for split in ("train", "validation"):
        for name in ("a #1", "b%2", "c'3 & <d>"):
            mask = np.zeros((64, 64), np.uint8)
            mask[20:40, 20:40] = 255
            write(root / split / "images" / f"{name}.png", rng.integers(0, 255, (64, 64, 3)))
            write(root / split / "masks" / f"{name}.png", mask)
    run = make_run(tmp_path / "run")
    assert main(["report", str(run), "--data", str(root), *RUN_FLAGS]) == 0
    references = assert_self_contained(run / "report" / "index.html")
    assert sorted(row[0] for row in references.rows[1:]) == ["a #1", "b%2", "c'3 & <d>"]
    assert len([link for link in references.links if link.startswith("pictures/")]) >= 3


def test_moving_average_is_validated_checkpointed_and_the_better_weights_exported(two_runs):
    # train.ema_decay: the average is validated beside the weights every epoch, and the better
    # of the two at the best epoch is exported
    _, run = two_runs

    with (run / "metrics.csv").open(newline="") as handle:
        epochs = [row for row in csv.DictReader(handle) if row.get("val/ema_iou")]
    assert len(epochs) == 2
    for row in epochs:  # an epoch scores as its better weights
        assert float(row["val/iou"]) == pytest.approx(max(float(row["val/raw_iou"]), float(row["val/ema_iou"])))
        assert float(row["val/ema_chosen"]) == float(float(row["val/ema_iou"]) > float(row["val/raw_iou"]))

    summary = json.loads((run / "summary.json").read_text())
    assert summary["ema"]["decay"] == 0.9
    exported = summary["ema"]["exported"]
    assert exported == ("ema" if summary["ema"]["ema_iou"] > summary["ema"]["raw_iou"] else "raw")
    assert summary["best_val_iou"] == max(summary["ema"]["ema_iou"], summary["ema"]["raw_iou"])

    best = load_checkpoint(run / "checkpoints" / "best.ckpt")["state_dict"]
    prefix = "generator_ema.module." if exported == "ema" else "generator."
    weights = load_file(run / "generator" / "model.safetensors")
    assert weights and all(torch.equal(tensor, best[prefix + name].contiguous()) for name, tensor in weights.items())
    # The average is its own set of weights, in the checkpoint that --resume reads.
    last = load_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"]
    name = next(name for name, tensor in weights.items() if tensor.is_floating_point() and name.endswith("weight"))
    assert not torch.equal(last["generator_ema.module." + name], last["generator." + name])
