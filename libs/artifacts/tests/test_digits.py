"""digits.decode_image: the one conversion of a digit image (a served request, an incoming labelled file) to the
model's uint8 [28,28] white on black, on real MNIST digits written as the files a user sends."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from mnist_ct.artifacts.dataset import Split
from mnist_ct.artifacts.digits import DEFAULT_MAX_PIXELS, DigitImageError, decode_image


def encode(image: Image.Image, fmt: str = "PNG", **kw: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kw)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def digit(digits: Split) -> np.ndarray:
    return digits.images[0]


def test_a_28x28_png_comes_back_pixel_for_pixel(digits: Split) -> None:
    for image in digits.images[:50]:
        assert np.array_equal(decode_image(encode(Image.fromarray(image))), image)


def test_dark_on_light_is_inverted_to_white_on_black(digit: np.ndarray) -> None:
    assert np.array_equal(decode_image(encode(Image.fromarray(255 - digit))), digit)


def test_polarity_is_decided_by_the_border_not_the_whole_image() -> None:
    # A bright frame around a mostly dark middle: the border says "paper", so it is inverted.
    image = np.zeros((28, 28), dtype=np.uint8)
    image[0, :], image[-1, :], image[:, 0], image[:, -1] = 255, 255, 255, 255
    out = decode_image(encode(Image.fromarray(image)))
    assert out[0].max() == 0 and out[14, 14] == 255


def test_any_size_and_colour_is_resized_to_28x28_grayscale(digit: np.ndarray) -> None:
    big = Image.fromarray(digit).resize((280, 280), Image.Resampling.NEAREST).convert("RGB")
    out = decode_image(encode(big, "JPEG", quality=95))
    assert out.shape == (28, 28) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - digit.astype(int)).mean() < 12


def test_a_non_square_png_is_resized_to_28x28(digit: np.ndarray) -> None:
    out = decode_image(encode(Image.fromarray(digit).resize((40, 90))))
    assert out.shape == (28, 28) and np.abs(out.astype(int) - digit.astype(int)).mean() < 20


def test_transparent_canvas_uses_alpha_as_ink(digit: np.ndarray) -> None:
    rgba = np.zeros((28, 28, 4), dtype=np.uint8)  # black strokes on a transparent background
    rgba[..., 3] = digit
    assert np.array_equal(decode_image(encode(Image.fromarray(rgba, "RGBA"))), digit)


def test_an_opaque_alpha_channel_is_ignored(digit: np.ndarray) -> None:
    rgba = np.stack([digit, digit, digit, np.full_like(digit, 255)], axis=-1)
    assert np.array_equal(decode_image(encode(Image.fromarray(rgba, "RGBA"))), digit)


def test_16_bit_png_is_scaled_not_clipped(digit: np.ndarray) -> None:
    image = Image.fromarray(digit.astype(np.uint16) * 257)
    out = decode_image(encode(image))
    assert np.abs(out.astype(int) - digit.astype(int)).max() <= 1


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "empty"),
        (b"definitely not an image", "not a PNG or JPEG"),
        (encode(Image.new("L", (28, 28)), "GIF"), "not a PNG or JPEG"),
        (encode(Image.new("L", (28, 28)), "BMP"), "not a PNG or JPEG"),
    ],
)
def test_non_images_get_400(data: bytes, words: str) -> None:
    with pytest.raises(DigitImageError) as e:
        decode_image(data)
    assert e.value.status == 400 and words in e.value.message
    assert e.value.body() == {"code": 400, "type": "Bad Request", "message": e.value.message}


def test_truncated_png_gets_400(digit: np.ndarray) -> None:
    with pytest.raises(DigitImageError) as e:
        decode_image(encode(Image.fromarray(digit).resize((200, 200)))[:300])
    assert e.value.status == 400 and "corrupt PNG" in e.value.message


def test_image_with_too_many_pixels_gets_413_before_decoding() -> None:
    huge = encode(Image.new("L", (3000, 3000)))  # small file, 9 Mpixel
    with pytest.raises(DigitImageError) as e:
        decode_image(huge, max_pixels=1_000_000)
    assert e.value.status == 413 and "3000x3000" in e.value.message
    assert e.value.body()["type"] == "Payload Too Large"
    assert decode_image(huge, max_pixels=DEFAULT_MAX_PIXELS).shape == (28, 28)  # within the default limit
