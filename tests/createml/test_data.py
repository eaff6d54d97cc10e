"""mlc.createml.data (image reading, labelled sources, split) and mlc.testing.images.

Expected values come from Pillow, numpy and scikit-learn (what was written, and how Pillow reads
it back), never from the code under test."""

import os
import warnings

import numpy as np
import pytest
from PIL import Image

import mlc
from mlc.createml.data import ImageDataset, LabeledImage, image_source, load_image
from mlc.testing.images import write_corrupt_files, write_digits_dataset, write_shapes_dataset

W, H = 37, 23  # not square, so a transposed image shows


def _pattern(width=W, height=H):
    """A deterministic RGB pattern with distinct rows and columns."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // (width - 1), y * 255 // (height - 1), (x * 7 + y * 13) % 256], axis=-1).astype(np.uint8)


def _write(path, image, **save_args):
    image.save(path, **save_args)
    return str(path)


def _data_warnings(record):
    return [str(w.message) for w in record if issubclass(w.category, mlc.MLCDataWarning)]


def _source(source, **kwargs):
    """image_source plus the messages of the MLCDataWarnings it gave."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        dataset = image_source(source, **kwargs)
    return dataset, _data_warnings(record)


def _tiny_png(path, value=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (8, 8), (value, 255 - value, 40)).save(path)
    return str(path)


def _label_folders(root, counts):
    """root/<label>/<i>.png for label, n in counts; returns {label: sorted paths}."""
    return {label: sorted(_tiny_png(os.path.join(root, label, f"{i}.png"), i % 256) for i in range(n)) for label, n in counts.items()}


# ---------------------------------------------------------------------------------------------
# load_image: formats


LOSSLESS = [("png", {}), ("bmp", {}), ("tiff", {}), ("ppm", {}), ("webp", {"lossless": True}), ("tga", {}), ("pcx", {})]


@pytest.mark.parametrize("ext, save_args", LOSSLESS, ids=[e for e, _ in LOSSLESS])
def test_lossless_formats_load_exactly(tmp_path, ext, save_args):
    pixels = _pattern()
    path = _write(tmp_path / f"image.{ext}", Image.fromarray(pixels), **save_args)
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (W, H)
    np.testing.assert_array_equal(np.asarray(image), pixels)


@pytest.mark.parametrize("ext, save_args", [("jpg", {"quality": 95}), ("webp", {"quality": 90})])
def test_lossy_formats_load_as_rgb(tmp_path, ext, save_args):
    pixels = _pattern()
    path = _write(tmp_path / f"image.{ext}", Image.fromarray(pixels), **save_args)
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (W, H)
    with Image.open(path) as expected:  # Pillow's own decoding of the file is the oracle
        np.testing.assert_array_equal(np.asarray(image), np.asarray(expected.convert("RGB")))


def test_gif_loads_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (W, H), colour) for colour in [(255, 0, 0), (0, 0, 255), (0, 255, 0)]]
    path = _write(tmp_path / "anim.gif", frames[0], save_all=True, append_images=frames[1:], duration=50)
    with Image.open(path) as check:
        assert check.n_frames == 3
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (W, H)
    assert set(image.getdata()) == {(255, 0, 0)}


def test_ico_loads_its_largest_icon(tmp_path):
    pixels = _pattern(32, 32)
    path = _write(tmp_path / "icon.ico", Image.fromarray(pixels), sizes=[(16, 16), (32, 32)])
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (32, 32)
    np.testing.assert_array_equal(np.asarray(image), pixels)


def test_path_like_and_large_sizes(tmp_path):
    path = tmp_path / "wide.png"
    Image.new("RGB", (3000, 2), (1, 2, 3)).save(path)
    image = load_image(path)  # a pathlib.Path
    assert image.size == (3000, 2) and image.getpixel((2999, 1)) == (1, 2, 3)


# ---------------------------------------------------------------------------------------------
# load_image: colour modes


def test_mode_1_and_L(tmp_path):
    bits = (np.arange(W * H).reshape(H, W) % 3 == 0)
    one = load_image(_write(tmp_path / "one.png", Image.fromarray(bits)))
    np.testing.assert_array_equal(np.asarray(one), np.repeat(np.where(bits, 255, 0)[..., None], 3, axis=-1))
    gray = _pattern()[..., 0]
    rgb = load_image(_write(tmp_path / "gray.png", Image.fromarray(gray)))
    np.testing.assert_array_equal(np.asarray(rgb), np.repeat(gray[..., None], 3, axis=-1))


