"""The one Hub probe: may this process talk to the Hugging Face Hub right now?

Models and datasets both ask here before any Hub request. huggingface_hub and datasets retry a
failed request for ~25 s; one bounded TCP connect first lets an offline machine answer at once.
Offline rules: HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE set means offline without probing; for
datasets, HF_DATASETS_OFFLINE and datasets' own offline flag count too.
"""
from __future__ import annotations

import socket
import threading
import time
from urllib.parse import urlparse

from core import settings

# Datasets probe on every load; a minute-old answer is good enough for them.
PROBE_TTL_S = 60.0
_probe_cache: dict[tuple[str, int], tuple[float, bool]] = {}


def offline_forced(datasets: bool = False) -> bool:
    """The environment (or datasets' config) says offline: no probe is needed."""
    if settings.hub_offline(datasets=datasets):
        return True
    if datasets:
        import datasets.config  # lazy: only a hub dataset load gets here, with datasets installed
        return bool(datasets.config.HF_HUB_OFFLINE)
    return False


def endpoint() -> tuple[str, int]:
    """Host and port a hub request would first connect to (the proxy, when one is set)."""
    proxy = settings.https_proxy()
    if proxy:
        url = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        if url.hostname:
            return url.hostname, url.port or 80
    url = urlparse(settings.hf_endpoint())
    return url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)


def reachable(timeout: float = 3.0, cached: bool = False) -> bool:
    """One TCP connect, bounded in time (DNS has no timeout of its own, hence the thread).

    cached: reuse an answer younger than PROBE_TTL_S for the same host.
    """
    host, port = endpoint()
    if cached:
        hit = _probe_cache.get((host, port))
        if hit and time.monotonic() - hit[0] < PROBE_TTL_S:
            return hit[1]
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=probe, name="hub-probe", daemon=True)
    worker.start()
    worker.join(timeout)
    ok = bool(result and result[0])
    _probe_cache[(host, port)] = (time.monotonic(), ok)
    return ok


def allowed(datasets: bool = False, timeout: float = 3.0, cached: bool = False) -> bool:
    """Not forced offline, and the hub (or the proxy) answers."""
    return not offline_forced(datasets) and reachable(timeout, cached=cached)

