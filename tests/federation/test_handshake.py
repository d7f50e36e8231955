"""Real mutual TLS between node processes: the good peer is served and named in the
scope; each impersonation is refused in the handshake, before the app sees a request,
and the server's refusal hook hears of it with its reason."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest

from domicile.errors import NodeUnavailable, PeerRefused
from domicile.federation import remove_node
from domicile.federation.channel import NodeChannel

from .conftest import Deployment, NodeServer, bundle, forged_ca, mint


def _channel(node_dir: Path, peers: dict[str, str]) -> NodeChannel:
    return NodeChannel(node_dir, peers, timeout=10, attempts=2, backoff=0.05)


def _refused_by_server(node_dir: Path, server: NodeServer, reason: str) -> None:
    """A client with ``node_dir``'s certificate gets no answer, the app saw nothing and
    the server's hook recorded the refusal with ``reason``."""
    with _channel(node_dir, {"ru": server.url}) as channel, pytest.raises(NodeUnavailable):
        channel.request("ru", "GET", "/peer")
    assert server.requests() == []
    refusals = server.refusals(at_least=1)
    assert refusals, "the refusal hook was not called"
    assert {r["reason"] for r in refusals} == {reason}


def test_the_good_peer_is_served_over_http2_and_named_from_its_certificate(
    deployment: Deployment, node_servers: Any
) -> None:
    ru = node_servers(deployment.nodes["ru"])
    with _channel(deployment.nodes["de"], {"ru": ru.url}) as channel:
        answer = channel.request(
            "ru", "GET", "/peer", headers={"X-Domicile-Peer": "us"}, idempotency_key="k1"
        )
    assert answer.status_code == 200
    assert answer.http_version == "HTTP/2"
    body = answer.json()
    assert body["peer"] == "de"  # from the handshake; the header claiming "us" is ignored
    assert body["claimed_peer_header"] == "us"
    assert body["key"] == "k1"
    assert ru.refusals() == []


def test_a_certificate_from_another_ca_with_the_same_name_is_refused(
    deployment: Deployment, node_servers: Any, tmp_path: Path
) -> None:
    ru = node_servers(deployment.nodes["ru"])
    fake_ca, fake_key = forged_ca(deployment.ca_cert())
    cert, key = mint(fake_ca, fake_key, nodes=["de"])
    forged = bundle(tmp_path / "forged", deployment.nodes["de"], cert, key)
    _refused_by_server(forged, ru, "unknown_ca")


def test_an_expired_certificate_is_refused(
    deployment: Deployment, node_servers: Any, tmp_path: Path
) -> None:
    ru = node_servers(deployment.nodes["ru"])
    now = dt.datetime.now(dt.UTC)
    cert, key = mint(deployment.ca_cert(), deployment.ca_key(), nodes=["de"],
                     not_before=now - dt.timedelta(days=100), not_after=now - dt.timedelta(days=1))  # fmt: skip
    _refused_by_server(bundle(tmp_path / "old", deployment.nodes["de"], cert, key), ru, "expired")


def test_a_certificate_not_yet_valid_is_refused(
    deployment: Deployment, node_servers: Any, tmp_path: Path
) -> None:
    ru = node_servers(deployment.nodes["ru"])
    now = dt.datetime.now(dt.UTC)
    cert, key = mint(deployment.ca_cert(), deployment.ca_key(), nodes=["de"],
                     not_before=now + dt.timedelta(days=1))  # fmt: skip
    _refused_by_server(
        bundle(tmp_path / "early", deployment.nodes["de"], cert, key), ru, "not_yet_valid"
    )


