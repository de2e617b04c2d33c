"""The one Hub probe (core.hub): its offline rules, with the network mocked."""
from __future__ import annotations

import socket

import pytest

from core import hub

OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


@pytest.fixture
def online_env(monkeypatch):
    for var in (*OFFLINE_VARS, "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(hub, "_probe_cache", {})
    import datasets.config
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)


@pytest.fixture
def connects(monkeypatch):
    """Every connection succeeds; the list records where each went."""
    calls: list = []

    class _Conn:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def connect(address, timeout=None):
        calls.append(address)
        return _Conn()

    monkeypatch.setattr(socket, "create_connection", connect)
    return calls


@pytest.mark.parametrize("var", ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"])
def test_offline_env_means_no_probe(online_env, connects, monkeypatch, var):
    monkeypatch.setenv(var, "1")
    assert hub.allowed() is False
    assert hub.allowed(datasets=True) is False
    assert connects == []  # decided from the environment alone


def test_datasets_offline_flag_counts_for_datasets_only(online_env, connects, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "yes")
    assert hub.allowed(datasets=True) is False
    assert hub.allowed() is True
    assert connects == [("huggingface.co", 443)]


def test_reachable_host_allows(online_env, connects):
    assert hub.allowed() is True
    assert connects == [("huggingface.co", 443)]


def test_unreachable_host_refuses(online_env, monkeypatch):
    def refuse(*a, **k):
        raise OSError("network is unreachable (test)")

    monkeypatch.setattr(socket, "create_connection", refuse)
    assert hub.reachable(timeout=0.3) is False
    assert hub.allowed(timeout=0.3) is False


def test_cached_answer_is_reused_only_when_asked(online_env, connects):
    assert hub.reachable(cached=True) is True
    assert hub.reachable(cached=True) is True
    assert len(connects) == 1
    assert hub.reachable() is True  # models ask afresh every time
    assert len(connects) == 2


def test_probe_goes_to_proxy_then_endpoint(online_env, connects, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.example:8443")
    assert hub.endpoint() == ("hf-mirror.example", 8443)
    monkeypatch.setenv("ALL_PROXY", "proxy.internal:3128")
    assert hub.endpoint() == ("proxy.internal", 3128)
    hub.reachable()
    assert connects == [("proxy.internal", 3128)]
