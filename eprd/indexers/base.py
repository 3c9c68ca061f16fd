"""The seam every package source implements: an :class:`Indexer`.

An indexer holds package versions (what the snapshot is built from), serves the
files of its packages (as a :class:`Resource` the HTTP layer turns into a
response) and, from its background task, reports when what it holds changed, so
that the next snapshot is built and swapped in. The snapshot combines indexers in
precedence order (storage, then zips, then folders, as the reference does); the
first indexer holding a name and version serves it.

Implementations: :mod:`eprd.indexers.local` (package folders and zips) and
:mod:`eprd.indexers.storage` (a Package Storage v2 bucket). A source that cannot list what it
holds (proxy mode's upstream) is asked at request time instead: :mod:`eprd.indexers.fallback`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

from eprd.model.package import Package, PackageError

ZIP = "zip"
TAR_GZ = "tar.gz"


@dataclass(slots=True)
class Changes:
    """What one update of an indexer did, by package location."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    # Same content, read from new files (a ConfigMap or git-sync swap): the snapshot must serve the
    # new files, but nothing a client sees changed.
    moved: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed or self.rejected or self.moved)


# Called by an indexer's background task after what it holds changed, with what changed and when
# (time.monotonic()) the change was first seen; returns once the next snapshot is served.
Changed = Callable[[Changes, float], Awaitable[None]]


# --- what serving a package file gives: the HTTP layer turns each into a response ----------------


@dataclass(frozen=True, slots=True)
class DiskFile:
    """A file on disk, sent with sendfile, validators and Range."""

    path: str
    content_type: str
    # The file already open (then sent and closed by the HTTP layer): a cache may delete ``path``
    # between the indexer's answer and the response, and an open file is still whole.
    opened: BinaryIO | None = None


@dataclass(frozen=True, slots=True)
class MemoryFile:
    """File content already in memory (e.g. read from inside a zip)."""

    body: bytes
    content_type: str
    mtime: float
    etag: str


@dataclass(frozen=True, slots=True)
class Redirect:
    """``301 Moved Permanently`` to ``url`` (with the public cache headers)."""

    url: str


@dataclass(frozen=True, slots=True)
class Piped:
    """Streamed from ``url`` through the upstream client, forwarding Range."""

    url: str


@dataclass(frozen=True, slots=True)
class NotFound:
    """No such file: 404 with the reference's ``message`` for the endpoint."""

    message: str


@dataclass(frozen=True, slots=True)
class Failed:
    """The file exists but cannot be served now; ``reason`` is logged, the client gets ``status``.

    ``message`` is the text of the answer; ``error``, when the failure is an exception, is
    logged with its traceback.
    """

    reason: str
    status: int = 500
    message: str = "internal server error"
    error: BaseException | None = None


Resource = DiskFile | MemoryFile | Redirect | Piped | NotFound | Failed


class Indexer(ABC):
    """A source of package versions.

    ``packages()`` and ``rejected()`` are read when a snapshot is built, off the event loop;
    they must return what the indexer holds at that moment without blocking on I/O.
    """

    name: str  # the reference's indexer name: epr_indexer_get_duration_seconds{indexer=...}
    task = "indexer"  # its background task is called eprd-<task> (-httpprof's task list)

    @abstractmethod
    def packages(self) -> Sequence[Package]:
        """The package versions held now, in discovery order (later duplicates are ignored)."""

    def rejected(self) -> Sequence[PackageError]:
        """Package versions found but not served, with the reason."""
        return ()

    def is_ready(self) -> bool:
        """Whether the indexer has loaded what it serves (``/health?ready=true``)."""
        return True

    async def run(self, changed: Changed) -> None:
        """Watch the source until cancelled, awaiting ``changed`` after each update (default: never)."""
        return  # a source that never changes

    @abstractmethod
    async def static(self, package: Package, path: str) -> Resource:
        """The file ``path`` of ``package`` (``/package/{n}/{v}/{path}``)."""

    @abstractmethod
    async def artifact(self, package: Package, fmt: str) -> Resource:
        """The download of ``package`` as ``fmt`` (:data:`ZIP` or :data:`TAR_GZ`)."""

    @abstractmethod
    async def signature(self, package: Package) -> Resource:
        """The detached signature of the package's zip."""

    async def close(self) -> None:
        """Release what the indexer holds open (connections, processes)."""
        return  # nothing held open
