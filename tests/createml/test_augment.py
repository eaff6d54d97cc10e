"""Create ML's image augmentations (mlc.createml.augment), checked against numpy oracles."""

import numpy as np
import pytest
from PIL import Image

import mlc
from mlc.createml.augment import (
    AUGMENTATIONS,
    augment,
    augmented_copies,
    copy_key,
    parse_augmentations,
)

WIDTH, HEIGHT = 128, 96  # not square, so a swapped width and height shows


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64)


def _random_image(seed: int = 0) -> Image.Image:
    values = np.random.default_rng(seed).integers(0, 256, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
    return Image.fromarray(values, "RGB")


def _only_copy(image: Image.Image, name: str, seed: int = 7, index: int = 0) -> Image.Image:
    [(copy_name, copy)] = augmented_copies(image, [name], seed=seed, index=index)
    assert copy_name == name
    return copy


# --- parse_augmentations ---------------------------------------------------------------------

@pytest.mark.parametrize("value", [None, "", " ", (), []])
def test_parse_nothing(value):
    assert parse_augmentations(value) == ()


@pytest.mark.parametrize("value, expected", [
    ("flip,rotate", ("flip", "rotate")),
    ("rotate, flip", ("flip", "rotate")),
    (" crop ,blur,", ("blur", "crop")),
    (["exposure", "noise"], ("noise", "exposure")),
    (("rotate",), ("rotate",)),
    ({"blur"}, ("blur",)),
    ("Flip, BLUR", ("blur", "flip")),
])
def test_parse_orders_like_augmentations(value, expected):
    assert parse_augmentations(value) == expected


@pytest.mark.parametrize("value", ["addNoise", "add_noise", "AddNoise", "noise", ["addNoise", "noise"]])
def test_parse_noise_aliases(value):
    assert parse_augmentations(value) == ("noise",)


def test_parse_create_ml_names_and_duplicates():
    create_ml = "addNoise, blur, crop, exposure, flip, rotation"
    assert parse_augmentations(create_ml) == AUGMENTATIONS
    assert parse_augmentations("rotation,rotate,flip,flip") == ("flip", "rotate")
    assert parse_augmentations(reversed(AUGMENTATIONS)) == AUGMENTATIONS


def test_parse_unknown_name_lists_valid_ones():
    with pytest.raises(mlc.MLCParametersError) as raised:
        parse_augmentations("flip,sharpen")
    message = str(raised.value)
    assert "sharpen" in message
    assert all(name in message for name in AUGMENTATIONS)
    assert raised.value.code == "parameters"


@pytest.mark.parametrize("value", [42, 1.5, b"flip", [1], ["flip", None], object()])
def test_parse_refuses_non_names(value):
    with pytest.raises(mlc.MLCParametersError):
        parse_augmentations(value)


# --- every augmentation -------------------------------------------------------------------

@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_keeps_size_and_mode(name):
    copy = _only_copy(_random_image(), name)
    assert copy.mode == "RGB"
    assert copy.size == (WIDTH, HEIGHT)


@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_deterministic_for_same_seed_and_index(name):
    image = _random_image()
    first, again = _only_copy(image, name, seed=3, index=5), _only_copy(image, name, seed=3, index=5)
    np.testing.assert_array_equal(_pixels(first), _pixels(again))


@pytest.mark.parametrize("name", [name for name in AUGMENTATIONS if name != "flip"])
def test_random_ones_differ_across_indices_and_seeds(name):
    image = _random_image()
    base = _pixels(_only_copy(image, name, seed=3, index=0))
    assert not np.array_equal(base, _pixels(_only_copy(image, name, seed=3, index=1)))
    assert not np.array_equal(base, _pixels(_only_copy(image, name, seed=4, index=0)))


def test_flip_is_the_same_for_every_seed_and_index():
    image = _random_image()
    np.testing.assert_array_equal(_pixels(_only_copy(image, "flip", seed=1, index=0)),
                                  _pixels(_only_copy(image, "flip", seed=2, index=9)))


def test_copies_do_not_depend_on_other_augmentations():
    image = _random_image()
    together = dict(augmented_copies(image, AUGMENTATIONS, seed=11, index=4))
    assert list(together) == list(AUGMENTATIONS)
    for name in AUGMENTATIONS:
        np.testing.assert_array_equal(_pixels(together[name]), _pixels(_only_copy(image, name, seed=11, index=4)))


def test_copies_follow_augmentations_order_and_accept_aliases():
    names = [name for name, _ in augmented_copies(_random_image(), "rotation,addNoise", seed=0, index=0)]
    assert names == ["noise", "rotate"]
    assert augmented_copies(_random_image(), None, seed=0, index=0) == []


def test_augment_takes_a_generator_directly():
    image = _random_image()
    first = augment(image, "rotation", np.random.default_rng(5))
    again = augment(image, "rotate", np.random.default_rng(5))
    np.testing.assert_array_equal(_pixels(first), _pixels(again))


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA", "I;16"])
@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_other_modes_are_converted_to_rgb(mode, name):
    image = _random_image().convert(mode) if mode != "I;16" else Image.new("I;16", (WIDTH, HEIGHT), 300)
    copy = _only_copy(image, name)
    assert copy.mode == "RGB"
    assert copy.size == (WIDTH, HEIGHT)


def test_grayscale_is_converted_like_pil_does():
    gray = _random_image().convert("L")
    expected = np.fliplr(_pixels(gray.convert("RGB")))
    np.testing.assert_array_equal(_pixels(_only_copy(gray, "flip")), expected)


def test_refuses_bad_arguments():
    with pytest.raises(mlc.MLCParametersError):
        augmented_copies(np.zeros((4, 4, 3), np.uint8), ["flip"], seed=0, index=0)
    with pytest.raises(mlc.MLCParametersError):
        augmented_copies(_random_image(), ["flip"], seed=-1, index=0)
    with pytest.raises(mlc.MLCParametersError):
        augmented_copies(_random_image(), ["flip"], seed=0, index=1.5)
    with pytest.raises(mlc.MLCParametersError):
        augment(_random_image(), "sharpen", np.random.default_rng(0))


# --- what each augmentation does, against numpy -------------------------------------------------

def test_flip_mirrors_left_and_right():
    image = _random_image(1)
    np.testing.assert_array_equal(_pixels(_only_copy(image, "flip")), np.fliplr(_pixels(image)))


def test_exposure_scales_every_pixel_by_one_factor_within_two_stops():
    values = np.random.default_rng(2).integers(10, 121, size=(HEIGHT, WIDTH, 3))  # x2 cannot clip
    image = Image.fromarray(values.astype(np.uint8), "RGB")
    factors = []
    for index in range(12):
        out = _pixels(_only_copy(image, "exposure", index=index))
        factor = out.mean() / values.mean()
        assert 0.5 - 1e-2 <= factor <= 2.0 + 1e-2
        assert np.abs(out - values * factor).max() <= 1.0  # one factor for all, up to rounding
        factors.append(factor)
    assert min(factors) < 0.9 and max(factors) > 1.1  # both darker and brighter copies


def test_exposure_clips_at_white():
    white = Image.new("RGB", (WIDTH, HEIGHT), (250, 250, 250))
    for index in range(6):
        assert _pixels(_only_copy(white, "exposure", index=index)).max() <= 255


def test_noise_is_zero_mean_with_a_few_percent_std():
    grey = Image.new("RGB", (WIDTH, HEIGHT), (128, 128, 128))
    stds = []
    for index in range(5):
        residual = _pixels(_only_copy(grey, "noise", index=index)) - 128.0
        assert np.mean(residual != 0) > 0.8
        assert abs(residual.mean()) < 0.5
        assert 0.02 * 255 * 0.9 <= residual.std() <= 0.05 * 255 * 1.1
        stds.append(residual.std())
    assert np.ptp(stds) > 0.1  # the strength is random too


def test_noise_is_clipped():
    black = Image.new("RGB", (WIDTH, HEIGHT), (0, 0, 0))
    out = _pixels(_only_copy(black, "noise"))
    assert out.min() == 0 and out.max() > 0


def _laplacian_variance(pixels: np.ndarray) -> float:
    gray = pixels.mean(axis=2)
    laplacian = (gray[:-2, 1:-1] + gray[2:, 1:-1] + gray[1:-1, :-2] + gray[1:-1, 2:] - 4 * gray[1:-1, 1:-1])
    return float(laplacian.var())


def test_blur_lowers_high_frequency_energy_of_a_checkerboard():
    rows, columns = np.indices((HEIGHT, WIDTH))
    board = np.where(((rows // 2) + (columns // 2)) % 2 == 0, 255, 0).astype(np.uint8)
    image = Image.fromarray(np.stack([board] * 3, axis=-1), "RGB")
    before = _laplacian_variance(_pixels(image))
    for index in range(5):
        blurred = _pixels(_only_copy(image, "blur", index=index))
        assert _laplacian_variance(blurred) < 0.6 * before
        assert abs(blurred.mean() - _pixels(image).mean()) < 3  # blurring keeps the average


def _gradient_image() -> tuple[Image.Image, int, int]:
    """Red encodes the column (3 per pixel), green the row (2 per pixel): every pixel is unique."""
    rows, columns = np.indices((HEIGHT, WIDTH))
    red_step, green_step = 255 // WIDTH + 1, 2
    pixels = np.stack([columns * red_step, rows * green_step, np.full_like(rows, 77)], axis=-1)
    assert pixels.max() <= 255
    return Image.fromarray(pixels.astype(np.uint8), "RGB"), red_step, green_step


def _fit_window(profile: np.ndarray, step: int, size: int) -> tuple[float, float]:
    """The (start, kept fraction) of the source window that a resized 1-D linear ramp shows:
    output pixel j samples source coordinate start + (j + 0.5) * kept - 0.5 (pixel centres)."""
    centres = np.arange(size) + 0.5
    inner = slice(1, size - 1)  # the outermost pixels may be clamped at the image's border
    slope, intercept = np.polyfit(centres[inner], profile[inner] / step, 1)
    residual = profile[inner] / step - (slope * centres[inner] + intercept)
    assert np.abs(residual).max() < 1.0  # a linear ramp: a resized window, nothing else
    return intercept + 0.5, slope


def test_crop_is_a_resized_sub_window():
    image, red_step, green_step = _gradient_image()
    windows = set()
    for index in range(8):
        out = _pixels(_only_copy(image, "crop", index=index))
        np.testing.assert_allclose(out[..., 2], 77)
        red, green = out[..., 0], out[..., 1]
        assert np.ptp(red, axis=0).max() <= 1 and np.ptp(green, axis=1).max() <= 1  # no shear, no rotation
        left, keep_x = _fit_window(red.mean(axis=0), red_step, WIDTH)
        top, keep_y = _fit_window(green.mean(axis=1), green_step, HEIGHT)
        assert 0.6 - 0.02 <= keep_x <= 0.9 + 0.02 and 0.6 - 0.02 <= keep_y <= 0.9 + 0.02
        assert abs(keep_x - keep_y) < 0.03  # the same fraction of both sides: aspect ratio kept
        assert -0.5 <= left and left + keep_x * WIDTH <= WIDTH + 0.5
        assert -0.5 <= top and top + keep_y * HEIGHT <= HEIGHT + 0.5
        # the corners show the window's corners
        assert abs(red[0, 0] / red_step - (left + 0.5 * keep_x - 0.5)) <= 1
        assert abs(red[-1, -1] / red_step - (left + (WIDTH - 0.5) * keep_x - 0.5)) <= 1
        assert abs(green[-1, 0] / green_step - (top + (HEIGHT - 0.5) * keep_y - 0.5)) <= 1
        windows.add((round(left), round(top), round(keep_x * WIDTH)))
    assert len(windows) > 4  # random windows


def _centroid(mask: np.ndarray) -> np.ndarray:
    rows, columns = np.nonzero(mask)
    return np.array([rows.mean(), columns.mean()])


def _centred_shape(draw) -> Image.Image:
    rows, columns = np.indices((HEIGHT, WIDTH))
    dy, dx = rows - (HEIGHT - 1) / 2, columns - (WIDTH - 1) / 2
    mask = draw(dy, dx)
    return Image.fromarray(np.stack([np.where(mask, 255, 0).astype(np.uint8)] * 3, axis=-1), "RGB")


def test_rotate_keeps_a_centred_disc_centred():
    disc = _centred_shape(lambda dy, dx: dy ** 2 + dx ** 2 <= 30 ** 2)
    centre = np.array([(HEIGHT - 1) / 2, (WIDTH - 1) / 2])
    area = (_pixels(disc)[..., 0] > 127).sum()
    for index in range(5):
        bright = _pixels(_only_copy(disc, "rotate", index=index))[..., 0] > 127
        assert np.abs(_centroid(bright) - centre).max() < 1.0
        assert abs(bright.sum() - area) < 0.03 * area


def test_rotate_turns_an_arm_by_at_most_30_degrees_and_fills_corners_black():
    arm = _centred_shape(lambda dy, dx: (np.abs(dy) <= 3) & (dx >= 8) & (dx <= 44))
    white = Image.new("RGB", (WIDTH, HEIGHT), (255, 255, 255))
    angles = []
    for index in range(8):
        bright = _pixels(_only_copy(arm, "rotate", index=index))[..., 0] > 127
        dy, dx = _centroid(bright) - np.array([(HEIGHT - 1) / 2, (WIDTH - 1) / 2])
        angle = np.degrees(np.arctan2(-dy, dx))  # counter-clockwise, image rows grow downwards
        assert abs(angle) <= 30 + 1.5
        angles.append(angle)
        turned_white = _pixels(_only_copy(white, "rotate", index=index))
        assert turned_white[HEIGHT // 2, WIDTH // 2].min() == 255
        if abs(angle) > 5:
            corners = turned_white[[0, 0, -1, -1], [0, -1, 0, -1]]
            np.testing.assert_array_equal(corners, 0)
    assert max(np.abs(angles)) > 5  # the arm moved
    assert np.ptp(angles) > 5  # by random angles


# --- copy_key -----------------------------------------------------------------------------------

def test_copy_key_is_short_stable_and_distinct():
    keys = {copy_key(name, 3) for name in AUGMENTATIONS}
    assert len(keys) == len(AUGMENTATIONS)
    assert all(isinstance(key, str) and len(key) < 24 for key in keys)
    assert copy_key("rotation", 3) == copy_key("rotate", 3) == "rotate.v1.s3"
    assert copy_key("rotate", 3) != copy_key("rotate", 4)
    assert copy_key("flip", 3) == copy_key("flip", 4)  # flipping ignores the seed
    with pytest.raises(mlc.MLCParametersError):
        copy_key("sharpen", 3)


def test_each_augmentation_draws_from_its_own_stream():
    from mlc.createml.augment import copy_rng

    draws = {tuple(copy_rng(3, 5, name).random(4)) for name in AUGMENTATIONS}
    assert len(draws) == len(AUGMENTATIONS)
    assert copy_rng(3, 5, "rotation").random() == copy_rng(3, 5, "rotate").random()
