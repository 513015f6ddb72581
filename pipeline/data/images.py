"""Image decoding: read one image file, orient it upright and resize it to a network's input.

``load_image`` decodes JPEG, PNG and TIFF to 8-bit RGB; ``black_frame_box`` finds a black
rectangular frame to cut; any missing, unreadable or undecodable file raises ``BadImageError``. The
content-keyed cache of decoded images (and the ``images`` command) is ``pipeline.data.image_cache``.

Size order: a size is ``(width, height)`` everywhere in this module, Pillow's order and the order
of ``--size W --height H``; arrays are ``(height, width, 3)``, numpy's order. The aspect ratio is
distorted to fit, as in the paper.

Resampling filter: bicubic. Pillow widens the kernel by the scale factor when shrinking, so it
antialiases like Lanczos, with less ringing at the hard edges of frames and hair, and at lower cost;
``reducing_gap=3`` first shrinks large images by an integer box filter, which Pillow documents as
indistinguishable from the full resampling at that gap.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import ExifTags, Image, ImageFile, ImageOps, UnidentifiedImageError

from pipeline.errors import PipelineError

DECODER_VERSION = 1  # bump when a change here changes the pixels, so old entries are not reused
# Default limit against decompression bombs: 10,000 x 10,000; dermoscopy and fundus photos are at
# most ~30 Mpx. ``load_image`` checks its own ``max_pixels`` (the config's data.max_image_pixels)
# right after reading the header, before decoding, so Pillow's global check is switched off.
MAX_PIXELS = 100_000_000
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is bad input, never half an image
RESAMPLE = Image.Resampling.BICUBIC
REDUCING_GAP = 3.0
FRAME_THRESHOLD = 20  # max channel value below which a pixel counts as frame (JPEG noise ~5-15)
FRAME_FRACTION = 0.98  # share of dark pixels that makes a row or column part of a frame
_ROTATED = {5, 6, 7, 8}  # EXIF orientations that swap width and height


class BadImageError(PipelineError):
    """An image file that is missing, unreadable or cannot be decoded.

    Attributes:
        path: the file.
        reason: the short cause, as written to ``skipped.csv``.
    """

    def __init__(self, path: str | os.PathLike, reason: str,
                 fix: str = "Repair or replace the file"):
        self.path, self.reason, self.fix = str(path), reason, fix
        super().__init__(f"cannot use image file {path}: {reason}. {fix}.")


def as_size(size: int | tuple[int, int]) -> tuple[int, int]:
    """``(width, height)`` from an int (square) or a pair, refusing anything else."""
    pair = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in pair):
        raise PipelineError(f"image size must be a positive int or a (width, height) pair of "
                            f"positive ints. Got {size!r} instead.")
    return int(pair[0]), int(pair[1])


def _to_rgb(img: Image.Image, path: str | os.PathLike) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I"):
        # 16-bit grayscale: convert("RGB") would clip at 255, so scale 0..65535 down to 0..255.
        arr = np.clip(np.asarray(img, dtype=np.float64), 0, 65535) / 257.0
        return Image.fromarray(np.rint(arr).astype(np.uint8), "L").convert("RGB")
    if img.mode == "F":
        raise BadImageError(path, "floating-point pixels (mode F) have no defined range; "
                                  "save the image as 8- or 16-bit")
    return img.convert("RGB")  # L, P, LA, PA, RGBA (alpha dropped), CMYK, YCbCr, 1


def _decode(path: str | os.PathLike, draft: tuple[int, int] | None,
            max_pixels: int = MAX_PIXELS) -> tuple[Image.Image, bool]:
    """Decode to an upright RGB image; JPEGs at reduced scale when ``draft`` (width, height) allows.

    Returns:
        The image and whether it was decoded at reduced scale.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:  # reads the header only
                full = img.size
                if full[0] * full[1] > max_pixels:
                    raise BadImageError(
                        path, f"{full[0]}x{full[1]} = {full[0] * full[1]:,} pixels is over the "
                              f"limit of {max_pixels:,} pixels, refused as a possible "
                              "decompression bomb",
                        fix="If the photo is genuine, raise `data.max_image_pixels` in the "
                            "experiment config (or --max-pixels) above its pixel count")
                if draft is not None and img.format == "JPEG":
                    width, height = draft
                    if img.getexif().get(ExifTags.Base.Orientation, 1) in _ROTATED:
                        width, height = height, width  # draft sizes are before the EXIF rotation
                    # Pillow picks the largest DCT scale (1/2, 1/4, 1/8) that keeps both sides
                    # at least as large as the requested size.
                    img.draft("RGB", (width, height))
                reduced = img.size != full
                img.load()
                upright = ImageOps.exif_transpose(img)  # a new image, valid after the file closes
                return _to_rgb(upright, path), reduced
    except BadImageError:
        raise
    except FileNotFoundError:
        raise BadImageError(path, "file not found") from None
    except (PermissionError, IsADirectoryError) as exc:
        raise BadImageError(path, f"cannot read the file ({exc.strerror})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Only when Pillow's own global limit was set again elsewhere; ``max_pixels`` rules here.
        raise BadImageError(path, f"refused as a possible decompression bomb: {exc}",
                            fix="If the photo is genuine, raise the pixel limit") from None
    except UnidentifiedImageError:
        raise BadImageError(path, "not a readable image (corrupt, or not JPEG/PNG/TIFF)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise BadImageError(path, f"corrupt or truncated image data ({exc})") from None


def black_frame_box(image: np.ndarray, threshold: int = FRAME_THRESHOLD,
                    fraction: float = FRAME_FRACTION) -> tuple[int, int, int, int]:
    """The box inside a black rectangular frame (the Interactive Atlas has some).

    A row or column is frame if at least ``fraction`` of its pixels have a max channel value below
    ``threshold``, which tolerates JPEG noise. Only frame rows and columns at the edges are cut;
    an image that is frame everywhere is not cropped at all.

    Args:
        image: array of shape (height, width, 3) or (height, width).
        threshold: darkest value that counts as image content.
        fraction: share of dark pixels that makes a row or column frame.

    Returns:
        ``(left, upper, right, lower)``, as for ``PIL.Image.crop`` (right and lower exclusive).
    """
    image = np.asarray(image)
    dark = (image.max(axis=2) if image.ndim == 3 else image) < threshold
    rows = np.flatnonzero(dark.mean(axis=1) < fraction)
    cols = np.flatnonzero(dark.mean(axis=0) < fraction)
    if rows.size == 0 or cols.size == 0:
        return 0, 0, dark.shape[1], dark.shape[0]
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def load_image(path: str | os.PathLike, size: int | tuple[int, int], *,
               crop_black_frame: bool = False, reduced_decode: bool = True,
               max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode one image and resize it to the network's input, distorting the aspect ratio.

    JPEG, PNG and TIFF; grayscale, palette, RGBA (alpha dropped), CMYK and 16-bit images become
    8-bit RGB. The EXIF orientation is applied before anything else looks at the pixels.

    Args:
        path: the image file.
        size: ``(width, height)`` of the result, or one int for a square.
        crop_black_frame: cut a black rectangular frame first (see ``black_frame_box``).
        reduced_decode: decode JPEGs at 1/2, 1/4 or 1/8 scale (``Image.draft``) when that still
            leaves at least ``size`` pixels; much faster for large photos.
        max_pixels: refuse images of more pixels (width x height) than this, before decoding
            them, as possible decompression bombs.

    Returns:
        uint8 array of shape (height, width, 3).

    Raises:
        BadImageError: (a ``PipelineError``) the file is missing, unreadable, corrupt, truncated
            or too large.
    """
    width, height = as_size(size)
    img, reduced = _decode(path, (width, height) if reduced_decode else None, max_pixels)
    if crop_black_frame:
        box = black_frame_box(np.asarray(img))
        if reduced and (box[2] - box[0] < width or box[3] - box[1] < height):
            # The frame took so much that the reduced decode inside it is smaller than the target.
            img, _ = _decode(path, None, max_pixels)
            box = black_frame_box(np.asarray(img))
        img = img.crop(box)
    img = img.resize((width, height), RESAMPLE, reducing_gap=REDUCING_GAP)
    return np.array(img, dtype=np.uint8)
