"""The HELLO/AUTH handshake: success, wrong secrets, tampering, malformed fields."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from spark_ext.wire import auth
from spark_ext.wire.errors import WireError
from spark_ext.wire.kinds import ErrorCode

SECRET = b"0123456789abcdef0123456789abcdef"


def handshake(client_secret: bytes, server_secret: bytes | None) -> None:
    hello = auth.client_hello("test-client/1")
    reply, nonce = auth.server_hello(hello, server_secret, server="spark-ext/0.1", role="server")
    if server_secret is None:
        assert reply["auth_required"] is False and nonce is None and "nonce" not in reply
        return
    assert reply["auth_required"] is True and nonce is not None
    md, sn, cn = auth.client_auth(reply, client_secret)
    answer = auth.server_check(md, server_secret, nonce)
    auth.client_check(answer, client_secret, sn, cn)


def test_success() -> None:
    handshake(SECRET, SECRET)


def test_no_secret_negotiates_version_only() -> None:
    handshake(SECRET, None)
    reply, _ = auth.server_hello({"versions": [1, 7]}, None, server="s", role="locator", extra={"server_id": "x"})
    assert reply["version"] == 1 and reply["role"] == "locator" and reply["server_id"] == "x"


def test_wrong_client_secret_fails_at_server() -> None:
    with pytest.raises(WireError) as ei:
        handshake(b"wrong-secret-wrong-secret-wrong!", SECRET)
    assert ei.value.code == ErrorCode.AUTH_FAILED and ei.value.fatal
    assert ei.value.message == "authentication failed"  # says nothing about which part


def test_server_without_secret_cannot_fake_proof() -> None:
    hello = auth.client_hello("c")
    reply, nonce = auth.server_hello(hello, SECRET, server="s", role="server")
    md, sn, cn = auth.client_auth(reply, SECRET)
    # An impostor server answers with a proof made from a guessed secret.
    fake = {"proof": auth.server_proof(b"guess", sn, cn).hex()}
    with pytest.raises(WireError) as ei:
        auth.client_check(fake, SECRET, sn, cn)
    assert ei.value.code == ErrorCode.AUTH_FAILED


def test_tampered_proof_and_nonce() -> None:
    reply, nonce = auth.server_hello(auth.client_hello("c"), SECRET, server="s", role="server")
    assert nonce is not None
    md, _, _ = auth.client_auth(reply, SECRET)
    flipped = ("0" if md["proof"][0] != "0" else "1") + md["proof"][1:]
    for bad in (
        {**md, "proof": flipped},
        {**md, "client_nonce": ("f" if md["client_nonce"][0] != "f" else "e") + md["client_nonce"][1:]},
        {**md, "proof": md["proof"][:-2]},
        {**md, "proof": "zz" * 32},
        {**md, "proof": None},
        {"proof": md["proof"]},
        {**md, "client_nonce": nonce.hex()},  # reflecting the server's nonce
    ):
        with pytest.raises(WireError) as ei:
            auth.server_check(bad, SECRET, nonce)
        assert ei.value.code == ErrorCode.AUTH_FAILED


def test_replayed_proof_fails_with_new_nonce() -> None:
    reply1, nonce1 = auth.server_hello(auth.client_hello("c"), SECRET, server="s", role="server")
    md1, _, _ = auth.client_auth(reply1, SECRET)
    _, nonce2 = auth.server_hello(auth.client_hello("c"), SECRET, server="s", role="server")
    assert nonce1 != nonce2 and nonce2 is not None
    with pytest.raises(WireError):
        auth.server_check(md1, SECRET, nonce2)


def test_proofs_match_the_spec_formula() -> None:
    sn, cn = bytes(range(32)), bytes(range(32, 64))
    assert auth.client_proof(SECRET, sn, cn) == hmac.new(SECRET, sn + cn, hashlib.sha256).digest()
    assert auth.server_proof(SECRET, sn, cn) == hmac.new(SECRET, cn + sn, hashlib.sha256).digest()
    assert auth.client_proof(SECRET, sn, cn) != auth.server_proof(SECRET, sn, cn)
    # The fixed vector printed in docs/protocol.md for the Java side.
    assert auth.client_proof(b"secret", bytes(32), bytes([1]) * 32).hex() == (
        "6a027cafa15d239176efbb299f1b572eebb338fda7c0ff71ff17ccf4de05f834"
    )
    assert auth.server_proof(b"secret", bytes(32), bytes([1]) * 32).hex() == (
        "becf482d20c2873ee41773e50ead690f773f37bc5c81df791c80c4af0ad68efa"
    )


def test_nonce_lengths_are_enforced() -> None:
    with pytest.raises(WireError):
        auth.client_proof(SECRET, b"short", bytes(32))
    with pytest.raises(WireError):
        auth.client_auth({"nonce": "ab" * 16}, SECRET)


def test_make_nonce_is_random() -> None:
    assert len({auth.make_nonce() for _ in range(100)}) == 100


def test_version_negotiation() -> None:
    assert auth.negotiate_version([1]) == 1
    with pytest.raises(WireError) as ei:
        auth.negotiate_version([2, 3])
    assert ei.value.code == ErrorCode.UNSUPPORTED_VERSION and ei.value.fatal
    with pytest.raises(WireError) as ei:
        auth.negotiate_version("1")
    assert ei.value.code == ErrorCode.BAD_ARGUMENT
    with pytest.raises(WireError):
        auth.negotiate_version([True])


def test_secret_bytes() -> None:
    assert auth.secret_bytes(None) is None
    assert auth.secret_bytes("") is None
    assert auth.secret_bytes("  abc\n") == b"abc"
    assert auth.secret_bytes(b" abc") == b" abc"
    assert auth.secret_bytes("\u00e9") == "\u00e9".encode("utf-8")
