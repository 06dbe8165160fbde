"""segan.evaluation and `segan evaluate` on tiny mask folders, against hand-computed figures."""

import csv
import json
import math

import cv2
import numpy as np
import pytest
import torch

from segan.cli import main
from segan.evaluation import EvaluationError, evaluate_folders, format_table, write_report

from conftest import write

# Like segan predict's multi-class output: class indices in a palette PNG.
PALETTE = [0, 0, 0, 230, 25, 75, 60, 180, 75] + [255] * (256 * 3 - 9)


@pytest.fixture
def binary_folders(tmp_path):
    """a: truth 2x2 square, prediction 2x3 (TP 4, FP 2); b: empty truth and prediction."""
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    truth = np.zeros((4, 4)); truth[:2, :2] = 255
    guess = np.zeros((4, 4)); guess[:2, :3] = 255
    write(gt / "a.png", truth); write(pred / "a.png", guess)
    write(gt / "b.png", np.zeros((4, 4))); write(pred / "b.png", np.zeros((4, 4)))
    return pred, gt


@pytest.fixture
def multiclass_folders(tmp_path):
    """3 classes, ignore 255 in truth, predictions as palette PNGs in a sub-folder."""
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    write(gt / "sub" / "x.png", [[0, 1, 1, 255], [2, 2, 0, 0]])
    write(pred / "sub" / "x.png", [[0, 1, 2, 1], [2, 0, 0, 0]], palette=PALETTE)
    write(gt / "y.png", [[0, 0, 1, 1], [255, 255, 1, 0]])
    write(pred / "y.png", [[0, 1, 1, 1], [2, 2, 1, 0]], palette=PALETTE)
    return pred, gt


def test_binary_figures_by_hand(binary_folders):
    result = evaluate_folders(*binary_folders)
    report = result.report
    assert result.names == ["a", "b"] and report["images"] == 2 and report["scored_pixels"] == 32
    fg, bg = report["per_class"]["foreground"], report["per_class"]["background"]
    assert fg["iou"] == pytest.approx(4 / 6) and fg["dice"] == pytest.approx(8 / 10)
    assert fg["precision"] == pytest.approx(4 / 6) and fg["recall"] == pytest.approx(1.0)
    assert fg["images_scored"] == 1 and fg["iou_per_image"] == pytest.approx(4 / 6)  # b is undefined, left out
    assert bg["iou"] == pytest.approx(26 / 28)
    assert bg["iou_per_image"] == pytest.approx((10 / 12 + 1) / 2)
    assert report["headline"]["iou"] == pytest.approx(4 / 6)
    assert report["macro_with_background"]["iou"] == pytest.approx((26 / 28 + 4 / 6) / 2)
    assert report["macro_without_background"]["iou"] == pytest.approx(4 / 6)
    rows = result.per_image()
    assert [r["name"] for r in rows] == ["a", "b"] and math.isnan(rows[1]["iou"])


def test_multiclass_with_ignore_and_palette_predictions(multiclass_folders):
    result = evaluate_folders(*multiclass_folders, class_names=["bg", "road", "car"])
    assert result.names == ["sub/x", "y"]
    c = result.confusions.numpy()
    # sub/x: scored pixels (truth, pred): (0,0) (1,1) (1,2) (2,2) (2,0) (0,0) (0,0); the 255 pixel is left out.
    np.testing.assert_array_equal(c[0], [[3, 0, 0], [0, 1, 1], [1, 0, 1]])
    # y: (0,0) (0,1) (1,1) (1,1) (1,1) (0,0); two ignored.
    np.testing.assert_array_equal(c[1], [[2, 1, 0], [0, 3, 0], [0, 0, 0]])
    report = result.report
    car = report["per_class"]["car"]
    assert car["iou"] == pytest.approx(1 / 3) and car["images_scored"] == 1  # absent from y: undefined there
    road = report["per_class"]["road"]
    assert road["iou"] == pytest.approx(4 / 6)  # TP 4, FP 1, FN 1
    assert road["iou_per_image"] == pytest.approx((1 / 2 + 3 / 4) / 2)
    bg_iou = 5 / 7  # TP 5, FP 1 (car->bg), FN 1 (bg->road)
    assert report["headline"]["scope"] == "macro_with_background"
    assert report["headline"]["iou"] == pytest.approx((bg_iou + 4 / 6 + 1 / 3) / 3)
    assert report["macro_without_background"]["iou"] == pytest.approx((4 / 6 + 1 / 3) / 2)
    assert result.ignore_index == 255


