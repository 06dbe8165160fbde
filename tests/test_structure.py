"""segan.metrics.structure: known answers, the conventions, and independent implementations
(MONAI's surface metrics, a chessboard distance transform for Boundary IoU, scikit-image's Rand
error and variation of information)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.measure import euler_number, label
from skimage.metrics import adapted_rand_error, variation_of_information

from segan.metrics import structure


def square(shape=(40, 40), top=10, left=10, side=16) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[top:top + side, left:left + side] = True
    return mask


def blobs(seed: int, shape=(48, 56)) -> np.ndarray:
    """Random smooth blobs: a blurred noise field, thresholded."""
    field = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=shape), 3)
    return field > 0.05


@pytest.mark.parametrize("shift", [1, 3, 5])
def test_a_square_shifted_by_k_pixels_is_k_away(shift):
    scores = structure.class_scores(square(left=10 + shift), square(), families=["distance"])
    assert scores["hd"] == shift and scores["one_sided"] is False


def test_identical_masks_score_perfectly():
    mask = blobs(0)
    scores = structure.class_scores(mask, mask, families=list(structure.FAMILIES))
    assert scores == {"one_sided": False, "hd": 0.0, "hd95": 0.0, "assd": 0.0, "nsd": 1.0, "boundary_f1": 1.0,
                      "boundary_iou": 1.0, "cldice": 1.0, "betti0_error": 0.0, "betti1_error": 0.0,
                      "rand_error": 0.0, "vi": 0.0}


def test_a_ring_is_one_component_with_one_hole():
    yy, xx = np.mgrid[:41, :41]
    radius = np.hypot(yy - 20, xx - 20)
    ring = (radius <= 15) & (radius >= 8)
    assert structure.betti_numbers(ring) == (1, 1)
    disk = radius <= 15
    scores = structure.class_scores(disk, ring, families=["topology"])
    assert (scores["betti0_error"], scores["betti1_error"]) == (0.0, 1.0)


def test_a_broken_line_loses_clDice_by_its_gap():
    """A one-pixel line is its own skeleton: a 4-pixel gap in a 20-pixel line keeps every predicted
    skeleton pixel on the truth (precision 1) and covers 16 of its 20 (sensitivity 0.8)."""
    truth = np.zeros((9, 30), bool)
    truth[4, 5:25] = True
    pred = truth.copy()
    pred[4, 13:17] = False
    assert structure.cldice(pred, truth) == pytest.approx(2 * 1 * 0.8 / 1.8)
    scores = structure.class_scores(pred, truth, families=["topology"])
    assert scores["betti0_error"] == 1.0  # two pieces against one


def test_a_class_absent_from_both_is_undefined_and_from_one_is_the_worst_case():
    empty, mask = np.zeros((30, 40), bool), square((30, 40), 5, 5, 10)
    families = ["distance", "boundary", "topology"]
    assert set(structure.class_scores(empty, empty, families=families).values()) == {None}
    one_sided = structure.class_scores(empty, mask, families=families)
    diagonal = math.hypot(30, 40)
    assert one_sided["one_sided"] is True
    assert (one_sided["hd"], one_sided["hd95"], one_sided["assd"]) == (diagonal, diagonal, diagonal)
    assert (one_sided["nsd"], one_sided["boundary_f1"], one_sided["boundary_iou"], one_sided["cldice"]) == (0, 0, 0, 0)


def test_the_edge_of_the_region_of_interest_never_scores():
    """Truth and prediction agree inside a field of view and differ outside it: every figure is
    perfect, because ignored pixels are "not this class" and boundaries touching them are left out."""
    yy, xx = np.mgrid[:50, :50]
    valid = np.hypot(yy - 25, xx - 25) <= 20
    truth = xx < 30
    pred = truth | ~valid  # differs only outside the field of view
    scores = structure.class_scores(pred, truth, valid, families=["distance", "boundary"])
    assert scores == {"one_sided": False, "hd": 0.0, "hd95": 0.0, "assd": 0.0, "nsd": 1.0, "boundary_f1": 1.0,
                      "boundary_iou": 1.0}


@pytest.mark.parametrize("seed", range(6))
def test_distances_and_nsd_equal_monais(seed):
    from monai.metrics import HausdorffDistanceMetric, SurfaceDiceMetric, SurfaceDistanceMetric
    pred, truth = blobs(seed), blobs(seed + 100)
    ours = structure.distance_scores(pred, truth, tolerance=2.0)

    def tensor(mask):  # (batch, class, H, W), the class only (include_background=True)
        return torch.from_numpy(mask)[None, None].float()

    hd = HausdorffDistanceMetric(include_background=True)(tensor(pred), tensor(truth)).item()
    hd95 = HausdorffDistanceMetric(include_background=True, percentile=95)(tensor(pred), tensor(truth)).item()
    assd = SurfaceDistanceMetric(include_background=True, symmetric=True)(tensor(pred), tensor(truth)).item()
    nsd = SurfaceDiceMetric([2.0], include_background=True)(tensor(pred), tensor(truth)).item()
    assert ours["hd"] == pytest.approx(hd, abs=1e-5)
    assert ours["hd95"] == pytest.approx(hd95, abs=1e-4)
    assert ours["nsd"] == pytest.approx(nsd, abs=1e-6)
    assert ours["assd"] == pytest.approx(assd, abs=1e-5)  # both pool the two directions' distances


@pytest.mark.parametrize("seed", range(4))
def test_boundary_bands_equal_a_chessboard_distance_transform(seed):
    mask = blobs(seed)
    for width in (1, 2, 5):
        padded = np.pad(mask, 1)
        distance = ndimage.distance_transform_cdt(padded, metric="chessboard")[1:-1, 1:-1]
        assert np.array_equal(structure.boundary_band(mask, width), mask & (distance <= width))


@pytest.mark.parametrize("seed", range(6))
def test_betti_numbers_equal_scikit_images_labels_and_euler_number(seed):
    """OpenCV's labels against scikit-image's, on noisy masks full of small pieces and holes."""
    mask = np.random.default_rng(seed).random((37, 53)) < 0.35 + 0.05 * seed
    components, holes = structure.betti_numbers(mask)
    assert components == label(mask, connectivity=2).max()
    assert holes == label(np.pad(~mask, 1, constant_values=True), connectivity=1).max() - 1
    assert components - holes == euler_number(mask, connectivity=2)
    assert structure.betti_numbers(np.zeros((5, 5), bool)) == (0, 0)
    assert structure.betti_numbers(np.ones((5, 5), bool)) == (1, 0)


def test_boundary_iou_of_two_squares_by_hand():
    """Two 20x20 squares, one shifted right by 2, in a 50x50 image: d = round(0.02 * 70.7) = 1, so
    each band is its square's outline (76 pixels); the outlines share the top and bottom rows where
    they overlap (2 x 18) and no column, so Boundary IoU = 36 / (76 + 76 - 36)."""
    truth, pred = square((50, 50), 10, 10, 20), square((50, 50), 10, 12, 20)
    assert structure.boundary_iou(pred, truth) == pytest.approx(36 / 116)


def test_rand_error_and_vi_are_scikit_images_on_the_cells_the_membranes_delimit():
    truth = np.zeros((20, 20), bool)
    truth[:, 9] = True  # one membrane: two cells
    truth[9, :9] = True  # the left cell split again: three cells
    pred = np.zeros((20, 20), bool)
    pred[:, 9] = True  # the second membrane missed: two cells
    scores = structure.region_scores(pred, truth)
    truth_cells, pred_cells = label(~truth, connectivity=1), label(~pred, connectivity=1)
    assert (truth_cells.max(), pred_cells.max()) == (3, 2)
    assert scores["rand_error"] == adapted_rand_error(truth_cells, pred_cells, ignore_labels=(0,))[0] > 0
    assert scores["vi"] == sum(variation_of_information(truth_cells, pred_cells, ignore_labels=(0,))) > 0
