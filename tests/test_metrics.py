"""segan.metrics against an independent implementation (scikit-learn), and its absent-class rule."""

import json
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import f1_score, jaccard_score, precision_score, recall_score

from segan import metrics

IGNORE = 255
TOL = 1e-6


@st.composite
def split(draw):
    """A few tiny (truth, prediction) images; truth has some ignored pixels; classes go missing naturally."""
    num_classes = draw(st.integers(2, 5))
    n_images = draw(st.integers(1, 3))
    height, width = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    size = n_images * height * width
    truth = np.array(draw(st.lists(st.integers(0, num_classes - 1), min_size=size, max_size=size)), np.int64)
    pred = np.array(draw(st.lists(st.integers(0, num_classes - 1), min_size=size, max_size=size)), np.int64)
    ignored = np.array(draw(st.lists(st.booleans(), min_size=size, max_size=size)), bool)
    truth[ignored & np.array(draw(st.lists(st.booleans(), min_size=size, max_size=size)), bool)] = IGNORE
    shape = (n_images, height, width)
    return num_classes, truth.reshape(shape), pred.reshape(shape)


def confusions_of(num_classes, truth, pred):
    return metrics.confusion_matrix(torch.from_numpy(pred), torch.from_numpy(truth), num_classes, IGNORE)


def close(ours, theirs):
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape
    both_nan = np.isnan(ours) & np.isnan(theirs)
    assert np.all(both_nan | (np.abs(ours - theirs) <= TOL)), (ours, theirs)


def scored(truth, pred):
    valid = truth != IGNORE
    return truth[valid], pred[valid]


SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(split())
def test_confusion_matrix_matches_sklearn_per_image(case):
    num_classes, truth, pred = case
    confusions = confusions_of(num_classes, truth, pred)
    assert confusions.shape == (truth.shape[0], num_classes, num_classes)
    for i in range(truth.shape[0]):
        y_true, y_pred = scored(truth[i], pred[i])
        expected = sk_confusion(y_true, y_pred, labels=list(range(num_classes))) if y_true.size else 0
        np.testing.assert_array_equal(confusions[i].numpy(), expected)


@SETTINGS
@given(split())
def test_split_scores_match_sklearn(case):
    num_classes, truth, pred = case
    y_true, y_pred = scored(truth, pred)
    assume(y_true.size > 0)
    confusions = confusions_of(num_classes, truth, pred)
    total = confusions.sum(dim=0)
    names = [f"c{i}" for i in range(num_classes)]
    report = metrics.report(confusions, names)
    present = sorted(set(y_true.tolist()) | set(y_pred.tolist()))
    absent = [c for c in range(num_classes) if c not in present]

    # Per class, where the definitions coincide (the class occurs in truth or prediction).
    iou, dice = metrics.iou(total).numpy(), metrics.dice(total).numpy()
    close(iou[present], jaccard_score(y_true, y_pred, labels=present, average=None))
    close(dice[present], f1_score(y_true, y_pred, labels=present, average=None))
    assert np.isnan(iou[absent]).all() and np.isnan(dice[absent]).all()  # sklearn would say 0 here
    close([report["per_class"][names[c]]["iou"] for c in present], iou[present])
    close([report["per_class"][names[c]]["dice"] for c in present], dice[present])

    # Precision and recall: sklearn's zero_division=nan is our zero-denominator rule exactly.
    every = list(range(num_classes))
    close(metrics.precision(total).numpy(), precision_score(y_true, y_pred, labels=every, average=None, zero_division=np.nan))
    close(metrics.recall(total).numpy(), recall_score(y_true, y_pred, labels=every, average=None, zero_division=np.nan))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        close(report["macro_with_background"]["precision"],
              precision_score(y_true, y_pred, labels=every, average="macro", zero_division=np.nan))
        close(report["macro_with_background"]["recall"],
              recall_score(y_true, y_pred, labels=every, average="macro", zero_division=np.nan))

    # Macro: over the classes present, with and without the background.
    close(report["macro_with_background"]["iou"], jaccard_score(y_true, y_pred, labels=present, average="macro"))
    close(report["macro_with_background"]["dice"], f1_score(y_true, y_pred, labels=present, average="macro"))
    foreground = [c for c in present if c != 0]
    if foreground:
        close(report["macro_without_background"]["iou"], jaccard_score(y_true, y_pred, labels=foreground, average="macro"))
        close(report["macro_without_background"]["dice"], f1_score(y_true, y_pred, labels=foreground, average="macro"))
    else:
        assert math.isnan(report["macro_without_background"]["iou"])

    # Pooled over classes first (sklearn's "micro").
    for labels in (present, foreground):
        if labels:
            pooled = metrics.pooled(total, labels)
            close(pooled["iou"], jaccard_score(y_true, y_pred, labels=labels, average="micro"))
            close(pooled["dice"], f1_score(y_true, y_pred, labels=labels, average="micro"))
            close(pooled["precision"], precision_score(y_true, y_pred, labels=labels, average="micro", zero_division=np.nan))
            close(pooled["recall"], recall_score(y_true, y_pred, labels=labels, average="micro", zero_division=np.nan))
    close(report["pixel_accuracy"], float(np.mean(y_true == y_pred)))

    # The headline is what training reports (metrics.summary on the summed matrix).
    legacy = metrics.summary(total, binary=num_classes == 2)
    close([report["headline"]["iou"], report["headline"]["dice"]], [legacy["iou"], legacy["dice"]])
    if num_classes == 2:
        close(report["headline"]["iou"], iou[1])


