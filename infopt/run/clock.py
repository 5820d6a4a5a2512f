"""Wall-clock facts a run records: the host's name and UTC timestamps (one owner, for the manifest and both
executors)."""

from __future__ import annotations

import datetime as _dt
import socket


def hostname() -> str:
    return socket.gethostname()


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


__all__ = ["hostname", "utc_now"]