def test_write_report_files(binary_folders, tmp_path):
    result = evaluate_folders(*binary_folders)
    paths = write_report(result, tmp_path / "out")
    text = paths["metrics"].read_text()
    def no_nan(constant):
        raise AssertionError(f"{constant} in metrics.json")
    data = json.loads(text, parse_constant=no_nan)
    assert data["per_class"]["foreground"]["iou"] == pytest.approx(4 / 6)
    assert json.loads(text)["macro_with_background"]["classes_scored"] == 2
    assert data["headline"]["iou"] == pytest.approx(4 / 6)
    assert "absent_class" in data["definitions"] and data["gt_dir"] == str(binary_folders[1])
    with paths["per_image"].open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["name"] for r in rows] == ["a", "b"]
    assert float(rows[0]["iou"]) == pytest.approx(4 / 6) and rows[1]["iou"] == ""
    assert float(rows[1]["iou_background"]) == 1.0 and rows[0]["ground_truth"].endswith("a.png")
    table = format_table(result)
    assert "foreground" in table and "macro without background" in table and "0.6667" in table


def test_worst_images_come_first(tmp_path):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    for name, width in (("good", 2), ("bad", 4), ("mid", 3)):
        truth = np.zeros((2, 4)); truth[:, :2] = 255
        guess = np.zeros((2, 4)); guess[:, :width] = 255
        write(gt / f"{name}.png", truth); write(pred / f"{name}.png", guess)
    assert [r["name"] for r in evaluate_folders(pred, gt).per_image()] == ["bad", "mid", "good"]


def test_pairs_by_relative_stem_across_suffixes_and_reads_predict_output(tmp_path):
    gt = tmp_path / "data" / "validation"
    write(gt / "images" / "a.png", np.zeros((2, 2, 3)))
    write(gt / "masks" / "a.png", [[0, 255], [0, 0]])
    out = tmp_path / "predicted"
    write(out / "masks" / "a.bmp", [[0, 255], [255, 0]])
    (out / "manifest.csv").write_text("input,status\n")
    write(out / "overlays" / "a.png", np.zeros((2, 2, 3)))  # not a mask: predict's masks/ is used
    result = evaluate_folders(out, gt)
    assert result.pred_dir == out / "masks" and result.gt_dir == gt / "masks"
    assert result.report["headline"]["iou"] == pytest.approx(1 / 2)


def test_region_of_interest_limits_scored_pixels(binary_folders, tmp_path):
    roi = tmp_path / "roi"
    keep = np.zeros((4, 4)); keep[:, :2] = 255  # the left half: a has no false positives there
    write(roi / "a.png", keep); write(roi / "b.png", keep)
    result = evaluate_folders(*binary_folders, roi_dir=roi)
    assert result.report["scored_pixels"] == 16
    assert result.report["headline"]["iou"] == pytest.approx(1.0)


def test_duplicate_stems_and_bad_prediction_values_fail(tmp_path):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    write(gt / "a.png", [[0, 1]]); write(pred / "a.png", [[0, 1]]); write(pred / "a.bmp", [[0, 1]])
    with pytest.raises(EvaluationError, match="same name"):
        evaluate_folders(pred, gt)
    (pred / "a.bmp").unlink()
    write(pred / "a.png", [[0, 255]])
    with pytest.raises(EvaluationError, match="not class indices"):
        evaluate_folders(pred, gt, num_classes=3)


# --- mask values are never guessed (issue 20) -----------------------------------------------------


def test_binary_prediction_storing_foreground_as_2_fails_naming_file_and_value(binary_folders, tmp_path, capsys):
    pred, gt = binary_folders
    guess = np.zeros((4, 4)); guess[:2, :3] = 2  # a's prediction with foreground stored as 2, not 255
    write(pred / "a.png", guess)
    with pytest.raises(EvaluationError) as caught:
        evaluate_folders(pred, gt)
    assert caught.value.problems == [
        f"prediction {pred / 'a.png'}: values [2] cannot be placed (2: 6 pixels); a binary prediction is 0/1, or "
        "0/255 thresholded at 127 (segan predict writes 0/255); if the predictions are multi-class, give "
        "--classes with one name per class"]
    out = tmp_path / "ev"
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("segan: error: 1 problem(s) in 2 prediction/ground-truth pairs; nothing was scored:")
    assert f"prediction {pred / 'a.png'}: values [2] cannot be placed (2: 6 pixels)" in err
    assert not out.exists()  # no report of IoU 0.0 is written


