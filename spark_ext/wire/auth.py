"""The HELLO/AUTH handshake: version negotiation and mutual HMAC authentication.

Pure functions, no sockets (``docs/protocol.md``, "Connection set-up and
authentication")::

    client -> HELLO {versions, client, max_frame}
    server -> HELLO {version, server, role, auth_required, nonce?, max_frame}
    client -> AUTH  {client_nonce, proof = HMAC(secret, nonce || client_nonce)}
    server -> AUTH  {proof = HMAC(secret, client_nonce || nonce)}

HMAC is HMAC-SHA256; nonces are 32 random bytes, sent as lowercase hex. The two proofs
hash the nonces in opposite orders, so neither side's proof can be replayed as the
other's; the server only reveals its proof after the client proved itself, so it is
never an oracle for an unauthenticated peer.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from typing import Any, Mapping, Sequence

from spark_ext.wire.errors import WireError
from spark_ext.wire.frames import DEFAULT_MAX_FRAME, SUPPORTED_VERSIONS
from spark_ext.wire.kinds import ErrorCode

logger = logging.getLogger(__name__)

NONCE_SIZE = 32
PROOF_SIZE = 32  # SHA-256 digest


def secret_bytes(secret: str | bytes | None) -> bytes | None:
    """Normalize a configured secret: text is UTF-8 encoded; empty means none. O(len).

    Surrounding whitespace of a text secret is dropped (it usually comes from a file
    with a trailing newline); byte secrets are used as given.
    """
    if secret is None:
        return None
    b = secret.strip().encode("utf-8") if isinstance(secret, str) else bytes(secret)
    return b or None


def make_nonce() -> bytes:
    """32 bytes from the OS's cryptographic random source. O(1)."""
    return secrets.token_bytes(NONCE_SIZE)


def _check_nonce(nonce: bytes, what: str) -> None:
    if len(nonce) != NONCE_SIZE:
        # Fixed lengths keep ``a || b`` unambiguous, which the proof scheme relies on.
        raise WireError(ErrorCode.AUTH_FAILED, f"{what} must be {NONCE_SIZE} bytes, got {len(nonce)}")


def client_proof(secret: bytes, server_nonce: bytes, client_nonce: bytes) -> bytes:
    """HMAC-SHA256(secret, server_nonce || client_nonce): the client's proof. O(1)."""
    _check_nonce(server_nonce, "server nonce")
    _check_nonce(client_nonce, "client nonce")
    return hmac.new(secret, server_nonce + client_nonce, hashlib.sha256).digest()


def server_proof(secret: bytes, server_nonce: bytes, client_nonce: bytes) -> bytes:
    """HMAC-SHA256(secret, client_nonce || server_nonce): the server's proof. O(1)."""
    _check_nonce(server_nonce, "server nonce")
    _check_nonce(client_nonce, "client nonce")
    return hmac.new(secret, client_nonce + server_nonce, hashlib.sha256).digest()


def verify(expected: bytes, got: bytes) -> bool:
    """Constant-time comparison of two proofs. O(len)."""
    return hmac.compare_digest(expected, got)


def to_hex(b: bytes) -> str:
    """Lowercase hex of a nonce or proof. O(len)."""
    return b.hex()


def from_hex(value: Any, what: str, size: int) -> bytes:
    """Parse a hex field of exactly ``size`` bytes. O(len).

    Raises:
        WireError: AUTH_FAILED naming the field when it is missing or malformed.
    """
    if not isinstance(value, str) or len(value) != 2 * size:
        raise WireError(ErrorCode.AUTH_FAILED, f"{what} must be {2 * size} hex digits")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise WireError(ErrorCode.AUTH_FAILED, f"{what} is not hex") from None


# --- version negotiation ----------------------------------------------------------------


def client_hello(
    client: str, *, versions: Sequence[int] = tuple(sorted(SUPPORTED_VERSIONS)), max_frame: int = DEFAULT_MAX_FRAME
) -> dict[str, Any]:
    """Metadata of the client's HELLO. O(1)."""
    return {"versions": list(versions), "client": client, "max_frame": max_frame}


