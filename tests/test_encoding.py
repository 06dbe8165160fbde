"""Mask encodings: every rule turns its stored values into the same class indices."""

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from segan.data import ImageReadError, MaskEncoding, read_image, read_mask, read_roi
from segan.data.encoding import MaskValueError, read_mask_with_unknown

from conftest import write

CAMVID_LIKE_COLOURS = [[128, 128, 128], [128, 0, 0], [192, 192, 128], [128, 64, 128]]


def labels():
    truth = np.zeros((12, 16), np.uint8)
    truth[2:7, 3:11] = 1
    return truth


def test_invert_makes_the_dark_value_foreground(tmp_path):
    truth = labels()
    path = write(tmp_path / "m.png", (1 - truth) * 255)  # foreground stored as 0, like ISBI membranes
    assert np.array_equal(read_mask(path, MaskEncoding(invert=True)), truth)
    assert np.array_equal(read_mask(path), 1 - truth)


def test_threshold_is_configurable(tmp_path):
    stored = np.array([[0, 100, 200, 255]], np.uint8)  # holds 255: a 0/255 mask with grey values between
    path = write(tmp_path / "m.png", stored)
    assert read_mask(path).tolist() == [[0, 0, 1, 1]]
    assert read_mask(path, MaskEncoding(threshold=50)).tolist() == [[0, 1, 1, 1]]


# --- the binary rule: 0/1 as stored, 0/255 thresholded, anything else an error naming file and values ---


@pytest.mark.parametrize("stored, values", [
    ([[0, 2, 2], [2, 0, 0]], {2: 3}),  # foreground stored as 2
    ([[0, 1, 7], [7, 1, 0]], {7: 2}),  # a 0/1 mask with a stray 7
    ([[0, 128, 5], [128, 128, 0]], {5: 1, 128: 3}),  # a 0/128 mask: no 255, so not a 0/255 mask
])
def test_binary_values_the_rule_cannot_place_are_errors_naming_file_values_and_counts(tmp_path, stored, values):
    path = write(tmp_path / "odd.png", np.array(stored, np.uint8))
    with pytest.raises(MaskValueError) as caught:
        read_mask(path)
    assert caught.value.path == str(path) and caught.value.values == values
    counts = ", ".join(f"{v}: {n} pixel{'s' if n > 1 else ''}" for v, n in values.items())
    assert str(caught.value).startswith(f"{path}: mask values {list(values)} cannot be placed ({counts}): ")
    assert "--value-map" in str(caught.value) and "--classes" in str(caught.value)
    assert "--allow-unknown-values" in str(caught.value)
    assert isinstance(caught.value, ImageReadError) and isinstance(caught.value, ValueError)


def test_all_foreground_and_noisy_0_255_masks_without_a_0_place(tmp_path):
    assert MaskEncoding().decode(np.array([[255, 255]], np.uint8)).tolist() == [[1, 1]]
    assert MaskEncoding().decode(np.array([[255, 250, 3]], np.uint8)).tolist() == [[1, 1, 0]]
    assert MaskEncoding().decode(np.array([[1, 1]], np.uint8)).tolist() == [[1, 1]]
    assert MaskEncoding().decode(np.array([[0, 0]], np.uint8)).tolist() == [[0, 0]]


def test_allow_unknown_values_maps_them_to_the_ignore_index_and_reports_them(tmp_path):
    path = write(tmp_path / "odd.png", np.array([[0, 1, 7], [7, 1, 0]], np.uint8))
    labels, unknown = read_mask_with_unknown(path, MaskEncoding(allow_unknown_values=True))
    assert labels.tolist() == [[0, 1, 255], [255, 1, 0]] and unknown == {7: 2}
    inverted = MaskEncoding(invert=True, ignore_index=250, allow_unknown_values=True)
    assert inverted.decode(np.array([[0, 1, 7]], np.uint8)).tolist() == [[1, 0, 250]]  # invert spares ignored pixels
    multi = MaskEncoding(3, allow_unknown_values=True)
    labels, unknown = multi.decode_with_unknown(np.array([[0, 2, 9, 255, 9]], np.uint8))
    assert labels.tolist() == [[0, 2, 255, 255, 255]] and unknown == {9: 2}
    _, unknown = read_mask_with_unknown(write(tmp_path / "ok.png", np.array([[0, 255]], np.uint8)))
    assert unknown == {}
    with pytest.raises(ValueError, match="allow_unknown_values.*ignore_index is None"):
        MaskEncoding(ignore_index=None, allow_unknown_values=True)


