"""Package versions that once took eprd down (issue 10), built byte by byte for the tests.

Each case writes one bad version under a package path and says which words its rejection
reason must hold. Zips are built with :mod:`zipfile` and then patched in place (CRC, names,
flags, methods, sizes), so the damage is exactly the one the case is about.
"""

from __future__ import annotations

import io
import os
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pkgfactory as pf

TOP = "bad-1.0.0"


@dataclass(frozen=True)
class Case:
    """One bad version: ``write(root)`` returns its location; the reason must contain ``words``."""

    id: str
    write: Callable[[Path], Path]
    words: str


# --- zip surgery -------------------------------------------------------------------------------


def zip_with(entries: list[tuple[str, bytes | None]], stored: frozenset[str] = frozenset()) -> bytearray:
    """A zip of ``entries`` (deflated, but the names in ``stored``), as mutable bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries:
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 2, 3, 4, 6))
            info.compress_type = zipfile.ZIP_STORED if name in stored else zipfile.ZIP_DEFLATED
            info.external_attr = (0o40755 << 16) | 0x10 if content is None else 0o100644 << 16
            archive.writestr(info, content or b"")
    return bytearray(buffer.getvalue())


def central_record(data: bytes | bytearray, name: str) -> int:
    """Offset of the central directory record of entry ``name``."""
    wanted = name.encode()
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        length = struct.unpack_from("<H", data, at + 28)[0]
        if bytes(data[at + 46 : at + 46 + length]) == wanted:
            return at
        at = data.find(b"PK\x01\x02", at + 4)
    raise KeyError(name)


def local_header(data: bytes | bytearray, name: str) -> int:
    return struct.unpack_from("<I", data, central_record(data, name) + 42)[0]


def patch_entry(data: bytearray, name: str, field: str, value: int) -> bytearray:
    """Set ``field`` (flags, method, usize, offset) of entry ``name`` in its headers."""
    central = {"flags": (8, "H"), "method": (10, "H"), "usize": (24, "I"), "offset": (42, "I")}
    local = {"flags": (6, "H"), "method": (8, "H"), "usize": (22, "I")}
    record, header = central_record(data, name), local_header(data, name)
    offset, fmt = central[field]
    struct.pack_into("<" + fmt, data, record + offset, value)
    if field in local:
        offset, fmt = local[field]
        struct.pack_into("<" + fmt, data, header + offset, value)
    return data


def entry_data(data: bytes | bytearray, name: str) -> int:
    """Offset of the (compressed) data of entry ``name``."""
    header = local_header(data, name)
    name_len, extra_len = struct.unpack_from("<HH", data, header + 26)
    return header + 30 + name_len + extra_len


def package_entries(**kwargs: object) -> list[tuple[str, bytes | None]]:
    return pf.zip_entries("bad", "1.0.0", **kwargs)  # type: ignore[arg-type]


def write(root: Path, filename: str, data: bytes | bytearray) -> Path:
    path = root / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
    return path


def _crc(member: str) -> Callable[[Path], Path]:
    def build(root: Path) -> Path:
        name = f"{TOP}/{member}"
        data = zip_with(package_entries(), stored=frozenset({name}))
        at = entry_data(data, name)
        data[at + 3] ^= 0x01  # one flipped bit: stored data that no longer matches its CRC-32
        return write(root, f"crc-{member.replace('/', '-')}.zip", data)

    return build


def _local_name(root: Path) -> Path:
    data = zip_with(package_entries())
    header = local_header(data, f"{TOP}/manifest.yml")
    at = header + 30 + len(f"{TOP}/"), header + 30 + len(f"{TOP}/manifest.yml")
    data[at[0] : at[1]] = b"manifesT.yml"
    return write(root, "local-name.zip", data)


def _flagged(flags: int, filename: str) -> Callable[[Path], Path]:
    def build(root: Path) -> Path:
        data = patch_entry(zip_with(package_entries()), f"{TOP}/docs/README.md", "flags", flags)
        return write(root, filename, data)

    return build


def _method(method: int) -> Callable[[Path], Path]:
    def build(root: Path) -> Path:
        data = patch_entry(zip_with(package_entries()), f"{TOP}/manifest.yml", "method", method)
        return write(root, f"method-{method}.zip", data)

    return build


def _bad_deflate(root: Path) -> Path:
    readme = b"# Bad\n\n" + b"Some words to compress, again and again. " * 50
    name = f"{TOP}/docs/README.md"
    data = zip_with(package_entries(files={"docs/README.md": readme}))
    at = entry_data(data, name)
    data[at : at + 4] = b"\xff\xff\xff\xff"  # BTYPE 11: a reserved deflate block type
    return write(root, "bad-deflate.zip", data)


def _ratio_bomb(root: Path) -> Path:
    entries = package_entries(files={"docs/zeros.txt": bytes(4 << 20)})
    return write(root, "ratio-bomb.zip", zip_with(entries))


def _declared_size(root: Path) -> Path:
    data = zip_with(package_entries())
    return write(root, "declared-size.zip", patch_entry(data, f"{TOP}/docs/README.md", "usize", 0xFFFFFFF0))


def _size_lie(root: Path) -> Path:
    """An entry that inflates to more than its headers declare."""
    data = zip_with(package_entries())
    return write(root, "size-lie.zip", patch_entry(data, f"{TOP}/docs/README.md", "usize", 5))


def _overlap(root: Path) -> Path:
    data = zip_with(package_entries())
    first = local_header(data, f"{TOP}/manifest.yml")
    return write(root, "overlap.zip", patch_entry(data, f"{TOP}/docs/README.md", "offset", first))


def _not_a_zip(root: Path) -> Path:
    data = zip_with(package_entries())
    return write(root, "truncated.zip", data[: len(data) // 2])


# --- folders -------------------------------------------------------------------------------------


def _manifest(version: str, text: str) -> str:
    return pf.dump(pf.default_manifest("bad", version)) + text


def nested(levels: int) -> str:
    """A top-level key ``x`` holding block mappings ``levels`` deep."""
    return "x:\n" + "".join(" " * (i + 1) + "a:\n" for i in range(levels)) + " " * (levels + 1) + "b: 1\n"


def _folder(version: str, **kwargs: object) -> Callable[[Path], Path]:
    def build(root: Path) -> Path:
        return pf.write_dir(root, "bad", version, **kwargs)  # type: ignore[arg-type]

    return build


def _non_utf8_name(root: Path) -> Path:
    location = pf.write_dir(root, "bad", "1.0.20")
    path = os.fsencode(location / "docs") + b"/\xff\xfe.md"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"# odd\n")
    os.close(fd)
    return location


def _deep_folders(root: Path) -> Path:
    location = pf.write_dir(root, "bad", "1.0.21")
    deep = location / "docs" / "/".join(["d"] * 70)
    deep.mkdir(parents=True)
    (deep / "x.md").write_text("deep\n")
    return location


LAUGHS = "l0: &l0 [lol]\n" + "".join(
    f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]\n" for i in range(1, 10)
)

ZIP_CASES = [
    Case("zip-crc-manifest", _crc("manifest.yml"), "CRC"),
    Case("zip-crc-fields", _crc("data_stream/log/fields/base-fields.yml"), "CRC"),
    Case("zip-local-name-differs", _local_name, "differ"),
    Case("zip-encrypted", _flagged(0x1, "encrypted.zip"), "encrypted"),
    Case("zip-method-6", _method(6), "compression method 6"),
    Case("zip-method-99", _method(99), "compression method 99"),
    Case("zip-bad-deflate", _bad_deflate, "deflate"),
    Case("zip-ratio-bomb", _ratio_bomb, "expands more than"),
    Case("zip-declared-size", _declared_size, "bytes decompressed"),
    Case("zip-overlapping-entries", _overlap, "overlaps"),
    Case("zip-inflates-past-its-size", _size_lie, "more data than its declared size"),
    Case("zip-patched-data", _flagged(0x20, "patched.zip"), "patched"),
    Case("zip-truncated", _not_a_zip, "invalid zip file"),
]

FOLDER_CASES = [
    Case("manifest-1500-levels", _folder("1.0.1", manifest_text=_manifest("1.0.1", nested(1500))), "nesting"),
    Case(
        "manifest-150-levels",
        _folder("1.0.2", manifest_text=_manifest("1.0.2", nested(150))),
        "nesting deeper than 100",
    ),
    Case(
        "manifest-600-levels",
        _folder("1.0.7", manifest_text=_manifest("1.0.7", nested(600))),
        "nesting deeper than 100",
    ),
    Case(
        "data-stream-600-levels",
        _folder("1.0.3", data_streams={"log": "type: logs\ntitle: Logs\n" + nested(600)}),
        "nesting deeper than 100",
    ),
    Case("self-alias", _folder("1.0.4", manifest_text=_manifest("1.0.4", "x: &a [*a]\n")), "contains itself"),
    Case("billion-laughs", _folder("1.0.5", manifest_text=_manifest("1.0.5", LAUGHS)), "nodes"),
    Case(
        "long-dotted-key",
        _folder("1.0.6", manifest_text=_manifest("1.0.6", ".".join(["a"] * 5000) + ": 1\n")),
        "dotted key",
    ),
    Case("non-utf8-file-name", _non_utf8_name, "not valid UTF-8"),
    Case("folders-70-deep", _deep_folders, "nested deeper than 64"),
]

CASES = ZIP_CASES + FOLDER_CASES
