"""JPEG encoders for the video stream, behind one call: `encoder(name)(rgb, quality) -> bytes`.

Three real codecs can do the job; `benchmarks/serve_load.py --encoders` times them on
rendered frames and docs/server.md records the result. simplejpeg is the default: it
was fastest or tied at the preview sizes here (see docs/server.md for the numbers), it
ships libjpeg-turbo inside its wheel (PyTurboJPEG needs the system libturbojpeg, which a
pip install does not bring), and it encodes straight from a contiguous uint8 RGB array.
Pillow is kept as a fallback because it is always installed.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np

from ...errors import PersonaError

Encoder = Callable[[np.ndarray, int], bytes]


def _simplejpeg() -> Encoder:
    import simplejpeg

    def encode(rgb: np.ndarray, quality: int) -> bytes:
        return simplejpeg.encode_jpeg(np.ascontiguousarray(rgb), quality=quality, colorspace="RGB", colorsubsampling="420")

    return encode


def _turbojpeg() -> Encoder:
    from turbojpeg import TJPF_RGB, TJSAMP_420, TurboJPEG

    codec = TurboJPEG()  # raises if the system libturbojpeg is missing

    def encode(rgb: np.ndarray, quality: int) -> bytes:
        return codec.encode(np.ascontiguousarray(rgb), quality=quality, pixel_format=TJPF_RGB, jpeg_subsample=TJSAMP_420)

    return encode


def _pillow() -> Encoder:
    from PIL import Image

    def encode(rgb: np.ndarray, quality: int) -> bytes:
        out = io.BytesIO()
        Image.fromarray(rgb, "RGB").save(out, "JPEG", quality=quality, subsampling=2)
        return out.getvalue()

    return encode


ENCODERS: dict[str, Callable[[], Encoder]] = {"simplejpeg": _simplejpeg, "turbojpeg": _turbojpeg, "pillow": _pillow}
DEFAULT_ENCODER = "simplejpeg"


class EncoderUnavailableError(PersonaError, RuntimeError):
    """The named JPEG library is not installed (or its system library is missing)."""


def make_encoder(name: str = DEFAULT_ENCODER) -> Encoder:
    if name not in ENCODERS:
        raise ValueError(f"unknown JPEG encoder {name!r}; known: {', '.join(ENCODERS)}")
    try:
        return ENCODERS[name]()
    except (ImportError, OSError, RuntimeError) as exc:
        raise EncoderUnavailableError(f"JPEG encoder {name!r} is unavailable: {exc}") from exc
