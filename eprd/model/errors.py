"""Why a package version is not served: :class:`PackageError`, and the one translation of any
exception raised while loading a version into such a rejection (:func:`rejection`)."""

from __future__ import annotations

import logging

from eprd.model import yamlfile
from eprd.model.datastream import DataStreamError
from eprd.model.files import PackageFileError
from eprd.model.manifest import ManifestError
from eprd.model.versions import VersionError

log = logging.getLogger("eprd.package")


class PackageError(ValueError):
    """A package version that cannot be served; ``reason`` says why.

    Both are text that any log line or JSON document can carry: bytes of a path that are not
    UTF-8 (surrogate escapes) are shown as ``\\xNN``.
    """

    def __init__(self, location: str, reason: str) -> None:
        location, reason = printable(location), printable(reason)
        super().__init__(f"{location}: {reason}")
        self.location = location
        self.reason = reason

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return (PackageError, (self.location, self.reason))


def printable(text: str) -> str:
    """``text`` with surrogate escapes (undecodable bytes of file names) shown as ``\\xNN``."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # surrogates that are no escaped bytes
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


# What a version's content can be wrong with: their messages are the reasons, as they are.
_INVALID = (PackageFileError, ManifestError, DataStreamError, yamlfile.YAMLError, VersionError)


def rejection(location: str, err: BaseException) -> PackageError:
    """The rejection of the version at ``location`` for ``err``, whatever its type, in words.

    The one place that turns a failed load into a reason: loaders of other sources (storage,
    proxy) call it from their own ``except Exception`` around loading a version.
    """
    if isinstance(err, PackageError):
        return PackageError(location, err.reason)
    if isinstance(err, _INVALID):
        return PackageError(location, str(err))
    if isinstance(err, OSError):
        return PackageError(location, f"{err.strerror or err}: {err.filename or ''}".rstrip(": "))
    if isinstance(err, RecursionError):
        return PackageError(location, "nested too deeply to load (recursion limit)")
    if isinstance(err, MemoryError):
        return PackageError(location, "out of memory while loading")
    log.debug("unexpected error loading %s", printable(location), exc_info=err)
    return PackageError(location, f"cannot load package: {type(err).__name__}: {err}")