def test_a_removed_nodes_certificate_is_refused_by_a_running_server(
    deployment: Deployment, node_servers: Any, tmp_path: Path
) -> None:
    ru = node_servers(deployment.nodes["ru"])
    kept = tmp_path / "us-kept"  # what the removed node's operator still holds
    kept.mkdir()
    for name in ("node.pem", "node.key", "ca.pem"):
        (kept / name).write_bytes((deployment.nodes["us"] / name).read_bytes())
    with _channel(deployment.nodes["us"], {"ru": ru.url}) as channel:
        assert channel.request("ru", "GET", "/peer").json()["peer"] == "us"
    remove_node(deployment.ca, "us")  # the server's crl.pem is rewritten; no restart
    (kept / "crl.pem").write_bytes((deployment.nodes["ru"] / "crl.pem").read_bytes())
    before = len(ru.requests())
    with _channel(kept, {"ru": ru.url}) as channel, pytest.raises(NodeUnavailable):
        channel.request("ru", "GET", "/peer")
    assert len(ru.requests()) == before
    assert {r["reason"] for r in ru.refusals(at_least=1)} == {"revoked"}


def test_a_node_name_not_in_a_node_uri_is_refused(
    deployment: Deployment, node_servers: Any, tmp_path: Path
) -> None:
    """A certificate of the CA without a node identity (as a mis-issued one would be)."""
    ru = node_servers(deployment.nodes["ru"])
    cert, key = mint(deployment.ca_cert(), deployment.ca_key(), nodes=[], hosts=("de",))
    _refused_by_server(
        bundle(tmp_path / "anon", deployment.nodes["de"], cert, key), ru, "no_node_identity"
    )


def test_a_caller_expecting_one_node_refuses_another_before_sending_anything(
    deployment: Deployment, node_servers: Any
) -> None:
    """Node ru's server answers at the address where de asked for us: the caller refuses
    it in the handshake; the request never reaches ru's app."""
    ru = node_servers(deployment.nodes["ru"])
    channel = _channel(deployment.nodes["de"], {"us": ru.url})
    with channel, pytest.raises(PeerRefused) as caught:
        channel.request("us", "POST", "/peer", json={"subject": "x"})
    assert caught.value.reason == "wrong_node"
    assert caught.value.node == "ru"
    assert ru.requests() == []


def test_a_caller_refuses_a_server_with_a_forged_or_expired_certificate(
    deployment: Deployment, node_servers: Any, tmp_path: Path
) -> None:
    fake_ca, fake_key = forged_ca(deployment.ca_cert())
    cert, key = mint(fake_ca, fake_key, nodes=["ru"], hosts=("localhost",))
    forged = node_servers(bundle(tmp_path / "forged", deployment.nodes["ru"], cert, key))
    now = dt.datetime.now(dt.UTC)
    cert, key = mint(deployment.ca_cert(), deployment.ca_key(), nodes=["ru"],
                     not_before=now - dt.timedelta(days=9), not_after=now - dt.timedelta(days=1))  # fmt: skip
    stale = node_servers(bundle(tmp_path / "stale", deployment.nodes["ru"], cert, key))
    heard: list[str] = []
    for server, reason in ((forged, "unknown_ca"), (stale, "expired")):
        channel = NodeChannel(
            deployment.nodes["de"], {"ru": server.url}, on_refusal=lambda r: heard.append(r.reason)
        )
        with channel, pytest.raises(PeerRefused) as caught:
            channel.request("ru", "GET", "/peer")
        assert caught.value.reason == reason
        assert server.requests() == []
    assert heard == ["unknown_ca", "expired"]


def test_a_plain_tls_client_without_a_certificate_gets_nothing(
    deployment: Deployment, node_servers: Any
) -> None:
    ru = node_servers(deployment.nodes["ru"])
    ctx = ssl.create_default_context(cafile=str(deployment.nodes["ru"] / "ca.pem"))
    ctx.check_hostname = False
    with socket.create_connection(("127.0.0.1", ru.port), timeout=10) as raw:
        try:
            with ctx.wrap_socket(raw) as tls:
                tls.sendall(b"GET /peer HTTP/1.1\r\nHost: ru\r\n\r\n")
                answer = tls.recv(4096)
        except (ssl.SSLError, ConnectionError):
            answer = b""
    assert b"HTTP/1.1" not in answer
    assert ru.requests() == []
    assert {r["reason"] for r in ru.refusals(at_least=1)} == {"no_certificate"}
