"""Uploaded images: size and pixel limits, decoded in full before anything keeps them, stored by
content hash (the uploaded name is only ever quoted in messages, never used as a path)."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from fastapi import status
from PIL import Image, UnidentifiedImageError

from quickstudy.serve.settings import MEGABYTE

# The formats an upload may be in, and the suffix its file gets. Any other format PIL knows is refused:
# some run outside programs (EPS calls Ghostscript) and the rest of quickstudy reads only these.
SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp"}
# what the multipart encoding of one file and a few small fields adds to the file's own bytes
FORM_OVERHEAD = 64 * 1024


class UploadRefused(Exception):
    """An upload that is not kept: the HTTP status and one line saying why."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True)
class CheckedImage:
    """An uploaded image that decoded in full within the limits; ``name`` is the client's file
    name, quoted for messages."""

    name: str
    data: bytes
    suffix: str
    width: int
    height: int

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def _megabytes(n: int) -> str:
    return f"{n / MEGABYTE:g} MB"


def quoted(filename: str | None) -> str:
    """The client's file name, for messages only."""
    return repr((filename or "upload")[:80])


def read_upload(file: BinaryIO, filename: str | None, max_bytes: int) -> bytes:
    """The bytes of an uploaded file of at most ``max_bytes``. The application's body limit stops a
    far larger request before it is parsed; this makes the limit exact for the file itself."""
    data = file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UploadRefused(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"{quoted(filename)}: larger than the upload limit of {_megabytes(max_bytes)}",
        )
    if not data:
        raise UploadRefused(status.HTTP_422_UNPROCESSABLE_CONTENT, f"{quoted(filename)}: an empty file")
    return data


def check_image(data: bytes, filename: str | None, max_pixels: int) -> CheckedImage:
    """Decode every pixel of ``data``; refuse a file that is not an image of :data:`SUFFIXES`'
    formats (415), holds more than ``max_pixels`` pixels (413: a decompression bomb states a huge
    size in a small file), or is truncated or damaged (422)."""
    name = quoted(filename)
    Image.init()  # registers every format plugin; open() with `formats` looks only among the registered
    with warnings.catch_warnings():
        # PIL only warns between its own limit and twice it; either way the file is refused
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=list(SUFFIXES)) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise UploadRefused(
                        status.HTTP_413_CONTENT_TOO_LARGE,
                        f"{name}: {width}x{height} is more than the limit of {max_pixels} pixels "
                        "(refused as a possible decompression bomb)",
                    )
                image.load()
                # a JPEG holding several pictures (a phone's MPO) opens as MPO
                suffix = SUFFIXES["JPEG" if image.format == "MPO" else str(image.format)]
        except UnidentifiedImageError:
            raise UploadRefused(
                status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                f"{name}: not an image in a format this server takes ({', '.join(SUFFIXES)})",
            ) from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise UploadRefused(
                status.HTTP_413_CONTENT_TOO_LARGE,
                f"{name}: refused as a possible decompression bomb ({error})",
            ) from None
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            raise UploadRefused(
                status.HTTP_422_UNPROCESSABLE_CONTENT, f"{name}: a truncated or damaged image ({error})"
            ) from None
    return CheckedImage(name, data, suffix, width, height)


def keep_image(image: CheckedImage, folder: Path) -> Path:
    """Write ``image`` as ``folder/<sha256><suffix>`` (whole or not at all) and return that path;
    the same bytes uploaded again land on the same file."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{image.sha256}{image.suffix}"
    if not path.is_file():
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".upload-", delete=False) as handle:
            try:
                handle.write(image.data)
                handle.flush()
                os.fsync(handle.fileno())
            except BaseException:
                os.unlink(handle.name)
                raise
        os.replace(handle.name, path)
    return path.resolve()