@SETTINGS
@given(split())
def test_per_image_means_match_sklearn_per_image(case):
    num_classes, truth, pred = case
    confusions = confusions_of(num_classes, truth, pred)
    names = [f"c{i}" for i in range(num_classes)]
    report = metrics.report(confusions, names)
    for c in range(num_classes):
        ious, dices = [], []
        for i in range(truth.shape[0]):
            y_true, y_pred = scored(truth[i], pred[i])
            if c in y_true or c in y_pred:  # otherwise undefined and left out
                ious.append(jaccard_score(y_true, y_pred, labels=[c], average=None)[0])
                dices.append(f1_score(y_true, y_pred, labels=[c], average=None)[0])
        entry = report["per_class"][names[c]]
        assert entry["images_scored"] == len(ious)
        close(entry["iou_per_image"], np.mean(ious) if ious else np.nan)
        close(entry["dice_per_image"], np.mean(dices) if dices else np.nan)
    macro = report["macro_without_background"]
    close(macro["iou_per_image"], np.nanmean([report["per_class"][n]["iou_per_image"] for n in names[1:]])
          if any(report["per_class"][n]["images_scored"] for n in names[1:]) else np.nan)


def test_absent_class_is_undefined_and_left_out_of_every_mean():
    # Image 0: class 2 absent from truth and prediction. Image 1: class 2 present.
    truth = np.array([[[0, 0, 1, 1]], [[0, 2, 2, 1]]])
    pred = np.array([[[0, 1, 1, 1]], [[0, 2, 1, 1]]])
    confusions = confusions_of(3, truth, pred)
    per_image = metrics.iou(confusions)
    assert per_image.dtype == torch.float64
    assert math.isnan(per_image[0, 2])  # not 0, not 1
    report = metrics.report(confusions, ["bg", "a", "b"])
    b = report["per_class"]["b"]
    assert b["images_scored"] == 1
    assert b["iou_per_image"] == pytest.approx(0.5)  # image 1 only: TP 1, FN 1
    assert b["iou"] == pytest.approx(0.5)
    a = report["per_class"]["a"]
    # a: image 0 TP 2 FP 1 -> 2/3; image 1 TP 1 FP 1 -> 1/2
    assert a["iou_per_image"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert a["iou"] == pytest.approx(3 / 5)
    # sklearn's default counts a label absent from both as 0; we leave it out instead.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert jaccard_score([0, 0, 1, 1], [0, 1, 1, 1], labels=[0, 1, 2], average=None)[2] == 0.0
    single = metrics.report(confusions[:1], ["bg", "a", "b"])
    assert math.isnan(single["per_class"]["b"]["iou"])
    assert single["macro_with_background"]["iou"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert single["macro_with_background"]["classes_scored"] == 2
    assert "never counted as 0 or 1" in single["definitions"]["absent_class"]
    text = json.dumps(metrics.json_safe(single), allow_nan=False)
    assert json.loads(text)["per_class"]["b"]["iou"] is None


def test_binary_headline_is_foreground_and_empty_images_are_left_out():
    truth = np.array([[[0, 0, 1, 1]], [[0, 0, 0, 0]]])
    pred = np.array([[[0, 1, 1, 1]], [[0, 0, 0, 0]]])
    report = metrics.report(confusions_of(2, truth, pred), ["background", "polyp"])
    assert report["task"] == "binary"
    assert report["headline"]["scope"] == "foreground class 'polyp'"
    assert report["headline"]["iou"] == pytest.approx(2 / 3)
    assert report["headline"]["iou_per_image"] == pytest.approx(2 / 3)  # the empty image is undefined
    assert report["per_class"]["polyp"]["images_scored"] == 1
    assert report["per_class"]["background"]["iou_per_image"] == pytest.approx((1 / 2 + 1) / 2)  # TP 1, FN 1; then 4/4


def test_report_rejects_bad_input():
    with pytest.raises(ValueError, match="class names"):
        metrics.report(torch.zeros(1, 2, 2, dtype=torch.long), ["a", "b", "c"])
    with pytest.raises(ValueError, match="no images"):
        metrics.report(torch.zeros(0, 2, 2, dtype=torch.long), ["a", "b"])
    with pytest.raises(ValueError, match="shape"):
        metrics.report(torch.zeros(2, 2, dtype=torch.long), ["a", "b"])
