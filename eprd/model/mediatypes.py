"""The Content-Type of a package file, as the reference sends it."""

from __future__ import annotations

import mimetypes
import os

# Fixed by the reference regardless of the OS tables.
_OVERRIDES = {
    ".md": "text/markdown; charset=utf-8",
    ".yml": "text/yaml; charset=UTF-8",
    ".zip": "application/zip",
    ".ico": "image/x-icon",
}
# Go's built-in table, plus what the reference's image gets from mailcap for signatures.
_BUILTIN = {
    ".avif": "image/avif",
    ".css": "text/css; charset=utf-8",
    ".gif": "image/gif",
    ".htm": "text/html; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".jpeg": "image/jpeg",
    ".jpg": "image/jpeg",
    ".js": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".mjs": "text/javascript; charset=utf-8",
    ".pdf": "application/pdf",
    ".png": "image/png",
    ".sig": "application/pgp-signature",
    ".svg": "image/svg+xml",
    ".wasm": "application/wasm",
    ".webp": "image/webp",
    ".xml": "text/xml; charset=utf-8",
}
# Python's own table only, so the answer does not depend on the host's /etc/mime.types.
_PYTHON_TYPES = mimetypes.MimeTypes(filenames=())


def content_type_by_name(name: str) -> str | None:
    """The Content-Type for a file name's extension, None when the extension says nothing."""
    ext = os.path.splitext(name)[1].lower()
    if ext in _OVERRIDES:
        return _OVERRIDES[ext]
    if ext in _BUILTIN:
        return _BUILTIN[ext]
    guessed = _PYTHON_TYPES.types_map[True].get(ext)
    if guessed:
        return f"{guessed}; charset=utf-8" if guessed.startswith("text/") else guessed
    return None


def content_type(name: str, head: bytes = b"") -> str:
    """The Content-Type the reference sends for a file called ``name`` starting with ``head``."""
    return content_type_by_name(name) or sniff(head)


def sniff(head: bytes) -> str:
    """A much reduced http.DetectContentType: text unless the first bytes look binary."""
    sample = head[:512]
    if sample.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if sample.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if sample.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if sample.startswith(b"%PDF-"):
        return "application/pdf"
    if sample.startswith(b"PK\x03\x04"):
        return "application/zip"
    if any(b < 0x20 and b not in b"\t\n\x0c\r\x1b" for b in sample):
        return "application/octet-stream"
    return "text/plain; charset=utf-8"
