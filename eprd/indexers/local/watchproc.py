"""The child process that runs watchfiles for the watcher (see :mod:`eprd.indexers.local.watcher`).

watchfiles sets up its inotify watches while holding the GIL, which with tens
of thousands of folders stalls every request for seconds; in a process of its
own it stalls nothing. This module imports only what the child needs.

Package paths may be symlinks or lie under symlinked folders: a Kubernetes
ConfigMap volume re-points its ``..data`` link at a new folder on every update,
git-sync re-points its link at a new worktree. inotify watches what a link
pointed at when the watch was set up, so such a swap is invisible to it. The
watch therefore re-resolves the package paths every :data:`RESOLVE_MS`; when one
resolves somewhere else it reports :data:`RELINKED` (the parent then compares
everything) and sets the watches up again on the new targets. A package path that
does not exist yet (a git-sync clone still running) is picked up when it appears.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection

import watchfiles

READY = ("ready", "")
RELINKED = ("relinked", "")
RESOLVE_MS = 250  # how often the links along the package paths are re-resolved


def resolved(paths: Sequence[str]) -> tuple[tuple[str, bool], ...]:
    """Where each path points now, every symlink along it followed, and whether that is a folder."""
    return tuple((os.path.realpath(path), os.path.isdir(path)) for path in paths)


def watch(paths: list[str], step_ms: int, debounce_ms: int, poll: bool, conn: Connection) -> None:
    """Send :data:`READY` once watching, then each batch of changed paths, :data:`RELINKED` after a
    link swap; errors as ``("error", text, permanent)``."""
    ready = False
    # The pid of the eprd that started this process (even if it is gone already: the spawn takes a
    # while, and a killed eprd must not leave this process watching forever).
    creator = multiprocessing.parent_process()
    parent = creator.pid if creator is not None and creator.pid is not None else os.getppid()
    try:
        while True:
            targets = resolved(paths)
            existing = [path for path in paths if os.path.isdir(path)]
            if not existing:  # every path's target is gone (mid-swap, or removed): wait for one
                time.sleep(RESOLVE_MS / 1000)
                if os.getppid() != parent:
                    return
                if resolved(paths) != targets:
                    conn.send(RELINKED)
                continue
            for batch in watchfiles.watch(
                *existing,
                debounce=debounce_ms,
                step=step_ms,
                rust_timeout=RESOLVE_MS,
                yield_on_timeout=True,  # the first (possibly empty) yield means every watch is in place
                force_polling=poll,
                poll_delay_ms=300,
                ignore_permission_denied=True,
                raise_interrupt=False,
            ):
                if os.getppid() != parent:
                    return  # eprd is gone (even killed): do not outlive it holding its stdout/stderr
                if not ready:
                    conn.send(READY)
                    ready = True
                if batch:
                    conn.send(sorted({path for _, path in batch}))
                if resolved(paths) != targets:
                    conn.send(RELINKED)
                    break  # watch again, on what the paths point at now
            else:
                return
    except Exception as err:  # reported by the parent, which keeps serving
        # An OSError is the system refusing watches (the inotify limit, a missing path): watching
        # again would fail again. Anything else (watchfiles cannot decode a file name that is not
        # UTF-8, ...) is worth a restart: the parent's supervisor starts the watcher again.
        conn.send(("error", f"{type(err).__name__}: {err}", isinstance(err, OSError)))
    finally:
        conn.close()