def test_every_unplaceable_file_and_size_mismatch_is_listed_at_once(tmp_path):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    for name in "abcdef":
        write(gt / f"{name}.png", [[0, 255], [0, 0]]); write(pred / f"{name}.png", [[0, 255], [0, 0]])
    write(pred / "a.png", [[0, 2], [2, 0]])
    write(pred / "b.png", [[0, 5], [7, 7]])
    write(gt / "c.png", [[0, 1], [7, 0]])  # ground truth: 0/1 with a stray 7
    write(pred / "d.png", np.zeros((3, 2)))
    write(gt / "e.png", np.zeros((2, 5)))
    with pytest.raises(EvaluationError) as caught:
        evaluate_folders(pred, gt)
    problems = caught.value.problems
    assert len(problems) == 5
    assert problems[0].startswith(f"prediction {pred / 'a.png'}: values [2] cannot be placed (2: 2 pixels); ")
    assert problems[1].startswith(f"prediction {pred / 'b.png'}: values [5, 7] cannot be placed "
                                  "(5: 1 pixel, 7: 2 pixels); ")
    assert problems[2].startswith(f"ground truth {gt / 'c.png'}: mask values [7] cannot be placed (7: 1 pixel): ")
    assert "--allow-unknown-values" in problems[2]
    assert problems[3] == (f"prediction {pred / 'd.png'} is 2x3 (WxH) but ground truth {gt / 'd.png'} is 2x2; "
                           "predict at the ground truth's size")
    assert problems[4] == (f"prediction {pred / 'e.png'} is 2x2 (WxH) but ground truth {gt / 'e.png'} is 5x2; "
                           "predict at the ground truth's size")
    assert all(problem in str(caught.value) for problem in problems)


def test_multiclass_prediction_holding_the_ignore_value_is_refused(multiclass_folders):
    pred, gt = multiclass_folders
    write(pred / "y.png", [[0, 1, 255, 1], [2, 9, 1, 0]], palette=PALETTE)
    with pytest.raises(EvaluationError) as caught:
        evaluate_folders(pred, gt, class_names=["bg", "road", "car"])
    assert caught.value.problems == [f"prediction {pred / 'y.png'}: values [9, 255] are not class indices "
                                     "(9: 1 pixel, 255: 1 pixel); a prediction must give every pixel a class "
                                     "index (0-2)"]


def test_allow_unknown_values_leaves_those_truth_pixels_unscored_and_warns(binary_folders, caplog):
    pred, gt = binary_folders
    truth = np.zeros((4, 4)); truth[:2, :2] = 1; truth[3, :] = 7  # a 0/1 truth with a row of 7
    write(gt / "a.png", truth)
    with pytest.raises(EvaluationError, match=r"mask values \[7\] cannot be placed \(7: 4 pixels\)"):
        evaluate_folders(pred, gt)
    with caplog.at_level("WARNING", logger="segan.evaluation"):
        result = evaluate_folders(pred, gt, allow_unknown_values=True)
    assert result.report["scored_pixels"] == 32 - 4 and result.ignore_index == 255
    assert result.confusions[0].tolist() == [[6, 2], [0, 4]]  # row 3 (4 pixels) left out
    assert f"{gt / 'a.png'} (7: 4 pixels)" in caplog.text and "allow_unknown_values" in caplog.text


# --- the command line ---------------------------------------------------------------------------


def test_cli_success_prints_table_and_writes_files(binary_folders, tmp_path, capsys):
    pred, gt = binary_folders
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(tmp_path / "ev")]) == 0
    out = capsys.readouterr().out
    assert "headline (foreground class 'foreground')" in out and "0.6667" in out
    assert json.loads(out.strip().splitlines()[-1])["iou"] == pytest.approx(4 / 6)
    assert (tmp_path / "ev" / "metrics.json").is_file() and (tmp_path / "ev" / "per_image.csv").is_file()


def test_cli_default_out_is_beside_the_predictions(binary_folders, tmp_path, capsys):
    pred, gt = binary_folders
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt)]) == 0
    assert (tmp_path / "evaluation" / "metrics.json").is_file()


def test_cli_multiclass_names(multiclass_folders, tmp_path, capsys):
    pred, gt = multiclass_folders
    code = main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--classes", "bg", "road", "car",
                 "--out", str(tmp_path / "ev")])
    assert code == 0
    data = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert data["classes"] == ["bg", "road", "car"] and data["per_class"]["car"]["images_scored"] == 1


