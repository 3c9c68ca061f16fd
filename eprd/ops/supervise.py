"""Supervised background tasks: a failure is logged, counted and followed by a restart.

Every long-running loop of the serving process (the watcher today, the indexers' poll loops
next) runs under one :class:`Supervisor`. When a task raises, the supervisor logs the
exception with its traceback (one ERROR line on ``eprd.supervisor``), counts it (the
``on_restart`` hooks: ``eprd_background_task_restarts_total{task=...}``) and starts the task
again after a backoff that doubles from ``initial`` up to ``ceiling`` seconds (and starts over
once a run lasted ``stable`` seconds). A task that returns has finished and is not restarted.
``/debug/pprof/snapshot`` shows :meth:`Supervisor.states`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass

log = logging.getLogger("eprd.supervisor")

# State names, as /debug/pprof/snapshot shows them.
RUNNING = "running"
RESTARTING = "restarting"
STOPPED = "stopped"


@dataclass(slots=True)
class TaskState:
    """What one supervised task is doing, and its last failure."""

    state: str = RUNNING
    restarts: int = 0
    last_error: str = ""
    last_error_at: float = 0.0  # seconds since the epoch, 0 before any failure
    next_start_in: float = 0.0  # the backoff of the pending restart, in seconds


class Supervisor:
    """Runs background coroutines and restarts those that fail."""

    def __init__(self, *, initial: float = 0.5, ceiling: float = 30.0, stable: float = 60.0) -> None:
        self.initial = initial
        self.ceiling = ceiling
        self.stable = stable
        self.on_restart: list[Callable[[str], None]] = []
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._states: dict[str, TaskState] = {}
        self._stopping = False

    def start(self, name: str, factory: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """Run ``factory()`` as task ``name`` now, and again whenever it raises."""
        state = self._states[name] = TaskState()
        task = asyncio.create_task(self._supervise(name, factory, state), name=f"eprd-{name}")
        self._tasks[name] = task
        return task

    def states(self) -> dict[str, dict[str, object]]:
        """Each task's state, restarts and last error, for the diagnostics endpoint."""
        return {name: asdict(state) for name, state in self._states.items()}

    async def _supervise(self, name: str, factory: Callable[[], Awaitable[None]], state: TaskState) -> None:
        delay = self.initial
        while True:
            state.state, state.next_start_in = RUNNING, 0.0
            started = time.monotonic()
            try:
                await factory()
            except asyncio.CancelledError:
                state.state = STOPPED
                raise
            except Exception as err:
                if time.monotonic() - started >= self.stable:
                    delay = self.initial
                if self._stopping:
                    state.state = STOPPED
                    log.error("background task %s failed while stopping", name, exc_info=True)
                    return
                state.restarts += 1
                state.last_error = f"{type(err).__name__}: {err}"
                state.last_error_at = time.time()
                state.state, state.next_start_in = RESTARTING, delay
                log.error(
                    "background task %s failed, restarting it in %.1f s",
                    name,
                    delay,
                    exc_info=True,
                    # (error.type, error.message and error.stack_trace come from exc_info)
                    extra={"task.name": name, "task.restarts": state.restarts},
                )
                for hook in self.on_restart:
                    with contextlib.suppress(Exception):  # a metrics hook never stops a restart
                        hook(name)
                try:
                    await asyncio.sleep(delay)
                except asyncio.CancelledError:
                    state.state, state.next_start_in = STOPPED, 0.0
                    raise
                delay = min(delay * 2, self.ceiling)
                continue
            state.state = STOPPED
            return

    async def stop(self, timeout: float) -> None:
        """No more restarts: wait ``timeout`` s for the tasks to end (their owners ask), then cancel."""
        self._stopping = True
        tasks = list(self._tasks.values())
        for name, task in self._tasks.items():
            if self._states[name].state == RESTARTING:
                task.cancel()  # waiting out its backoff: nothing to finish
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for name, result in zip(self._tasks, results, strict=True):
            if isinstance(result, Exception):
                log.error("background task %s ended with %r", name, result)