def test_multiclass_values_beyond_the_classes_name_file_value_and_count(tmp_path):
    path = write(tmp_path / "m.png", np.array([[0, 1, 9], [9, 12, 255]], np.uint8))
    with pytest.raises(MaskValueError) as caught:
        read_mask(path, MaskEncoding(3))
    assert caught.value.values == {9: 2, 12: 1}
    assert str(caught.value).startswith(f"{path}: mask values [9, 12] cannot be placed (9: 2 pixels, 12: 1 pixel): "
                                        "they are neither a class index (0-2) nor the ignore index 255. ")


def test_sixteen_bit_binary_values_that_do_not_place(tmp_path):
    path = write(tmp_path / "b16.png", np.array([[0, 1000, 1000]], np.uint16))
    with pytest.raises(MaskValueError) as caught:
        read_mask(path)
    assert caught.value.values == {1000: 2} and "no 65535" in str(caught.value)


def test_unknown_colours_are_counted_and_may_be_ignored():
    bgr = cv2.cvtColor(np.array([[[128, 128, 128], [1, 2, 3], [1, 2, 3]]], np.uint8), cv2.COLOR_RGB2BGR)
    strict = MaskEncoding(4, colors=CAMVID_LIKE_COLOURS)
    with pytest.raises(MaskValueError) as caught:
        strict.decode(bgr, "c.png")
    assert caught.value.values == {"(1,2,3)": 2}
    assert str(caught.value).startswith("c.png: 2 pixels have colours [[1, 2, 3]] that are in neither")
    labels, unknown = MaskEncoding(4, colors=CAMVID_LIKE_COLOURS, allow_unknown_values=True).decode_with_unknown(bgr)
    assert labels.tolist() == [[0, 255, 255]] and unknown == {"(1,2,3)": 2}


def test_mask_value_error_survives_pickling():
    import pickle
    with pytest.raises(MaskValueError) as caught:
        MaskEncoding().decode(np.array([[0, 2]], np.uint8), "p.png")
    copy = pickle.loads(pickle.dumps(caught.value))
    assert (type(copy), str(copy), copy.path, copy.values) == (MaskValueError, str(caught.value), "p.png", {2: 1})


def test_value_map_trimap_with_ignored_border(tmp_path):
    trimap = np.array([[1, 2, 3], [2, 1, 1]], np.uint8)  # Oxford-IIIT Pet: 1 pet, 2 background, 3 border
    path = write(tmp_path / "t.png", trimap)
    decoded = read_mask(path, MaskEncoding(value_map={1: 1, 2: 0, 3: 255}))
    assert decoded.tolist() == [[1, 0, 255], [0, 1, 1]]


def test_value_map_leaves_unknown_values_to_the_class_check(tmp_path):
    path = write(tmp_path / "t.png", np.array([[1, 2, 7]], np.uint8))
    with pytest.raises(ImageReadError, match=r"t\.png.*\[7\].*value_map"):
        read_mask(path, MaskEncoding(value_map={1: 1, 2: 0}))


def test_value_map_targets_must_be_classes():
    with pytest.raises(ValueError, match="value_map"):
        MaskEncoding(3, value_map={5: 9})


def test_index_masks_and_an_ignore_value(tmp_path):
    stored = np.array([[0, 1, 2], [11, 10, 3]], np.uint8)  # CamVid: 11 = void
    path = write(tmp_path / "c.png", stored)
    assert np.array_equal(read_mask(path, MaskEncoding(11, ignore_index=11)), stored)
    with pytest.raises(ImageReadError, match=r"c\.png.*\[11\]"):
        read_mask(path, MaskEncoding(11, ignore_index=255))


def test_palette_png_masks_with_void_read_as_indices(tmp_path):
    indices = np.array([[0, 1, 2], [3, 255, 1]], np.uint8)
    image = Image.fromarray(indices, mode="P")
    image.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [7, 7, 7] * 251 + [224, 224, 192])
    image.save(tmp_path / "voc.png")
    assert np.array_equal(read_mask(tmp_path / "voc.png", MaskEncoding(4)), indices)


