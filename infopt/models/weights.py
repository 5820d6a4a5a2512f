"""Pretrained weight loading that fails with one clear sentence.

The lab defaults to seeded random weights (timing does not depend on weight
values, and they need no network). ``weights="pretrained"`` first looks in the
local caches, then tries a download, and otherwise raises
:class:`WeightsUnavailableError` that says how to get the weights. It never
falls back to random weights silently.
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, TypeVar
from urllib.parse import urlparse

import torch

from infopt.errors import InvalidInputError, WeightsUnavailableError

T = TypeVar("T")
_DOWNLOAD_TIMEOUT_S = 20.0


def offline() -> bool:
    """True when the user asked for no network (HF_HUB_OFFLINE / INFOPT_OFFLINE)."""
    return any(os.environ.get(name, "").lower() in ("1", "true", "yes") for name in ("HF_HUB_OFFLINE", "INFOPT_OFFLINE"))


def _unreachable_reason(url: str) -> str | None:
    """Why ``url``'s host cannot be reached (checked before a download retries for minutes)."""
    host = urlparse(url).hostname or url
    try:
        with _socket_timeout(5.0):
            socket.getaddrinfo(host, 443)
    except OSError as error:
        return f"cannot resolve {host}: {error}"
    return None


@contextmanager
def _socket_timeout(seconds: float):
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def load_torchvision_weights(weights_enum) -> dict:
    """State dict of a torchvision weights entry, from the hub cache or a download."""
    filename = Path(weights_enum.url).name
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if cached.exists():
        return torch.load(cached, map_location="cpu", weights_only=True)
    how = (f"download {weights_enum.url} to {cached} on a machine with network access, "
           "or use weights='random'")
    if offline():
        raise WeightsUnavailableError(f"Pretrained weights {filename} are not cached and the run is offline: {how}.")
    unreachable = _unreachable_reason(weights_enum.url)
    if unreachable:
        raise WeightsUnavailableError(f"Pretrained weights {filename} are not cached and the network is "
                                      f"unavailable ({unreachable}): {how}.")
    try:
        with _socket_timeout(_DOWNLOAD_TIMEOUT_S):
            return torch.hub.load_state_dict_from_url(weights_enum.url, map_location="cpu", progress=False)
    except Exception as error:  # any network failure ends the same way
        raise WeightsUnavailableError(
            f"Pretrained weights {filename} are not cached and could not be downloaded "
            f"({type(error).__name__}): {how}."
        ) from None


def load_hf_pretrained(loader: Callable[..., T], repo_id: str, **kwargs) -> T:
    """``loader(repo_id, ...)`` (a ``from_pretrained``) from the HF cache, else from the Hub."""
    try:
        return loader(repo_id, local_files_only=True, **kwargs)
    except (OSError, ValueError):
        pass
    how = (f"run `huggingface-cli download {repo_id}` on a machine with network access "
           "(or copy its HF cache folder here), or use weights='random'")
    if offline():
        raise WeightsUnavailableError(f"Pretrained weights for '{repo_id}' are not in the Hugging Face cache "
                                      f"and the run is offline: {how}.")
    unreachable = _unreachable_reason(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    if unreachable:
        raise WeightsUnavailableError(f"Pretrained weights for '{repo_id}' are not cached and the network is "
                                      f"unavailable ({unreachable}): {how}.")
    try:
        with _socket_timeout(_DOWNLOAD_TIMEOUT_S):
            return loader(repo_id, **kwargs)
    except Exception as error:
        raise WeightsUnavailableError(
            f"Pretrained weights for '{repo_id}' are not cached and could not be downloaded "
            f"({type(error).__name__}): {how}."
        ) from None


def load_weights_file(module, path: Path, where: str) -> str:
    """Load a ``.pth`` state dict (or a checkpoint holding ``state_dict``) into ``module``; returns the
    weights label ``pretrained (from <path>)``; a file that does not fit is one sentence."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - unreadable or not a tensor file
        raise InvalidInputError(f"{where}: weights file {path} cannot be read ({type(error).__name__}).") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    try:
        module.load_state_dict(state)
    except Exception as error:  # noqa: BLE001 - keys or shapes of another architecture
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise InvalidInputError(f"{where}: weights file {path} does not fit this architecture ({first}).") from None
    return f"pretrained (from {path.resolve()})"
