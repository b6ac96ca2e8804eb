"""Model swaps during a measurement: the ``swap`` scenario's background publisher."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path
from types import TracebackType

__all__ = ["Swapper", "copy_model"]


def copy_model(models: Path, name: str, repository: Path) -> None:
    """Copy model ``name`` (its versions and model.toml) from ``models`` into ``repository``."""
    target = repository / name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(models / name, target)


class Swapper:
    """While active, republishes ``path`` every ``interval`` seconds, the safe way (write a
    copy, rename it over the file): each publish is a new file that the gateway loads, warms
    up and swaps in while it keeps answering."""

    def __init__(self, path: Path, interval: float) -> None:
        self._path = path
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: Publishes done so far.
        self.publishes = 0

    def __enter__(self) -> Swapper:
        self._stop.clear()
        self._thread = threading.Thread(target=self._publish, name="swapper", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _publish(self) -> None:
        content = self._path.read_bytes()
        temporary = self._path.with_name(f".{self._path.name}.publishing")
        while not self._stop.wait(self._interval):
            temporary.write_bytes(content)
            os.replace(temporary, self._path)
            self.publishes += 1