def test_mode_P_without_transparency(tmp_path):
    palette_image = Image.fromarray(_pattern()).quantize(16)
    assert palette_image.mode == "P"
    path = _write(tmp_path / "p.png", palette_image)
    np.testing.assert_array_equal(np.asarray(load_image(path)), np.asarray(palette_image.convert("RGB")))


def _expected_over_white(rgb, alpha):
    a = alpha[..., None].astype(np.float64) / 255.0
    return rgb.astype(np.float64) * a + 255.0 * (1.0 - a)


def test_rgba_is_composited_over_white(tmp_path):
    rgb = _pattern()
    alpha = np.tile(np.array([0, 64, 128, 255], np.uint8), W * H // 4 + 1)[: W * H].reshape(H, W)
    path = _write(tmp_path / "rgba.png", Image.fromarray(np.dstack([rgb, alpha])))
    got = np.asarray(load_image(path)).astype(np.float64)
    np.testing.assert_allclose(got, _expected_over_white(rgb, alpha), atol=1.0)
    assert (got[alpha == 0] == 255).all() and (got[alpha == 255] == rgb[alpha == 255]).all()


def test_la_is_composited_over_white(tmp_path):
    gray = _pattern()[..., 1]
    alpha = np.where(np.arange(W)[None, :] < W // 2, 0, 200).repeat(H, axis=0).astype(np.uint8)
    path = _write(tmp_path / "la.png", Image.merge("LA", [Image.fromarray(gray), Image.fromarray(alpha)]))
    got = np.asarray(load_image(path)).astype(np.float64)
    np.testing.assert_allclose(got, _expected_over_white(np.repeat(gray[..., None], 3, axis=-1), alpha), atol=1.0)


def test_palette_transparency_is_composited_over_white(tmp_path):
    indices = (np.arange(W * H).reshape(H, W) % 4).astype(np.uint8)
    image = Image.new("P", (W, H))
    image.putdata(indices.ravel().tolist())
    image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30] + [0] * (256 * 3 - 12))
    path = _write(tmp_path / "p_trns.png", image, transparency=1)  # index 1 (green) is transparent
    with Image.open(path) as check:
        assert check.mode == "P" and check.info["transparency"] == 1
    got = np.asarray(load_image(path))
    palette = np.array([[255, 0, 0], [255, 255, 255], [0, 0, 255], [10, 20, 30]], np.uint8)
    np.testing.assert_array_equal(got, palette[indices])


def test_cmyk_and_ycbcr(tmp_path):
    cmyk = Image.fromarray(_pattern()).convert("CMYK")
    path = _write(tmp_path / "cmyk.tiff", cmyk)
    np.testing.assert_array_equal(np.asarray(load_image(path)), np.asarray(cmyk.convert("RGB")))
    path = _write(tmp_path / "cmyk.jpg", cmyk, quality=95)
    with Image.open(path) as check:
        assert check.mode == "CMYK"
        expected = np.asarray(check.convert("RGB"))
    np.testing.assert_array_equal(np.asarray(load_image(path)), expected)
    ycbcr = Image.fromarray(_pattern()).convert("YCbCr")
    path = _write(tmp_path / "ycbcr.tiff", ycbcr)
    with Image.open(path) as check:
        assert check.mode == "YCbCr"
    got = load_image(path)
    assert got.mode == "RGB" and got.size == (W, H)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(ycbcr.convert("RGB")))


def test_lab_goes_through_colour_management(tmp_path):
    lab = Image.new("LAB", (W, H), (128, 128, 128))  # L* = 50, a* = b* = 0: sRGB mid gray 119
    got = np.asarray(load_image(_write(tmp_path / "lab.tiff", lab)))
    assert got.shape == (H, W, 3) and np.abs(got.astype(int) - 119).max() <= 1