def test_cli_missing_prediction_is_an_error_naming_it(binary_folders, tmp_path, capsys):
    pred, gt = binary_folders
    write(gt / "c_missing.png", np.zeros((4, 4)))
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(tmp_path / "ev")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("segan: error:") and "c_missing" in err and "--allow-missing" in err
    code = main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(tmp_path / "ev"), "--allow-missing"])
    assert code == 0
    assert "c_missing" in capsys.readouterr().out
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["missing_predictions"] == ["c_missing"]


def test_cli_extra_prediction_is_reported_not_scored(binary_folders, tmp_path, capsys):
    pred, gt = binary_folders
    write(pred / "extra.png", np.zeros((4, 4)))
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(tmp_path / "ev")]) == 0
    assert "extra" in capsys.readouterr().out
    data = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert data["unmatched_predictions"] == ["extra"] and data["images"] == 2


def test_cli_nothing_pairs(tmp_path, capsys):
    write(tmp_path / "pred" / "p1.png", np.zeros((2, 2)))
    write(tmp_path / "gt" / "g1.png", np.zeros((2, 2)))
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")]) == 2
    err = capsys.readouterr().err
    assert "no prediction" in err and "p1" in err and "g1" in err


def test_cli_size_mismatch_names_both_files(tmp_path, capsys):
    write(tmp_path / "pred" / "a.png", np.zeros((2, 3)))
    write(tmp_path / "gt" / "a.png", np.zeros((2, 2)))
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "pred" / "a.png") in err and str(tmp_path / "gt" / "a.png") in err and "3x2" in err


@pytest.mark.parametrize("argv, message", [
    (["--gt", "GT"], "needs --model RUN, or --pred DIR"),
    (["--pred", "nowhere", "--gt", "GT"], "not found"),
    (["--pred", "PRED", "--gt", "GT", "--classes", "only"], "at least 2 classes"),
])
def test_cli_bad_arguments(binary_folders, capsys, argv, message):
    pred, gt = binary_folders
    argv = [str(pred) if a == "PRED" else str(gt) if a == "GT" else a for a in argv]
    assert main(["evaluate", *argv]) == 2
    assert message in capsys.readouterr().err


def test_cli_bad_mask_values(tmp_path, capsys):
    write(tmp_path / "pred" / "a.png", [[0, 1]])
    write(tmp_path / "gt" / "a.png", [[0, 7]])
    code = main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
                 "--classes", "a", "b", "c"])
    assert code == 2
    assert "[7]" in capsys.readouterr().err


def test_undefined_figures_are_null_in_json_and_dashes_in_the_table(tmp_path):
    write(tmp_path / "pred" / "empty.png", np.zeros((2, 2)))
    write(tmp_path / "gt" / "empty.png", np.zeros((2, 2)))
    result = evaluate_folders(tmp_path / "pred", tmp_path / "gt", class_names=["background", "lesion"])
    data = json.loads(write_report(result, tmp_path / "ev")["metrics"].read_text())
    assert data["headline"]["iou"] is None and data["per_class"]["lesion"]["dice"] is None
    assert data["per_class"]["background"]["iou"] == 1.0
    assert "   -  " in format_table(result)


@pytest.mark.slow
def test_evaluate_model_equals_predict_then_evaluate_on_kvasir(tmp_path):
    """Both routes of issue 4 on real Kvasir-SEG validation images give identical figures."""
    from conftest import make_run, shared_dataset
    from segan.batch_predict import predict_folder
    from segan.evaluation import evaluate_folders, evaluate_model
    from segan.inference import Predictor
    from segan.metrics import json_safe

    kvasir = shared_dataset("kvasir-seg")
    subset = tmp_path / "kvasir"
    for kind in ("images", "masks"):
        (subset / "validation" / kind).mkdir(parents=True)
    for image in sorted((kvasir / "validation" / "images").glob("*.jpg"))[:10]:
        for kind in ("images", "masks"):
            (subset / "validation" / kind / image.name).symlink_to(kvasir / "validation" / kind / image.name)
    run = make_run(tmp_path / "run", resize="resize", size=64)

    direct = evaluate_model(run, subset, "validation", tmp_path / "direct", device="cpu", num_workers=0,
                            progress=False)
    predict_folder(Predictor.from_pretrained(run, device="cpu"), [subset / "validation" / "images"],
                   tmp_path / "pred", num_workers=0, progress=False)
    two_step = evaluate_folders(tmp_path / "pred", subset / "validation" / "masks")
    assert direct.names == two_step.names and len(direct.names) == 10
    assert torch.equal(direct.confusions, two_step.confusions)
    assert json_safe(direct.report) == json_safe(two_step.report)
    assert (tmp_path / "direct" / "metrics.json").is_file() and (tmp_path / "direct" / "per_image.csv").is_file()
    # masks are scored at the ground truth's own size (352 x 352), not the model's 64 x 64
    assert int(direct.confusions[0].sum()) == 352 * 352


