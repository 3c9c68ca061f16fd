"""The child process that runs watchfiles for the watcher (see :mod:`eprd.watcher`).

watchfiles sets up its inotify watches while holding the GIL, which with tens
of thousands of folders stalls every request for seconds; in a process of its
own it stalls nothing. This module imports only what the child needs.
"""

from __future__ import annotations

import os
from multiprocessing.connection import Connection

import watchfiles

READY = ("ready", "")


def watch(paths: list[str], step_ms: int, debounce_ms: int, poll: bool, conn: Connection) -> None:
    """Send :data:`READY` once watching, then each batch of changed paths.

    An error is sent as ``("error", text, permanent)``.
    """
    ready = False
    parent = os.getppid()
    try:
        for batch in watchfiles.watch(
            *paths,
            debounce=debounce_ms,
            step=step_ms,
            rust_timeout=250,
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
    except Exception as err:  # reported by the parent, which keeps serving
        # An OSError is the system refusing watches (the inotify limit, a missing path): watching
        # again would fail again. Anything else (watchfiles cannot decode a file name that is not
        # UTF-8, ...) is worth a restart: the parent's supervisor starts the watcher again.
        conn.send(("error", f"{type(err).__name__}: {err}", isinstance(err, OSError)))
    finally:
        conn.close()
