"""The Java protocol client agrees with the Python side: key hash vectors, handshake, errors."""

from __future__ import annotations

import json

import pytest

from tests.jvm.conftest import ROOT, run_java


def test_keyhash_vectors_all_match(java_cp: str) -> None:
    path = ROOT / "tests" / "data" / "keyhash_vectors.json"
    n = len(json.loads(path.read_text()))
    r = run_java(java_cp, "io.sparkext.test.KeyHashCheck", str(path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().splitlines()[-1] == f"OK {n} 0"


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory):
    """A private embedded server: (host, port, secret file)."""
    from spark_ext.client.embedded import ensure_embedded
    from spark_ext.spark.testing import PrivateHome

    home = PrivateHome(tmp_path_factory.mktemp("jvmhome")).start()
    try:
        (host, port), _ = ensure_embedded()
        yield host, port, home.path / "secret"
    finally:
        home.stop()


def test_handshake_and_errors(java_cp: str, embedded) -> None:
    host, port, secret = embedded
    r = run_java(java_cp, "io.sparkext.test.ProtocolCheck", host, str(port), str(secret))
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.split("\n")
    assert "PING true" in lines
    assert "UNKNOWN_KIND UNKNOWN_KIND" in lines
    assert "AFTER_ERROR true" in lines
    assert "WRONG_SECRET AUTH_FAILED" in lines
    assert "NO_SECRET AUTH_REQUIRED" in lines


def test_frames_round_trip_python_java_python(java_cp: str, tmp_path) -> None:
    from spark_ext.wire.frames import Frame, FrameReader, encode_frame

    frames = [
        Frame(0x0001, 1, {"versions": [1], "client": "x", "max_frame": 1 << 20}),
        Frame(0x0302, 2**64 - 1, {"table": "default.t", "where": ["and", ["=", "id", 5], ["in", "s", ["ä", "€"]]]}, b"", 0),
        Frame(0x0500, 7, {"txn": "t", "part": "0-1-0", "op": "insert"}, bytes(range(256)) * 300, 0x01),
        Frame(0x0302, 9, {}, b"", 0x04),
        Frame(0x0214, 10, {"code": 203, "name": "NO_SUCH_TABLE", "message": "no", "details": {}}, b"", 0x08),
    ]
    src = tmp_path / "in.bin"
    src.write_bytes(b"".join(encode_frame(f.kind, f.request_id, f.metadata, f.body, f.flags) for f in frames))
    out = tmp_path / "out.bin"
    r = run_java(java_cp, "io.sparkext.test.FrameCheck", str(src), str(out))
    assert r.returncode == 0 and f"FRAMES {len(frames)}" in r.stdout, r.stdout + r.stderr
    back = list(FrameReader(out.read_bytes()))
    assert [(f.kind, f.request_id, f.flags, f.metadata, bytes(f.body)) for f in back] == \
           [(f.kind, f.request_id, f.flags, f.metadata, bytes(f.body)) for f in frames]


def test_java_arrow_rows_read_by_pyarrow(java_cp: str, tmp_path) -> None:
    import datetime as dt
    import decimal

    import pyarrow as pa

    out = tmp_path / "rows.arrow"
    r = run_java(java_cp, "io.sparkext.spark.ArrowWriteCheck", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    t = pa.ipc.open_stream(out.read_bytes()).read_all()
    assert t.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert t.schema.field("tsn").type == pa.timestamp("us")
    assert t.schema.field("dec").type == pa.decimal128(38, 10)
    row = t.to_pylist()[0]
    assert row["i8"] == -128 and row["i16"] == 32767 and row["i32"] == -2**31 and row["i64"] == 2**63 - 1
    assert row["f32"] == 1.5 and row["f64"] == -2.25
    assert row["dec"] == decimal.Decimal("-1234567890123456789012345678.0123456789")
    assert row["s"] == "héllo" and row["bin"] == b"\x00\xff" and row["b"] is True
    assert row["d"] == dt.date(1969, 12, 31)
    assert row["ts"] == dt.datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=dt.timezone.utc)
    assert row["tsn"] == dt.datetime(1969, 12, 31, 23, 59, 59, 999999)
    assert all(v is None for v in t.to_pylist()[1].values())


def test_jvm_fence_on_ddl(java_cp: str, embedded) -> None:
    """io.sparkext.wire.Fence: DDL carries the leader's token; an older one is refused by the
    server, a lost leadership here before sending; the value survives serialization."""
    host, port, secret = embedded
    r = run_java(java_cp, "io.sparkext.test.FenceCheck", host, str(port), str(secret), "fence-check")
    assert r.returncode == 0, r.stdout + r.stderr
    out = dict(line.split(" ", 1) for line in r.stdout.strip().splitlines())
    assert out["NONE"] == "true true"
    assert out["LEAD3"] == "ok"
    assert out["LATE"] == "true"  # a loss reported for an earlier term does not stop this one
    assert out["LEAD2"].startswith("FENCED leader group 'fence-check': token 2 is older than token 3")
    assert out["LOST"] == ("FENCED leader group 'fence-check': this driver lost its leadership (renewal failed); "
                           "token 4 may not write, a newer leader holds the group")
    assert out["RELEAD"] == "ok"
    assert out["SERIALIZED"] == 'fence-check#5 {"fence":{"group":"fence-check","token":5}}'
    assert out["CLEARED"] == "ok"  # no HA: no fence, never refused
    spaces = out["NAMESPACES"]
    assert "fc_lead3" in spaces and "fc_relead" in spaces and "fc_cleared" in spaces
    assert "fc_lead2" not in spaces and "fc_lost" not in spaces