def test_threshold_sweep_is_chosen_on_val_and_matches_a_real_evaluation(tmp_path):
    from conftest import make_run
    from segan.data import make_demo_dataset, read_mask
    from segan.evaluation import evaluate_model, sweep_threshold

    data = make_demo_dataset(tmp_path / "demo", n_train=2, n_val=6, size=64, seed=3)
    (data / "test").symlink_to(data / "validation", target_is_directory=True)
    run = make_run(tmp_path / "run", resize="resize", size=64)
    sweep = sweep_threshold(run, data, device="cpu", num_workers=0, progress=False)
    out = run / "evaluation" / "val"
    assert json.loads((out / "threshold_sweep.json").read_text()) == sweep

    # Every row by brute force from the saved probability maps: a pixel is foreground at k/100
    # when its probability is at least k/100, counted image by image (the sweep uses histograms).
    scaled = {p.stem: np.load(p)[0].astype(np.float32) * 100 for p in (out / "predictions" / "probs").glob("*.npy")}
    truths = {p.stem: read_mask(p) for p in (data / "validation" / "masks").glob("*.png")}
    assert sorted(scaled) == sorted(truths) and len(truths) == 6
    expected = []
    for k in range(1, 100):
        tp = fp = fn = 0
        for stem, truth in truths.items():
            foreground = scaled[stem] >= k
            tp += int((foreground & (truth == 1)).sum())
            fp += int((foreground & (truth == 0)).sum())
            fn += int((~foreground & (truth == 1)).sum())
        expected.append({"threshold": k / 100, "iou": tp / (tp + fp + fn), "dice": 2 * tp / (2 * tp + fp + fn)})
    assert sweep["thresholds"] == expected
    chosen = max(expected, key=lambda row: row["dice"])  # the first of equal best rows
    without_structure = {key: {k: v for k, v in sweep[key].items() if k != "structure"} for key in ("best", "at_0.5")}
    assert without_structure["best"] == chosen and sweep["best_threshold"] == chosen["threshold"]
    assert without_structure["at_0.5"] == expected[49]
    # The structure figures at both thresholds are what scoring those thresholded maps as files gives.
    for key in ("best", "at_0.5"):
        threshold = sweep[key]["threshold"]
        masks = tmp_path / f"masks-{key}"
        masks.mkdir()
        for path in (out / "predictions" / "probs").glob("*.npy"):
            probs = np.load(path)[0].astype(np.float32)
            cv2.imwrite(str(masks / f"{path.stem}.png"), (probs >= threshold).astype(np.uint8) * 255)
        files = evaluate_folders(masks, data / "validation" / "masks")
        means = {figure: entry["mean"] for figure, entry in files.report["structure"]["per_class"]["foreground"].items()}
        assert sweep[key]["structure"] == means
        assert set(means) == {"hd", "hd95", "assd", "nsd", "boundary_f1", "boundary_iou", "cldice", "betti0_error",
                              "betti1_error"}
    best = sweep["best_threshold"]
    scored = evaluate_model(run, data, "val", tmp_path / "check", threshold=best, device="cpu", num_workers=0,
                            progress=False)
    # histogram bins of float16 maps against a direct pass: equal up to pixels on a bin edge
    assert scored.report["headline"]["dice"] == pytest.approx(sweep["best"]["dice"], abs=2e-3)

    code = main(["evaluate", "--model", str(run), "--data", str(data), "--split", "val", "--sweep-threshold"])
    assert code == 2
    assert main(["evaluate", "--model", str(run), "--data", str(data), "--split", "test", "--sweep-threshold",
                 "--device", "cpu"]) == 0
    report = json.loads((run / "evaluation" / "test" / "metrics.json").read_text())
    assert report["headline"]["dice"] == pytest.approx(sweep["best"]["dice"], abs=2e-3)  # test = val copy here


