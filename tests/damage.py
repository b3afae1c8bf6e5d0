"""Damage helpers several test folders use (tests/conftest.py puts this folder on the path)."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path


def bit_flipped(src: Path, dst: Path) -> Path:
    """A copy of a torch zip file with one exponent bit flipped in the first value of its largest tensor
    (a float32 of ~0.01 becomes ~1e36); the member's stored CRC-32 no longer matches. ``dst`` may be ``src``."""
    data = bytearray(Path(src).read_bytes())
    with zipfile.ZipFile(src) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    name_len, extra_len = struct.unpack_from("<HH", data, info.header_offset + 26)
    start = info.header_offset + 30 + name_len + extra_len
    data[start + 3] ^= 0x40  # the high byte of a little-endian float32: exponent + 128
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    Path(dst).write_bytes(bytes(data))
    return Path(dst)