def test_rgb_colour_table(tmp_path):
    truth = np.array([[0, 1, 2], [3, 255, 1]], np.uint8)
    table = np.array(CAMVID_LIKE_COLOURS + [[0, 0, 0]], np.uint8)
    rgb = table[np.where(truth == 255, 4, truth)]
    path = write(tmp_path / "rgb.png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    encoding = MaskEncoding(4, colors=CAMVID_LIKE_COLOURS, ignore_color=[0, 0, 0])
    assert np.array_equal(read_mask(path, encoding), truth)
    with pytest.raises(ImageReadError, match=r"rgb\.png.*\[0, 0, 0\]"):
        read_mask(path, MaskEncoding(4, colors=CAMVID_LIKE_COLOURS))


def test_rgb_table_must_fit_the_classes():
    with pytest.raises(ValueError, match="3 colours for 4 classes"):
        MaskEncoding(4, colors=CAMVID_LIKE_COLOURS[:3])
    with pytest.raises(ValueError, match="repeats"):
        MaskEncoding(2, colors=[[1, 2, 3], [1, 2, 3]])


def test_colour_mask_where_indices_are_expected_is_refused(tmp_path):
    path = write(tmp_path / "colour.png", np.dstack([np.zeros((4, 4), np.uint8), np.ones((4, 4), np.uint8) * 2,
                                                     np.zeros((4, 4), np.uint8)]))
    with pytest.raises(ImageReadError, match="colour.png.*data.colors"):
        read_mask(path, MaskEncoding(3))
    grey_as_rgb = write(tmp_path / "grey3.png", np.dstack([np.full((4, 4), 2, np.uint8)] * 3))
    assert (read_mask(grey_as_rgb, MaskEncoding(3)) == 2).all()


def test_sixteen_bit_masks(tmp_path):
    truth = labels()
    binary = write(tmp_path / "b16.png", truth.astype(np.uint16) * 65535)
    assert np.array_equal(read_mask(binary), truth)
    index = write(tmp_path / "i16.tif", np.array([[0, 1, 2]], np.uint16))
    assert read_mask(index, MaskEncoding(3)).tolist() == [[0, 1, 2]]
    with pytest.raises(ImageReadError, match="i16big.*255"):
        read_mask(write(tmp_path / "i16big.png", np.array([[0, 300]], np.uint16)), MaskEncoding(3))


def test_roi_masks_read_as_bool(tmp_path):
    roi = write(tmp_path / "roi.gif.png", labels() * 255)
    assert np.array_equal(read_roi(roi), labels().astype(bool))


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif", ".ppm", ".pgm", ".gif", ".jpg"])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_image_formats_and_channel_layouts(tmp_path, suffix, channels):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 255, (9, 11, channels), dtype=np.uint8)
    array[..., :3] = array[..., :1]  # grey content, so every format can hold it
    path = tmp_path / f"image{suffix}"
    if suffix == ".gif":
        Image.fromarray(array[..., 0]).save(path)
    elif suffix == ".pgm":
        write(path, array[..., 0])
    elif suffix == ".ppm" or suffix in (".jpg", ".bmp") and channels == 4:
        write(path, np.ascontiguousarray(array[..., [0, 0, 0]]))
    else:
        write(path, array if channels > 1 else array[..., 0])
    for in_channels in (1, 3):
        image = read_image(path, in_channels)
        assert image.shape == (9, 11, in_channels) and image.dtype == np.uint8
        if suffix != ".jpg":
            assert np.array_equal(image[..., 0], array[..., 0])


def test_sixteen_bit_tiff_image(tmp_path):
    path = write(tmp_path / "s.tif", np.full((5, 7), 40000, np.uint16))
    assert read_image(path, 1)[0, 0, 0] == 156  # round(40000 * 255 / 65535)


def test_gif_mask_as_distributed_by_drive(tmp_path):
    truth = labels()
    Image.fromarray(truth * 255).save(tmp_path / "21_manual1.gif")
    assert np.array_equal(read_mask(tmp_path / "21_manual1.gif"), truth)


# --- properties: decoding inverts encoding, for any mask ---

masks = arrays(np.uint8, st.tuples(st.integers(1, 9), st.integers(1, 9)), elements=st.integers(0, 3))


@settings(max_examples=60, deadline=None)
@given(masks, st.permutations(range(4)))
def test_rgb_decoding_inverts_any_colour_table(mask, order):
    colours = [CAMVID_LIKE_COLOURS[i] for i in order]
    rgb = np.array(colours, np.uint8)[mask]
    decoded = MaskEncoding(4, colors=colours).decode(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert np.array_equal(decoded, mask)


@settings(max_examples=60, deadline=None)
@given(masks, st.permutations(range(4)))
def test_value_map_decoding_inverts_any_relabelling(mask, order):
    stored = np.array(order, np.uint8)[mask] * 10  # class c stored as 10 * order[c]
    mapping = {10 * order[c]: c for c in range(4)}
    assert np.array_equal(MaskEncoding(4, value_map=mapping).decode(stored), mask)


@settings(max_examples=60, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 9), st.integers(1, 9)), elements=st.integers(0, 1)),
       st.integers(0, 127), st.booleans())