@pytest.mark.slow
def test_multiclass_scoring_on_real_camvid_with_void_ignored(tmp_path):
    """CamVid class-index masks (0-10, void = 11 ignored) against shifted predictions, checked with scikit-learn."""
    from sklearn.metrics import jaccard_score
    from conftest import shared_dataset

    camvid = shared_dataset("camvid")
    names = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian",
             "Bicyclist"]
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    truths, preds = [], []
    for path in sorted((camvid / "valannot").glob("*.png"))[:4]:
        truth = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert truth.max() == 11  # void is present, so the ignore rule is exercised
        pred = np.roll(truth, 7, axis=1)
        pred[pred == 11] = 3  # a prediction gives every pixel a class
        (tmp_path / "gt" / path.name).symlink_to(path)
        cv2.imwrite(str(tmp_path / "pred" / path.name), pred)
        truths.append(truth.ravel())
        preds.append(pred.ravel())
    result = evaluate_folders(tmp_path / "pred", tmp_path / "gt", class_names=names, ignore_index=11)
    truth, pred = np.concatenate(truths), np.concatenate(preds)
    kept = truth != 11
    present = np.isin(np.arange(11), np.concatenate([truth[kept], pred[kept]]))
    expected = jaccard_score(truth[kept], pred[kept], labels=list(range(11)), average=None, zero_division=0)
    report = result.report
    for index, name in enumerate(names):
        got = report["per_class"][name]["iou"]
        if present[index]:
            assert got == pytest.approx(expected[index], abs=1e-6), name
        else:  # absent from truth and prediction: undefined, not 0
            assert got is None or np.isnan(got), name
    assert report["scored_pixels"] == int(kept.sum())
    assert report["headline"]["iou"] == pytest.approx(expected[present].mean(), abs=1e-6)


def squares(folder, shifts, size=40):
    """One binary mask per shift: a 16-pixel square moved `shift` pixels right (0/255 PNGs)."""
    for i, shift in enumerate(shifts):
        mask = np.zeros((size, size), np.uint8)
        if shift is not None:
            mask[10:26, 10 + shift:26 + shift] = 255
        write(folder / f"{i}.png", mask)
    return folder


def test_structure_figures_per_image_and_their_summary(tmp_path, capsys):
    """Three images: the square shifted by 1 and by 3 pixels, and one whose prediction misses it: the
    Hausdorff distances are 1, 3 and the diagonal, and the summary says one was one-sided."""
    truth, pred = squares(tmp_path / "gt", [0, 0, 0]), squares(tmp_path / "pred", [1, 3, None])
    result = evaluate_folders(pred, truth)
    summary = result.report["structure"]["per_class"]["foreground"]
    diagonal = math.hypot(40, 40)
    assert summary["hd"] == {"mean": (1 + 3 + diagonal) / 3, "median": 3.0, "defined": 3, "one_sided": 1}
    assert summary["cldice"]["defined"] == 3 and summary["nsd"]["median"] > 0
    rows = {row["name"]: row for row in result.per_image()}
    assert (rows["0"]["hd_foreground"], rows["1"]["hd_foreground"], rows["2"]["hd_foreground"]) == (1, 3, diagonal)
    assert (rows["0"]["one_sided_foreground"], rows["2"]["one_sided_foreground"]) == (0.0, 1.0)
    assert "structure, mean over images where defined (NSD within 2 px" in format_table(result)

    assert main(["evaluate", "--pred", str(pred), "--gt", str(truth), "--out", str(tmp_path / "e"),
                 "--metrics", "none"]) == 0
    report = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert "structure" not in report and "structure," not in capsys.readouterr().out
    assert main(["evaluate", "--pred", str(pred), "--gt", str(truth), "--metrics", "none", "distance"]) == 2
    assert "--metrics none cannot be combined" in capsys.readouterr().err


def test_multiclass_structure_skips_the_background_and_clDice():
    from segan.metrics import structure
    truth = np.zeros((30, 30), np.uint8)
    truth[5:15, 5:15], truth[18:25, 18:25] = 1, 2
    scores = structure.image_scores(truth, truth, None, ["bg", "a", "b"], structure.FAMILIES)
    assert list(scores) == ["a", "b"] and all("cldice" not in figures and "vi" not in figures
                                              for figures in scores.values())
    assert scores["a"]["hd95"] == 0.0 and scores["b"]["betti0_error"] == 0.0


def test_the_cli_families_are_the_structure_modules():
    from segan.config import STRUCTURE_DEFAULT, STRUCTURE_FAMILIES
    from segan.metrics import structure
    assert tuple(structure.FAMILIES) == STRUCTURE_FAMILIES and structure.DEFAULT_FAMILIES == STRUCTURE_DEFAULT