def negotiate_version(offered: Any) -> int:
    """The highest version both sides speak. O(len(offered)).

    Raises:
        WireError: UNSUPPORTED_VERSION (fatal) when there is none; BAD_ARGUMENT when
            ``offered`` is not a list of ints.
    """
    if not isinstance(offered, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in offered):
        raise WireError(ErrorCode.BAD_ARGUMENT, "HELLO 'versions' must be a list of integers")
    common = SUPPORTED_VERSIONS.intersection(offered)
    if not common:
        raise WireError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"no common protocol version: client offers {offered}, server speaks {sorted(SUPPORTED_VERSIONS)}",
            {"offered": offered, "supported": sorted(SUPPORTED_VERSIONS)},
        )
    return max(common)


def server_hello(
    hello: Mapping[str, Any],
    secret: bytes | None,
    *,
    server: str,
    role: str,
    max_frame: int = DEFAULT_MAX_FRAME,
    extra: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], bytes | None]:
    """The server's reply to HELLO and the nonce it must remember. O(1).

    Args:
        hello: the client's HELLO metadata.
        secret: the server's secret, or None when authentication is off.
        server: server software name and version, for logs.
        role: ``"server"``, ``"locator"`` or ``"embedded"``.
        max_frame: the largest frame this server accepts.
        extra: further fields for the reply (e.g. ``server_id``).

    Returns:
        (reply metadata, server nonce or None when no AUTH is expected).

    Raises:
        WireError: UNSUPPORTED_VERSION or BAD_ARGUMENT.
    """
    version = negotiate_version(hello.get("versions", [1]))
    reply: dict[str, Any] = {
        "version": version,
        "server": server,
        "role": role,
        "auth_required": secret is not None,
        "max_frame": max_frame,
    }
    if extra:
        reply.update(extra)
    nonce = None
    if secret is not None:
        nonce = make_nonce()
        reply["nonce"] = to_hex(nonce)
    return reply, nonce


def client_auth(hello_reply: Mapping[str, Any], secret: bytes) -> tuple[dict[str, Any], bytes, bytes]:
    """The client's AUTH metadata for a server HELLO reply that asked for it. O(1).

    Returns:
        (AUTH metadata, server nonce, client nonce); keep both nonces to check the
        server's proof with :func:`client_check`.

    Raises:
        WireError: AUTH_FAILED when the server's nonce is malformed.
    """
    server_nonce = from_hex(hello_reply.get("nonce"), "HELLO 'nonce'", NONCE_SIZE)
    client_nonce = make_nonce()
    proof = client_proof(secret, server_nonce, client_nonce)
    return {"client_nonce": to_hex(client_nonce), "proof": to_hex(proof)}, server_nonce, client_nonce


def server_check(auth: Mapping[str, Any], secret: bytes, server_nonce: bytes) -> dict[str, Any]:
    """Verify a client's AUTH; return the AUTH reply proving the server. O(1).

    Raises:
        WireError: AUTH_FAILED (fatal: answer it and close) on a malformed or wrong
            proof. The message never says which part was wrong.
    """
    client_nonce = from_hex(auth.get("client_nonce"), "AUTH 'client_nonce'", NONCE_SIZE)
    got = from_hex(auth.get("proof"), "AUTH 'proof'", PROOF_SIZE)
    if client_nonce == server_nonce:
        # A peer echoing our nonce back is reflecting, not answering.
        raise WireError(ErrorCode.AUTH_FAILED, "authentication failed")
    if not verify(client_proof(secret, server_nonce, client_nonce), got):
        logger.warning("authentication failed: wrong HMAC proof")
        raise WireError(ErrorCode.AUTH_FAILED, "authentication failed")
    return {"proof": to_hex(server_proof(secret, server_nonce, client_nonce))}


def client_check(reply: Mapping[str, Any], secret: bytes, server_nonce: bytes, client_nonce: bytes) -> None:
    """Verify the server's AUTH reply (mutual authentication). O(1).

    Raises:
        WireError: AUTH_FAILED when the server does not know the secret; the client
            closes the connection.
    """
    got = from_hex(reply.get("proof"), "AUTH reply 'proof'", PROOF_SIZE)
    if not verify(server_proof(secret, server_nonce, client_nonce), got):
        raise WireError(ErrorCode.AUTH_FAILED, "server failed to prove it knows the secret")
