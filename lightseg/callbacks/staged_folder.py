"""An output folder that appears only when complete, with pictures painted on a thread of their own."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from lightseg.visualize.png import write_png

#: pictures queued for the painter thread at most (memory stays bounded)
MAX_PENDING_PICTURES = 4
#: the painter thread's nice value on Linux (19: the lowest priority)
PAINTER_NICENESS = 19


class StagedFolder:
    """Files written into ``<folder>.partial-<pid>`` and moved into ``folder`` once everything is written.

    :meth:`open` starts the partial folder (:attr:`work`); :meth:`publish` moves its files into
    ``folder``: one rename where ``folder`` is new, else file by file (an overwrite, or several
    processes writing into one folder); :meth:`discard` removes it after an error or Ctrl-C, so
    that a folder is never left half-written. Pictures (:meth:`save_picture`) are drawn and
    written on a thread of their own while the caller goes on (numpy and deflate release the
    GIL), at the lowest priority on Linux (the model's threads come first), a few ahead at most;
    an error of one surfaces at the next call, as it would inline.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.work = folder
        self._painter: ThreadPoolExecutor | None = None
        self._pending: deque[Future[None]] = deque()

    def open(self) -> None:
        """Start an empty partial folder beside :attr:`folder` (one per process)."""
        self.work = self.folder.with_name(f"{self.folder.name}.partial-{os.getpid()}")
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)

    def save_picture(self, render: Callable[[], np.ndarray], relative: Path) -> None:
        """Draw ``render()`` and write it as a PNG at ``relative`` in the partial folder, on the painter thread."""
        path = self.work / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if self._painter is None:
            self._painter = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="lightseg-overlays", initializer=_yield_to_the_model
            )
        while len(self._pending) >= MAX_PENDING_PICTURES:
            self._pending.popleft().result()
        self._pending.append(self._painter.submit(_write_png, render, path))

    def finish_pictures(self) -> None:
        """Wait for every queued picture (raising the first error) and stop the painter thread."""
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            if self._painter is not None:
                self._painter.shutdown(wait=True, cancel_futures=True)
                self._painter = None

    def publish(self, merge: bool) -> None:
        """Move the partial folder's files into :attr:`folder` (``merge``: file by file, into what is there)."""
        work = self.work
        if work == self.folder:
            return
        if not merge:
            work.rename(self.folder)
        else:
            for path in sorted(p for p in work.rglob("*") if p.is_file()):
                target = self.folder / path.relative_to(work)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)
            shutil.rmtree(work, ignore_errors=True)
        self.work = self.folder

    def discard(self) -> None:
        """Drop the queued pictures and the partial folder (after an error: that error is the one reported)."""
        for pending in self._pending:
            pending.cancel()
        with contextlib.suppress(Exception):
            self.finish_pictures()
        if self.work != self.folder:
            shutil.rmtree(self.work, ignore_errors=True)

    def join_parts(self, stem: str, processes: int, join: Callable[[list[Any]], Any]) -> None:
        """``<stem>.json`` in :attr:`folder`, made by ``join`` from the processes' parts (:func:`part_name`).

        ``join`` takes the loaded parts in rank order (those of processes that wrote none left out);
        the parts go once the joined file is written. Nothing is written where no process wrote a part.
        """
        parts = [self.folder / part_name(stem, rank, processes) for rank in range(processes)]
        loaded = [json.loads(path.read_text()) for path in parts if path.is_file()]
        if not loaded:
            return
        joined = self.folder / f"{stem}.json"
        partial = joined.with_name(f"{joined.name}.partial")
        partial.write_text(json.dumps(join(loaded)))
        os.replace(partial, joined)
        for path in parts:
            path.unlink(missing_ok=True)


def part_name(stem: str, rank: int, processes: int) -> str:
    """The file of process ``rank``'s share of ``<stem>.json`` (that file itself where there is one process)."""
    return f"{stem}.json" if processes == 1 else f"{stem}.rank{rank}.json"


def _yield_to_the_model() -> None:
    # On a CPU busy with the model, its threads come first and pictures take what they leave
    # (a preempted torch thread holds the others up at their next barrier). Linux keeps a nice
    # value per thread (elsewhere it is the process's: left alone); a full queue of pictures
    # makes the caller wait for them, so they are never starved.
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), PAINTER_NICENESS)


def _write_png(render: Callable[[], np.ndarray], path: Path) -> None:
    write_png(path, render())