def test_binary_decoding_survives_noise_below_the_threshold_margin(mask, noise, invert):
    mask = mask.copy()
    stored = np.where(mask == 1, 255 - noise // 2, noise // 2).astype(np.uint8)
    if invert:
        stored = 255 - stored
    # One pixel stored as 255 (foreground, or background when inverted): a 0/255 mask holds 255.
    stored[0, 0], mask[0, 0] = 255, 0 if invert else 1
    decoded = MaskEncoding(invert=invert).decode(stored)
    assert np.array_equal(decoded, mask)


@settings(max_examples=100, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 6), st.integers(1, 6)), elements=st.integers(0, 255)),
       st.integers(2, 6))
def test_decoded_values_are_always_classes_or_ignore(stored, classes):
    encoding = MaskEncoding(classes)
    if classes == 2:  # the binary rule: no 255 and a value above 1 cannot be placed
        unplaceable = (stored > 1) if stored.max() < 255 else np.zeros_like(stored, bool)
    else:
        unplaceable = (stored >= classes) & (stored != 255)
    try:
        decoded = encoding.decode(stored)
    except MaskValueError as error:
        found, counts = np.unique(stored[unplaceable], return_counts=True)
        assert error.values == dict(zip(found.tolist(), counts.tolist()))
        return
    assert not unplaceable.any()
    assert set(np.unique(decoded).tolist()) <= encoding.valid_values()


binary_masks = arrays(np.uint8, st.tuples(st.integers(1, 9), st.integers(1, 9)), elements=st.integers(0, 1))


@settings(max_examples=100, deadline=None)
@given(binary_masks, st.booleans())
def test_rule_0_1_masks_decode_as_stored(mask, invert):
    decoded = MaskEncoding(invert=invert).decode(mask)
    assert np.array_equal(decoded, 1 - mask if invert else mask)


@settings(max_examples=200, deadline=None)
@given(binary_masks, st.integers(1, 253), st.data(), st.booleans())
def test_rule_0_255_masks_with_noise_threshold_exactly(mask, threshold, data, invert):
    """Noise in 1..254 that keeps each pixel on its side of the threshold never changes a class."""
    noise = data.draw(arrays(np.uint8, mask.shape, elements=st.integers(0, 254)))
    stored = np.where(mask == 1, threshold + 1 + noise % (255 - threshold),  # threshold+1 .. 255
                      noise % (threshold + 1)).astype(np.uint8)  # 0 .. threshold
    mask = mask.copy()
    stored.flat[0], mask.flat[0] = 255, 1  # the extremes of a 0/255 mask: 255 ...
    if mask.size > 1:
        stored.flat[-1], mask.flat[-1] = 0, 0  # ... and 0
    if invert:
        stored, expected = 255 - stored, mask  # foreground stored dark
        encoding = MaskEncoding(threshold=254 - threshold, invert=True)  # 255 - v > 254 - t  <=>  v <= t
    else:
        expected, encoding = mask, MaskEncoding(threshold=threshold)
    assert np.array_equal(encoding.decode(stored), expected)


@settings(max_examples=200, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 9), st.integers(1, 9)), elements=st.integers(0, 254)),
       st.integers(2, 254), st.integers(0, 80), st.booleans())
def test_rule_masks_with_a_value_in_2_254_and_no_255_raise(stored, value, where, invert):
    stored = stored.copy()
    stored.flat[where % stored.size] = value
    with pytest.raises(MaskValueError) as caught:
        MaskEncoding(invert=invert).decode(stored, "m.png")
    found, counts = np.unique(stored[stored > 1], return_counts=True)
    assert caught.value.values == dict(zip(found.tolist(), counts.tolist()))
    labels, unknown = MaskEncoding(invert=invert, allow_unknown_values=True).decode_with_unknown(stored)
    placed = stored if not invert else 1 - stored
    assert np.array_equal(labels, np.where(stored > 1, 255, placed)) and unknown == caught.value.values
