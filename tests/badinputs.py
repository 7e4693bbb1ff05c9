"""A folder of awkward user files, one per case reportgen must survive.

``make_bad_folder(root)`` writes them and says what loading each should give:

* ``"ok"``: loads with an empty note;
* ``"converted"``: loads as ``uint8 [H, W, 3]`` with a note holding ``NOTES[name]``;
* ``"skipped"``: ``load_photo`` raises ``DataError`` naming the file and ``REASONS[name]``;
* ``"ignored"``: hidden, so ``folder_records`` gives no record at all.

Fast (well under 2 s) and deterministic (same bytes every call). The 8000x8000 photo is a flat
JPEG (about 1 MB, 0.2 s to encode). The decompression bomb is a hand-written PNG whose header
claims 20000x20000 pixels and holds no pixel data: PIL refuses it at open time, before decoding
anything, so the real limit is exercised without a big file (the 1x..2x warning band is tested
by lowering ``Image.MAX_IMAGE_PIXELS`` instead). Needs a POSIX file system for the names with
``<>"``; ``A.jpg`` is left out where the file system ignores case.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

W, H = 64, 48  # every small photo: big enough not to count as tiny

NOTES = {  # file -> a phrase its note must hold
    "grey.png": "grey converted to RGB",
    "rgba.png": "RGBA composited on white",
    "palette.png": "palette converted to RGB",
    "palette_transparent.png": "palette with transparency composited on white",
    "grey16.png": "16-bit scaled to 8-bit",
    "grey16.tif": "16-bit scaled to 8-bit",
    "rgb16.png": "16-bit scaled to 8-bit",
    "cmyk.jpg": "CMYK converted to RGB",
    "exif_rotated.jpg": "rotated per EXIF orientation",
    "animated.gif": "first frame of 3",
    "tiny.png": "tiny (8x8): up-sampled to the model input",
    "huge.jpg": "reduced from 8000x8000 to 4000x4000 on load",
}
REASONS = {  # file -> a phrase its DataError must hold
    "notes.txt": "not an image file (suffix '.txt')",
    "empty.png": "empty file (0 bytes)",
    "corrupt.jpg": "not a readable image",
    "truncated.jpg": "truncated file",
    "bomb.png": "decompression-bomb limit",
}


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _png(width: int, height: int, depth: int, colour: int, pixels: bytes) -> bytes:
    """A minimal PNG written by hand, for what PIL cannot write: 16-bit RGB, a lying header."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    chunks = [(b"IHDR", header), (b"IDAT", zlib.compress(pixels)), (b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunk(kind, body) for kind, body in chunks)


def _flat(mode: str, size: tuple[int, int], colour: tuple | int, fmt: str = "PNG") -> bytes:
    return _encode(Image.new(mode, size, colour), fmt)


def _halves(left: tuple, right: tuple, mode: str = "RGB") -> Image.Image:
    """A W x H photo, left half one colour, right half another (so turns and alpha show)."""
    image = Image.new(mode, (W, H), left)
    image.paste(right, (W // 2, 0, W, H))
    return image


def _photo() -> Image.Image:
    """A plain RGB photo with some texture, the same every call."""
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8))


def _palette(transparent: bool) -> bytes:
    image = _halves(0, 1, "P")
    image.putpalette([0, 0, 255, 0, 160, 0])
    return _encode(image, "PNG", **({"transparency": 0} if transparent else {}))


def _grey16(fmt: str) -> bytes:
    pixels = np.full((H, W), 65535, np.uint16)
    pixels[:, W // 2 :] = 32768
    return _encode(Image.fromarray(pixels), fmt)  # mode I;16


def _rgb16() -> bytes:
    pixels = np.zeros((H, W, 3), ">u2")
    pixels[...] = (65535, 32768, 0)
    rows = b"".join(b"\0" + row.tobytes() for row in pixels)  # filter byte 0 per row
    return _png(W, H, 16, 2, rows)


def _exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: turn 90 degrees clockwise to show upright
    return _encode(_halves((255, 0, 0), (0, 0, 255)), "JPEG", exif=exif, quality=95)


def _animated() -> bytes:
    frames = [
        Image.new("RGB", (W, H), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))
    ]
    return _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)


