"""Checks a downloaded version passes before it is placed: the zip opens, the signature verifies.

OpenPGP is done by Sequoia (``pysequoia``), never by hand: ``-verify-key`` is an armored public
key block (one or more certificates, e.g. Elastic's ``GPG-KEY-elasticsearch``) and each
``.zip.sig`` an armored detached signature over the zip's bytes.
"""

from __future__ import annotations

import os
import zipfile
import zlib

import pysequoia


class Refused(Exception):
    """A version that must not be placed; ``str(err)`` is the reason printed next to it."""


class KeyRing:
    """The certificates of ``-verify-key``; verifies detached signatures of files against them."""

    def __init__(self, certs: list[pysequoia.Cert]) -> None:
        self.certs = certs

    @classmethod
    def load(cls, path: str) -> KeyRing:
        """Read an armored (or binary) public key file; ValueError with a readable reason."""
        try:
            certs = pysequoia.Cert.split_file(path)
        except (OSError, RuntimeError) as err:
            raise ValueError(f"cannot read OpenPGP key {path}: {_first_line(err)}") from None
        if not certs:
            raise ValueError(f"cannot read OpenPGP key {path}: no certificate in it")
        return cls(certs)

    def fingerprints(self) -> list[str]:
        """The primary key fingerprints, for the log line that says which key was used."""
        return [cert.fingerprint for cert in self.certs]

    def verify(self, path: str | os.PathLike[str], signature: bytes) -> None:
        """Raise Refused unless ``signature`` is a good signature over ``path`` by one of the keys.

        Runs in a worker thread: Sequoia hashes the file itself, outside the event loop.
        """
        try:
            sig = pysequoia.Sig.from_bytes(signature)
        except RuntimeError as err:
            raise Refused(f"bad signature: not an OpenPGP signature ({_first_line(err)})") from None
        try:
            result = pysequoia.verify(file=os.fspath(path), store=lambda _ids: self.certs, signature=sig)
        except RuntimeError as err:
            raise Refused(f"bad signature: {_first_line(err)}") from None
        if not result.valid_sigs:
            raise Refused("bad signature: no valid signature by the verify key")


def check_zip(path: str | os.PathLike[str]) -> None:
    """Raise Refused unless ``path`` is a whole zip archive with a package root eprd can load.

    Every entry's CRC is checked (a corrupted body that still has a central directory is caught
    here), and some top-level folder ``X/`` must hold ``X/manifest.yml`` as eprd requires.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            if bad is not None:
                raise Refused(f"corrupted zip: bad CRC in {bad}")
            names = archive.namelist()
    except zipfile.BadZipFile as err:
        raise Refused(f"corrupted zip: {err}") from None
    except (OSError, EOFError, ValueError, NotImplementedError, zlib.error) as err:
        # A damaged deflate stream fails in zlib, a cut one with EOFError: both mean corrupted.
        raise Refused(f"corrupted zip: {err}") from None
    roots = {name.split("/", 1)[0] for name in names if "/" in name}
    if not any(f"{root}/manifest.yml" in names for root in roots):
        raise Refused("corrupted zip: no top-level folder with a manifest.yml")


def _first_line(err: BaseException) -> str:
    # Sequoia's messages carry a Rust backtrace when RUST_BACKTRACE is set: the first line says it.
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