def test_16_bit_is_scaled_not_clipped(tmp_path):
    values = np.linspace(0, 65535, W * H).round().astype(np.uint16).reshape(H, W)
    values[0, :4] = [0, 1000, 32896, 65535]
    path = _write(tmp_path / "sixteen.png", Image.fromarray(values))
    with Image.open(path) as check:
        assert check.mode == "I;16"
    got = np.asarray(load_image(path)).astype(int)
    np.testing.assert_array_equal(got[..., 0], got[..., 2])
    assert list(got[0, :4, 0]) == [0, 4, 128, 255]  # 1000 / 257 = 3.9; 32896 / 257 = 128
    assert np.abs(got[..., 0] - values / 257.0).max() <= 0.5
    assert np.unique(got).size > 200  # a full ramp, not a clipped one


def test_32_bit_integer_in_16_bit_range_is_scaled(tmp_path):
    values = np.array([[0, 257 * 10, 65535, 100]] * 3, np.int32)
    path = _write(tmp_path / "int.tiff", Image.fromarray(values))
    with Image.open(path) as check:
        assert check.mode == "I"
    got = np.asarray(load_image(path))[..., 1]
    np.testing.assert_array_equal(got[0], [0, 10, 255, 0])


def test_32_bit_integer_beyond_16_bits_is_stretched(tmp_path):
    values = np.array([[-1000, 0, 99000]], np.int32)
    got = np.asarray(load_image(_write(tmp_path / "wide.tiff", Image.fromarray(values))))[..., 0]
    np.testing.assert_array_equal(got[0], np.rint((values[0] + 1000) * 255.0 / 100000).astype(np.uint8))


@pytest.mark.parametrize(
    "values, expected",
    [([0.0, 0.5, 1.0], [0, 128, 255]), ([0.0, 100.4, 255.0], [0, 100, 255]), ([-1.0, 0.0, 3.0], [0, 64, 255])],
    ids=["unit", "byte-range", "other"],
)
def test_float_images(tmp_path, values, expected):
    path = _write(tmp_path / "f.tiff", Image.fromarray(np.array([values], np.float32)))
    with Image.open(path) as check:
        assert check.mode == "F"
    got = np.asarray(load_image(path))
    assert got.shape == (1, 3, 3)
    np.testing.assert_array_equal(got[0, :, 0], expected)


# ---------------------------------------------------------------------------------------------
# load_image: EXIF orientation


@pytest.mark.parametrize("orientation, turn", [(3, lambda a: np.rot90(a, 2)), (6, lambda a: np.rot90(a, -1)), (8, lambda a: np.rot90(a, 1))])
def test_exif_orientation_is_applied(tmp_path, orientation, turn):
    pixels = _pattern()
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = _write(tmp_path / f"o{orientation}.png", Image.fromarray(pixels), exif=exif.tobytes())
    with Image.open(path) as check:
        assert check.getexif().get(0x0112) == orientation
    np.testing.assert_array_equal(np.asarray(load_image(path)), turn(pixels))