def _truncated() -> bytes:
    whole = _encode(_photo(), "JPEG")
    return whole[: len(whole) * 6 // 10]


FILES: dict[str, tuple[str, Callable[[], bytes]]] = {  # name -> (outcome, its bytes)
    "plain.jpg": ("ok", lambda: _encode(_photo(), "JPEG", quality=95)),
    "plain.png": ("ok", lambda: _encode(_photo(), "PNG")),
    "jpeg_named.png": ("ok", lambda: _encode(_photo(), "JPEG")),  # PIL goes by content
    "a.jpg": ("ok", lambda: _encode(_photo(), "JPEG")),
    "a.png": ("ok", lambda: _encode(_photo(), "PNG")),
    "A.jpg": ("ok", lambda: _encode(_photo(), "JPEG")),  # clashes with a.jpg ignoring case
    "with space.png": ("ok", lambda: _encode(_photo(), "PNG")),
    "猫 cat.jpg": ("ok", lambda: _encode(_photo(), "JPEG")),
    "<b>&\"x'.png": ("ok", lambda: _encode(_photo(), "PNG")),
    "sub dir/nested.png": ("ok", lambda: _encode(_photo(), "PNG")),
    "grey.png": ("converted", lambda: _flat("L", (W, H), 100)),
    "rgba.png": ("converted", lambda: _encode(_halves((0,) * 4, (200, 0, 0, 255), "RGBA"), "PNG")),
    "palette.png": ("converted", lambda: _palette(transparent=False)),
    "palette_transparent.png": ("converted", lambda: _palette(transparent=True)),
    "grey16.png": ("converted", lambda: _grey16("PNG")),
    "grey16.tif": ("converted", lambda: _grey16("TIFF")),
    "rgb16.png": ("converted", _rgb16),
    "cmyk.jpg": ("converted", lambda: _flat("CMYK", (W, H), (0, 255, 255, 0), "JPEG")),
    "exif_rotated.jpg": ("converted", _exif_rotated),
    "animated.gif": ("converted", _animated),
    "tiny.png": ("converted", lambda: _flat("RGB", (8, 8), (0, 128, 255))),
    "huge.jpg": ("converted", lambda: _flat("RGB", (8000, 8000), (90, 120, 150), "JPEG")),
    "notes.txt": ("skipped", lambda: b"not an image\n"),
    "empty.png": ("skipped", lambda: b""),
    "corrupt.jpg": ("skipped", lambda: bytes(range(256)) * 4),
    "truncated.jpg": ("skipped", _truncated),
    "bomb.png": ("skipped", lambda: _png(20000, 20000, 8, 0, b"")),
    ".DS_Store": ("ignored", lambda: b"\0\0\0\1Bud1"),
    ".hidden/secret.png": ("ignored", lambda: _encode(_photo(), "PNG")),
}
CASES = {name: outcome for name, (outcome, _) in FILES.items()}


def _ignores_case(root: Path) -> bool:
    probe = root / ".Case-Probe"
    probe.touch()
    try:
        return (root / ".case-probe").exists()
    finally:
        probe.unlink()


def make_bad_folder(root: Path) -> dict[str, str]:
    """Write every case of ``FILES`` into ``root`` (a new or empty folder) and return
    ``{relative name: "ok" | "converted" | "skipped" | "ignored"}`` for those written."""
    root.mkdir(parents=True, exist_ok=True)
    ignores_case = _ignores_case(root)
    written: dict[str, str] = {}
    for name, (outcome, make) in FILES.items():
        if ignores_case and name.lower() in {n.lower() for n in written}:
            continue
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(make())
        written[name] = outcome
    return written
