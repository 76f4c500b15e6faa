"""A digit image as the model sees it: PNG/JPEG bytes -> uint8 [28,28], white digit on black.

The one implementation of that conversion: the serving handler decodes every request with it (deploy
copies this file into the model archive as mnist_ct_digits.py, so the .mar needs no mnist_ct package) and
preprocess converts every incoming labelled image with it, so a digit is trained on exactly as it is served.

- transparency: if the image has a non-trivial alpha channel, the alpha channel is the ink (so a digit drawn
  on a transparent canvas works whatever its colour); otherwise the luminance is used (16-bit and float
  grayscale scaled to 0..255);
- size: resized to 28x28 with Pillow's antialiased bilinear filter (a 28x28 image is used as is; a big JPEG
  is decoded at a reduced scale first);
- polarity: if the mean of the 28x28 image's border pixels is above 127 the image is taken as dark-on-light
  (a scan, a photo of paper) and inverted, so MNIST's white-on-black always reaches the model.

Imports only numpy and Pillow (it runs inside TorchServe's worker).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

SIDE = 28
FORMATS = ("PNG", "JPEG")
DEFAULT_MAX_PIXELS = 4096 * 4096
HOW_TO_SEND = (
    "send one PNG or JPEG: the raw bytes with Content-Type image/png or image/jpeg, a multipart file, "
    'or JSON {"data": "<base64>"}'
)
PHRASES = {400: "Bad Request", 413: "Payload Too Large"}


class DigitImageError(Exception):
    """An image (or a request's item) is unusable; `status` is the HTTP code it gets, the message says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"code": self.status, "type": PHRASES.get(self.status, "Error"), "message": self.message}


# -- decoding: bytes -> 28x28 uint8, white digit on black -------------------------------------


def to_mnist(image: Image.Image) -> np.ndarray:
    """A decoded image as uint8 [28,28], white digit on black (the module docstring)."""
    gray = _ink(image)
    if gray.size != (SIDE, SIDE):
        gray = gray.resize((SIDE, SIDE), Image.Resampling.BILINEAR)
    pixels = np.asarray(gray, dtype=np.uint8)
    border = np.concatenate([pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]])
    if border.mean() > 127:
        pixels = 255 - pixels
    return np.ascontiguousarray(pixels)


def _ink(image: Image.Image) -> Image.Image:
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        alpha = image.convert("RGBA").getchannel("A")
        if int(np.asarray(alpha).min()) < 255:  # some transparency: the alpha channel is the drawing
            return alpha
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # 16-bit and float grayscale: scale to 0..255 (Pillow's convert("L") would clip instead).
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(values.max()), 1.0)
        return Image.fromarray(np.clip(values * (255.0 / top), 0, 255).astype(np.uint8))
    return image.convert("L")


def decode_image(data: bytes | bytearray, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """PNG/JPEG bytes -> uint8 [28,28] white on black; DigitImageError (400/413) for anything else."""
    if not data:
        raise DigitImageError(400, f"empty image: {HOW_TO_SEND}")
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as e:
        raise DigitImageError(413, f"image too large ({e})") from None
    except Exception as e:  # noqa: BLE001 - any undecodable input is the client's error
        raise DigitImageError(400, f"not a PNG or JPEG image ({type(e).__name__}); {HOW_TO_SEND}") from None
    width, height = image.size
    if width < 1 or height < 1:
        raise DigitImageError(400, f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise DigitImageError(413, f"image is {width}x{height} pixels, more than the limit of {max_pixels}")
    try:
        if image.format == "JPEG":
            image.draft("L", (2 * SIDE, 2 * SIDE))  # decode a big JPEG at a reduced scale: much faster
        image.load()
        return to_mnist(image)
    except Image.DecompressionBombError as e:
        raise DigitImageError(413, f"image too large ({e})") from None
    except Exception as e:  # noqa: BLE001 - truncated or corrupt files fail here, not at open
        raise DigitImageError(400, f"corrupt {image.format} image ({type(e).__name__}: {e})") from None