def test_exif_orientation_on_jpeg(tmp_path):
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = (255, 0, 0)  # stored: red left, blue right
    pixels[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise: red on top
    image = load_image(_write(tmp_path / "photo.jpg", Image.fromarray(pixels), exif=exif.tobytes(), quality=95))
    assert image.size == (20, 40)
    top, bottom = np.asarray(image)[5, 10].astype(int), np.asarray(image)[35, 10].astype(int)
    assert top[0] > 200 and top[2] < 50 and bottom[2] > 200 and bottom[0] < 50


# ---------------------------------------------------------------------------------------------
# load_image: unreadable files


def test_unreadable_files_raise_io_errors_naming_path_and_reason(tmp_path):
    reasons = {
        "empty.png": "empty file",
        "truncated.jpg": "truncated",
        "truncated.png": "truncated",
        "random_bytes.jpg": "not an image",
        "not_an_image.png": "not an image",
    }
    paths = write_corrupt_files(tmp_path)
    assert sorted(os.path.basename(p) for p in paths) == sorted(reasons)
    for path in paths:
        with pytest.raises(Exception):  # Pillow itself cannot read it
            with Image.open(path) as image:
                image.load()
        with pytest.raises(mlc.MLCIOError, match=reasons[os.path.basename(path)]) as info:
            load_image(path)
        assert path in str(info.value) and info.value.code == "io"


def test_missing_file_and_folder(tmp_path):
    missing = str(tmp_path / "nope.png")
    with pytest.raises(mlc.MLCIOError, match="no such file") as info:
        load_image(missing)
    assert missing in str(info.value)
    with pytest.raises(mlc.MLCIOError, match="a folder") as info:
        load_image(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_decompression_bomb_limit_stays_on(tmp_path, monkeypatch):
    path = _write(tmp_path / "big.png", Image.new("RGB", (40, 40)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 1600 pixels > 2 x 100: Pillow refuses
    with pytest.raises(Image.DecompressionBombError):
        Image.open(path)
    with pytest.raises(mlc.MLCIOError, match="decompression-bomb") as info:
        load_image(path)
    assert path in str(info.value)


# ---------------------------------------------------------------------------------------------
# image_source: folders


def test_folder_source_reads_labels_recursively_in_order(tmp_path):
    expected = _label_folders(tmp_path, {"zebra": 11, "ant": 12})
    expected["ant"].append(_tiny_png(tmp_path / "ant" / "nested" / "deeper" / "x.png"))
    dataset, messages = _source(str(tmp_path))
    assert messages == []
    assert dataset.labels == ["ant", "zebra"] and dataset.counts() == {"ant": 13, "zebra": 11}
    order = sorted((label, p) for label, paths in expected.items() for p in paths)
    assert [(i.label, i.path) for i in dataset.items] == order
    assert dataset.paths == [p for _, p in order] and dataset.targets == [label for label, _ in order]
    assert len(dataset) == 24 and dataset.skipped == []
    assert all(isinstance(i, LabeledImage) for i in dataset.items)


def test_hidden_files_and_folders_are_ignored_silently(tmp_path):
    _label_folders(tmp_path, {"a": 10, "b": 10})
    (tmp_path / "a" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1 not an image")
    (tmp_path / "a" / "._0.png").write_bytes(b"AppleDouble junk")
    _tiny_png(tmp_path / "b" / ".thumbnails" / "t.png")
    _tiny_png(tmp_path / ".hidden_label" / "h.png")
    (tmp_path / ".DS_Store").write_bytes(b"junk")
    dataset, messages = _source(tmp_path)
    assert messages == []
    assert dataset.counts() == {"a": 10, "b": 10} and dataset.skipped == []
    assert not any("/." in p for p in dataset.paths)


def test_files_in_the_root_are_ignored_with_a_warning(tmp_path):
    _label_folders(tmp_path, {"a": 10, "b": 10})
    stray = _tiny_png(tmp_path / "stray.png")
    dataset, messages = _source(tmp_path)
    assert dataset.counts() == {"a": 10, "b": 10} and stray not in dataset.paths
    assert len(messages) == 1 and "stray.png" in messages[0] and "ignored" in messages[0]


def test_corrupt_files_are_skipped_and_listed_in_one_warning(tmp_path):
    _label_folders(tmp_path, {"cat": 10, "dog": 10})
    bad = write_corrupt_files(tmp_path / "dog")
    dataset, messages = _source(tmp_path)
    assert dataset.counts() == {"cat": 10, "dog": 10}
    assert sorted(p for p, _ in dataset.skipped) == sorted(bad)
    assert all(reason for _, reason in dataset.skipped)
    assert len(messages) == 1
    for path, reason in dataset.skipped:
        assert path in messages[0] and reason in messages[0]


def test_a_long_list_of_corrupt_files_is_cut_in_the_warning(tmp_path):
    _label_folders(tmp_path, {"cat": 10, "dog": 10})
    for i in range(25):
        (tmp_path / "dog" / f"bad_{i:02d}.jpg").write_bytes(b"not a jpeg")
    dataset, messages = _source(tmp_path)
    assert len(dataset.skipped) == 25 and len(messages) == 1
    assert "25 file(s)" in messages[0] and "bad_19.jpg" in messages[0] and "bad_20.jpg" not in messages[0]
    assert "and 5 more" in messages[0]


def test_unreadable_images_count_as_missing_for_the_small_label_warning(tmp_path):
    _label_folders(tmp_path, {"cat": 10, "dog": 10})
    write_corrupt_files(tmp_path / "empty_label")
    dataset, messages = _source(tmp_path)
    assert dataset.labels == ["cat", "dog"]
    assert len(messages) == 2 and "'empty_label' (0" in messages[1]


# ---------------------------------------------------------------------------------------------
# image_source: dicts and datasets


def test_dict_of_lists_and_folders(tmp_path):
    folders = _label_folders(tmp_path, {"a": 10, "b": 10})
    dataset, messages = _source({"first": [os.path.join(p) for p in reversed(folders["a"])], "second": tmp_path / "b"})
    assert messages == []
    assert dataset.counts() == {"first": 10, "second": 10}
    assert dataset.paths == sorted(folders["a"]) + sorted(folders["b"])


def test_dict_with_missing_files_skips_them(tmp_path):
    folders = _label_folders(tmp_path, {"a": 10, "b": 10})
    missing = str(tmp_path / "a" / "gone.png")
    dataset, messages = _source({"a": folders["a"] + [missing], "b": folders["b"]})
    assert dataset.skipped == [(missing, "no such file")]
    assert len(messages) == 1 and missing in messages[0]


def test_an_image_dataset_is_returned_as_is():
    dataset = ImageDataset([LabeledImage("x.png", "a")])
    assert image_source(dataset) is dataset


# ---------------------------------------------------------------------------------------------
# image_source: errors


def test_missing_folder(tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(mlc.MLCIOError, match="does not exist") as info:
        image_source(missing, what="validation data")
    assert missing in str(info.value) and "validation data" in str(info.value)


def test_a_file_instead_of_a_folder(tmp_path):
    path = _tiny_png(tmp_path / "one.png")
    with pytest.raises(mlc.MLCIOError, match="is a file, not a folder") as info:
        image_source(path)
    assert path in str(info.value) and "training data" in str(info.value)


@pytest.mark.parametrize("with_root_file", [False, True])
def test_no_label_subfolders(tmp_path, with_root_file):
    if with_root_file:
        _tiny_png(tmp_path / "loose.png")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mlc.MLCDataWarning)
        with pytest.raises(mlc.MLCParametersError, match="no label subfolders") as info:
            image_source(tmp_path)
    assert str(tmp_path) in str(info.value)


@pytest.mark.parametrize(
    "source, match",
    [
        ({}, "empty"),
        ({3: ["a.png"]}, "non-empty str, got 3"),
        ({"": ["a.png"]}, "non-empty str, got ''"),
        ({"a": 5}, "'a' maps to a int"),
        ({"a": {"x.png"}}, "'a' maps to a set"),
        ({"a": ["x.png", 7]}, "lists 7"),
        (42, "got int"),
    ],
    ids=["empty", "int-label", "empty-label", "int-value", "set-value", "int-path", "int-source"],
)
def test_malformed_sources(source, match):
    with pytest.raises(mlc.MLCParametersError, match=match) as info:
        image_source(source, what="test data")
    assert "test data" in str(info.value)


def test_dict_label_folder_missing_or_a_file(tmp_path):
    missing = str(tmp_path / "gone")
    with pytest.raises(mlc.MLCIOError, match="does not exist") as info:
        image_source({"a": missing})
    assert missing in str(info.value) and "'a'" in str(info.value)
    path = _tiny_png(tmp_path / "x.png")
    with pytest.raises(mlc.MLCParametersError, match="a file; give a list of image paths") as info:
        image_source({"a": path})
    assert path in str(info.value)


def test_no_readable_image(tmp_path):
    write_corrupt_files(tmp_path / "a")
    write_corrupt_files(tmp_path / "b")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mlc.MLCDataWarning)
        with pytest.raises(mlc.MLCUpdateError, match="no readable image") as info:
            image_source(tmp_path)
    assert str(tmp_path) in str(info.value) and "training data" in str(info.value)


def test_fewer_labels_than_min_classes(tmp_path):
    _label_folders(tmp_path, {"only": 10})
    with pytest.raises(mlc.MLCUpdateError, match="an image classifier needs at least 2 labels") as info:
        image_source(tmp_path)
    assert str(tmp_path) in str(info.value) and "'only'" in str(info.value)
    dataset, _ = _source(tmp_path, min_classes=1)
    assert dataset.labels == ["only"]


# ---------------------------------------------------------------------------------------------
# image_source: balance warnings


def test_labels_with_fewer_than_10_images_are_named(tmp_path):
    _label_folders(tmp_path, {"few": 9, "ok": 10, "tiny": 3})
    dataset, messages = _source(tmp_path)
    assert dataset.counts() == {"few": 9, "ok": 10, "tiny": 3}
    assert len(messages) == 1
    assert "fewer than 10" in messages[0] and "'few' (9)" in messages[0] and "'tiny' (3)" in messages[0]
    assert "'ok'" not in messages[0]
    assert _source(tmp_path, check_balance=False)[1] == []


def test_strong_imbalance_is_named(tmp_path):
    _label_folders(tmp_path, {"big": 41, "small": 10, "middle": 12})
    _, messages = _source(tmp_path)
    assert len(messages) == 1 and "unbalanced" in messages[0]
    assert "'big' has 41" in messages[0] and "'small' (10)" in messages[0] and "'middle'" not in messages[0]
    assert _source(tmp_path, check_balance=False)[1] == []


def test_balanced_set_with_10_per_label_gives_no_warning(tmp_path):
    _label_folders(tmp_path, {"big": 40, "small": 10})  # exactly 4x: still fine
    dataset, messages = _source(tmp_path)
    assert messages == [] and dataset.counts() == {"big": 40, "small": 10}


# ---------------------------------------------------------------------------------------------
# ImageDataset.split


def _fake_dataset(counts):
    return ImageDataset([LabeledImage(f"/data/{label}/{i:03d}.png", label) for label, n in counts.items() for i in range(n)], [("/x.png", "bad")])


def _expected_second_size(n, fraction):
    return 0 if n < 2 else min(max(round(fraction * n), 1), n - 1)


@pytest.mark.parametrize("fraction", [0.01, 0.2, 0.5, 0.99])
def test_split_is_stratified_and_complete(fraction):
    counts = {"a": 1, "b": 2, "c": 10, "d": 37}
    dataset = _fake_dataset(counts)
    first, second = dataset.split(fraction, seed=3)
    for label, n in counts.items():
        assert second.counts().get(label, 0) == _expected_second_size(n, fraction)
        assert first.counts()[label] == n - _expected_second_size(n, fraction)
    assert sorted(first.items + second.items, key=lambda i: (i.label, i.path)) == dataset.items
    assert not set(first.paths) & set(second.paths)
    for part in (first, second):
        assert part.items == sorted(part.items, key=lambda i: (i.label, i.path))
    assert first.skipped == dataset.skipped and second.skipped == []


def test_split_is_deterministic_per_seed():
    dataset = _fake_dataset({"a": 30, "b": 30})
    assert dataset.split(0.3, seed=1) == dataset.split(0.3, seed=1)
    assert dataset.split(0.3, seed=1)[1].paths != dataset.split(0.3, seed=2)[1].paths


def test_split_uses_the_documented_numpy_permutation():
    dataset = _fake_dataset({"a": 10, "b": 7})
    rng = np.random.default_rng(5)
    expected = []
    for label, n in [("a", 10), ("b", 7)]:
        chosen = rng.permutation(n)[: _expected_second_size(n, 0.3)]
        expected += [f"/data/{label}/{i:03d}.png" for i in sorted(chosen)]
    assert dataset.split(0.3, seed=5)[1].paths == expected


@pytest.mark.parametrize("fraction", [0, 1, 0.0, 1.0, -0.2, 1.5, float("nan"), "0.2", None, True])
def test_split_fraction_bounds(fraction):
    with pytest.raises(mlc.MLCParametersError, match="between 0 and 1"):
        _fake_dataset({"a": 5}).split(fraction, seed=0)


def test_dataset_sorts_items_on_construction():
    items = [LabeledImage("b/2.png", "b"), LabeledImage("a/9.png", "a"), LabeledImage("a/1.png", "a")]
    dataset = ImageDataset(items)
    assert dataset.paths == ["a/1.png", "a/9.png", "b/2.png"] and dataset.labels == ["a", "b"]


# ---------------------------------------------------------------------------------------------
# mlc.testing.images


def test_shapes_dataset(tmp_path):
    root = write_shapes_dataset(tmp_path / "shapes", per_class=5, size=48, seed=1, classes=("circle", "square", "triangle", "star"))
    assert root == str(tmp_path / "shapes")
    assert sorted(os.listdir(root)) == ["circle", "square", "star", "triangle"]
    arrays = []
    for label in os.listdir(root):
        assert sorted(os.listdir(os.path.join(root, label))) == sorted(f"{label}_{i}.png" for i in range(5))
        for i in range(5):
            with Image.open(os.path.join(root, label, f"{label}_{i}.png")) as image:
                assert image.format == "PNG" and image.size == (48, 48) and image.mode == "RGB"
                arrays.append(np.asarray(image))
    assert len({a.tobytes() for a in arrays}) == 20  # all different
    assert all(np.unique(a.reshape(-1, 3), axis=0).shape[0] > 100 for a in arrays)  # noisy backgrounds
    again = write_shapes_dataset(tmp_path / "again", per_class=5, size=48, seed=1, classes=("circle", "square", "triangle", "star"))
    for label in os.listdir(root):
        for name in os.listdir(os.path.join(root, label)):
            with open(os.path.join(root, label, name), "rb") as a, open(os.path.join(again, label, name), "rb") as b:
                assert a.read() == b.read()
    dataset, messages = _source(root, check_balance=False)
    assert dataset.counts() == {"circle": 5, "square": 5, "star": 5, "triangle": 5} and messages == []
    with pytest.raises(ValueError, match="unknown shape"):
        write_shapes_dataset(tmp_path / "x", classes=("blob",))


def test_shape_mask_covers_a_plausible_area(tmp_path):
    # Geometry is the oracle: inscribed in a circle of radius r, a circle covers pi r^2, a square
    # 2 r^2, an equilateral triangle 3 sqrt(3) / 4 r^2 (the mask's first draw is the radius).
    from mlc.testing import images

    rng_args = [0, 0, 0]
    areas = {}
    for name in ("circle", "square", "triangle"):
        mask = np.asarray(images._shape_mask(name, 64, np.random.default_rng(rng_args))) / 255.0
        radius = np.random.default_rng(rng_args).uniform(0.22, 0.38) * 64
        areas[name] = mask.sum() / radius**2
    assert abs(areas["circle"] - np.pi) < 0.15
    assert abs(areas["square"] - 2.0) < 0.15
    assert abs(areas["triangle"] - 3 * np.sqrt(3) / 4) < 0.15


def test_digits_dataset_matches_scikit_learn(tmp_path):
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = write_digits_dataset(tmp_path / "digits", size=8, limit_per_class=3)
    assert root == str(tmp_path / "digits") and sorted(os.listdir(root)) == [str(d) for d in range(10)]
    for digit in range(10):
        first = np.flatnonzero(digits.target == digit)[:3]
        assert sorted(os.listdir(os.path.join(root, str(digit)))) == sorted(f"{i}.png" for i in first)
        for i in first:
            with Image.open(os.path.join(root, str(digit), f"{i}.png")) as image:
                expected = 255 - np.clip(digits.images[i] * 16, 0, 255).astype(np.uint8)
                np.testing.assert_array_equal(np.asarray(image.convert("L")), expected)
    big = write_digits_dataset(tmp_path / "big", size=32, limit_per_class=1)
    with Image.open(os.path.join(big, "0", "0.png")) as image:
        assert image.size == (32, 32)


def test_digits_split_sizes_per_class(tmp_path):
    from sklearn.datasets import load_digits

    target = load_digits().target
    train_root, test_root = write_digits_dataset(tmp_path / "d", fraction_test=0.2, seed=7, size=8)
    assert (train_root, test_root) == (str(tmp_path / "d" / "train"), str(tmp_path / "d" / "test"))
    total = 0
    for digit in range(10):
        n = int((target == digit).sum())
        train = set(os.listdir(os.path.join(train_root, str(digit))))
        test = set(os.listdir(os.path.join(test_root, str(digit))))
        assert len(test) == round(0.2 * n) and len(train) == n - round(0.2 * n)
        assert not train & test and train | test == {f"{i}.png" for i in np.flatnonzero(target == digit)}
        total += len(train) + len(test)
    assert total == len(target) == 1797
    small_train, small_test = write_digits_dataset(tmp_path / "s", fraction_test=0.25, limit_per_class=4, size=8)
    assert all(len(os.listdir(os.path.join(small_test, str(d)))) == 1 for d in range(10))
    assert all(len(os.listdir(os.path.join(small_train, str(d)))) == 3 for d in range(10))
    with pytest.raises(ValueError):
        write_digits_dataset(tmp_path / "bad", fraction_test=1.0)
