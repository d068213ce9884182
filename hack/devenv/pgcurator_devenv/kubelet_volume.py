"""A stand-in for the kubelet's Secret volume, for `mount` mode without a kubelet.

The kubelet's atomic writer lays a Secret out as::

    <dir>/..2024_05_01_10_00_00.123456789/tls.crt   the real files, in a timestamped directory
    <dir>/..data -> ..2024_05_01_10_00_00.123456789
    <dir>/tls.crt -> ..data/tls.crt               one symlink per key, created once

and updates it by writing a new timestamped directory, pointing a temporary symlink
`..data_tmp` at it and renaming that over `..data` (one atomic rename), then removing the
old directory. Readers see the old set or the new set, never a mix. Updates arrive late
(the kubelet syncs periodically: up to a minute or more); `delay` imitates that.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

DATA = "..data"
DATA_TMP = "..data_tmp"


class ProjectedSecret:
    """Project a Secret's decoded data into `directory`, owned by uid/gid (the server's user)."""

    def __init__(self, directory: Path, uid: int | None = None, gid: int | None = None,
                 mode: int = 0o600) -> None:
        self.directory = Path(directory)
        self.uid, self.gid, self.mode = uid, gid, mode
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o755)
        self._chown(self.directory)
        self._timers: list[threading.Timer] = []
        self.last_swap: float | None = None  # time.time() of the last ..data swap

    def _chown(self, path: Path) -> None:
        if self.uid is not None and self.gid is not None:
            os.chown(path, self.uid, self.gid, follow_symlinks=False)

    def write(self, data: Mapping[str, bytes]) -> None:
        """Project now (atomically)."""
        stamp = datetime.now(UTC).strftime("..%Y_%m_%d_%H_%M_%S.%f") + f"{time.monotonic_ns() % 1000:03d}"
        ts_dir = self.directory / stamp
        ts_dir.mkdir(mode=0o755)
        self._chown(ts_dir)
        for key, value in data.items():
            f = ts_dir / key
            f.write_bytes(value)
            f.chmod(self.mode)
            self._chown(f)
        old = os.readlink(self.directory / DATA) if (self.directory / DATA).is_symlink() else None
        tmp = self.directory / DATA_TMP
        if tmp.is_symlink():
            tmp.unlink()
        os.symlink(stamp, tmp)
        os.replace(tmp, self.directory / DATA)  # the atomic swap
        self.last_swap = time.time()
        for key in data:
            link = self.directory / key
            if not link.is_symlink():
                os.symlink(f"{DATA}/{key}", link)
        if old and old != stamp:
            shutil.rmtree(self.directory / old, ignore_errors=True)

    def write_later(self, data: Mapping[str, bytes], delay: float) -> threading.Timer:
        """Project after `delay` seconds, as a kubelet sync would."""
        snapshot = dict(data)
        timer = threading.Timer(delay, self.write, args=(snapshot,))
        timer.daemon = True
        timer.start()
        self._timers.append(timer)
        return timer

    def cancel(self) -> None:
        for t in self._timers:
            t.cancel()
