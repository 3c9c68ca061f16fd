"""The integrity check of a zip package: an accepted archive never fails a request later."""

from __future__ import annotations

import os
import struct
import zipfile
import zlib
from collections.abc import Callable

from eprd.model import limits


class ZipDamaged(ValueError):
    """An archive, or an entry of it, that cannot be served as it is."""


_ZIP_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}
_CHECK_CHUNK = 1 << 20


def check_zip(
    archive: zipfile.ZipFile, keep: Callable[[zipfile.ZipInfo], bool] | None = None, keep_bytes: int = 0
) -> dict[str, bytes]:
    """Make sure every entry of ``archive`` can be read, once, within the limits; else ZipDamaged.

    Returns the content of the entries ``keep`` selects, by name, as the check decompressed it:
    no more than ``keep_bytes`` in all, whatever the archive holds.

    An accepted zip then never fails a request: the central directory is checked against the
    limits first (entry count, sizes, compression ratio, methods Go's archive/zip reads, no
    encryption, no entries sharing data), then every entry is decompressed in one streaming
    pass straight from the file, which checks its local header and name, its deflate data, its
    size and its CRC-32.
    """
    infos = archive.infolist()
    if len(infos) > limits.MAX_ENTRIES:
        raise ZipDamaged(f"more than {limits.MAX_ENTRIES} entries in zip archive")
    total = 0
    names: set[str] = set()
    for info in infos:
        if info.filename in names:
            raise ZipDamaged(f"duplicate zip entry {info.filename}")
        names.add(info.filename)
        if info.compress_type not in _ZIP_METHODS:
            raise ZipDamaged(
                f"zip entry {info.filename} uses unsupported compression method {info.compress_type}"
            )
        if info.flag_bits & 0x41:  # (0x40: strong encryption)
            raise ZipDamaged(f"zip entry {info.filename} is encrypted")
        if info.flag_bits & 0x20:
            raise ZipDamaged(f"zip entry {info.filename} holds compressed patched data")
        total += info.file_size
        if total > limits.MAX_ZIP_BYTES:
            raise ZipDamaged(f"zip entries hold more than {limits.MAX_ZIP_BYTES} bytes decompressed")
        if info.file_size > limits.RATIO_MIN_BYTES and info.file_size > limits.MAX_ZIP_RATIO * max(
            info.compress_size, 1
        ):
            raise ZipDamaged(f"zip entry {info.filename} expands more than {limits.MAX_ZIP_RATIO} times")
    _check_no_overlap(archive, infos)
    kept: dict[str, bytes] = {}
    kept_bytes = 0
    if archive.filename is None:
        return kept
    fd = os.open(archive.filename, os.O_RDONLY | os.O_CLOEXEC)
    try:
        for info in infos:
            if not (info.is_dir() and info.compress_size == 0):
                try:
                    wanted = keep is not None and kept_bytes + info.file_size <= keep_bytes and keep(info)
                    content = _check_entry(fd, info, wanted)
                except ZipDamaged:
                    raise
                except Exception as err:  # zlib.error, OSError, struct.error, ...
                    raise ZipDamaged(f"damaged zip entry {info.filename}: {describe(err)}") from None
                if content is not None:
                    kept[info.filename] = content
                    kept_bytes += len(content)
    finally:
        os.close(fd)
    return kept


def _entry_name(info: zipfile.ZipInfo) -> bytes:
    """The name's bytes as stored (zipfile decodes it as UTF-8 when flagged so, else as CP437)."""
    name = info.orig_filename
    if name.isascii():
        return name.encode("ascii")
    return name.encode("utf-8" if info.flag_bits & 0x800 else "cp437", "surrogateescape")


def _check_entry(fd: int, info: zipfile.ZipInfo, keep: bool) -> bytes | None:
    """One entry, read straight from the file: local header, then its data decompressed and checked.

    Returns the decompressed content if ``keep``, else None.

    (What ZipFile.open and read check, without their per-entry objects: a zip package has hundreds
    of entries, and this runs for every zip of a cold start.)
    """
    header = os.pread(fd, 30, info.header_offset)
    if len(header) < 30 or header[:4] != b"PK\x03\x04":
        raise ZipDamaged(f"damaged zip entry {info.filename}: bad local file header")
    name_len, extra_len = struct.unpack_from("<HH", header, 26)
    local_name = os.pread(fd, name_len, info.header_offset + 30)
    if local_name != _entry_name(info):
        raise ZipDamaged(
            f"damaged zip entry {info.filename}: file name in directory {info.orig_filename!r} "
            f"and header {local_name!r} differ"
        )
    offset = info.header_offset + 30 + name_len + extra_len
    left = info.compress_size
    inflate = zlib.decompressobj(-15) if info.compress_type == zipfile.ZIP_DEFLATED else None
    size = crc = 0
    parts: list[bytes] | None = [] if keep else None
    while left > 0:
        chunk = os.pread(fd, min(left, _CHECK_CHUNK), offset)
        if not chunk:
            raise ZipDamaged(f"damaged zip entry {info.filename}: truncated data")
        offset += len(chunk)
        left -= len(chunk)
        if inflate is not None:
            # Never more than the declared size (plus one byte, to notice a lie) at a time.
            chunk = inflate.decompress(chunk, info.file_size - size + 1)
            while True:
                size += len(chunk)
                crc = zlib.crc32(chunk, crc)
                if parts is not None:
                    parts.append(chunk)
                if size > info.file_size or not inflate.unconsumed_tail:
                    break
                chunk = inflate.decompress(inflate.unconsumed_tail, info.file_size - size + 1)
        else:
            size += len(chunk)
            crc = zlib.crc32(chunk, crc)
            if parts is not None:
                parts.append(chunk)
        if size > info.file_size:
            raise ZipDamaged(f"damaged zip entry {info.filename}: more data than its declared size")
    if inflate is not None and not inflate.eof:
        raise ZipDamaged(f"damaged zip entry {info.filename}: deflate data ends early")
    if size != info.file_size:
        raise ZipDamaged(f"damaged zip entry {info.filename}: {size} bytes, {info.file_size} declared")
    if crc != info.CRC:
        raise ZipDamaged(f"damaged zip entry {info.filename}: Bad CRC-32")
    return None if parts is None else b"".join(parts)


def _check_no_overlap(archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo]) -> None:
    """Entries that share compressed data are how small zips expand to terabytes."""
    end = 0
    for info in sorted(infos, key=lambda i: i.header_offset):
        if info.header_offset < end:
            raise ZipDamaged(f"zip entry {info.filename} overlaps another entry")
        name = len(_entry_name(info))
        # (A lower bound of the entry's end: its local extra field and data descriptor come on top.)
        end = info.header_offset + 30 + name + info.compress_size
    start_dir = getattr(archive, "start_dir", None)
    if isinstance(start_dir, int) and end > start_dir:
        raise ZipDamaged("zip entry data overlaps the central directory")


def describe(err: BaseException) -> str:
    """What a zip or deflate error says, for a rejection reason."""
    if isinstance(err, zlib.error):
        return f"invalid deflate data ({err})"
    return f"{type(err).__name__}: {err}" if not isinstance(err, zipfile.BadZipFile) else str(err)
