"""Kind and error numbers: ranges, uniqueness, agreement with the spec and the engine."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from spark_ext.wire.errors import WireError
from spark_ext.wire.kinds import FATAL_ERRORS, ErrorCode, Kind, is_known_kind, kind_name

SPEC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"

AREAS = {
    "HELLO": (0x0001, 0x00FF), "REGISTER_SERVER": (0x0100, 0x01FF), "CREATE_TABLE": (0x0200, 0x02FF),
    "GET": (0x0300, 0x03FF), "PUT": (0x0400, 0x04FF), "TXN_STAGE": (0x0500, 0x05FF), "LEASE_ACQUIRE": (0x0600, 0x06FF),
}


def test_kinds_are_u16_and_in_their_areas() -> None:
    assert all(0 < k <= 0xEFFF for k in Kind)
    for name, (lo, hi) in AREAS.items():
        assert lo <= Kind[name] <= hi
    assert kind_name(0x0302) == "SCAN" and kind_name(0x7777) == "KIND_0x7777"
    assert is_known_kind(0x0001) and not is_known_kind(0) and not is_known_kind(0xF000)


def _spec_table(section: str) -> dict[str, int]:
    text = SPEC.read_text(encoding="utf-8")
    start = text.index(section)
    out: dict[str, int] = {}
    for m in re.finditer(r"^\|\s*`?(0x[0-9A-Fa-f]{4}|\d+)`?\s*\|\s*`?([A-Z_]+)`?\s*\|", text[start:], re.M):
        out[m.group(2)] = int(m.group(1), 0)
    return out


def test_spec_lists_exactly_the_kinds() -> None:
    table = _spec_table("<!-- kinds-table -->")
    assert {k: v for k, v in table.items() if k in Kind.__members__} == {k.name: int(k) for k in Kind}


def _served_by() -> dict[str, str]:
    """Kind name -> the "served by" column of the spec's kinds table."""
    text = SPEC.read_text(encoding="utf-8")
    start = text.index("<!-- kinds-table -->")
    out: dict[str, str] = {}
    for m in re.finditer(r"^\|\s*0x[0-9A-Fa-f]{4}\s*\|\s*([A-Z_]+)\s*\|([^|]*)\|", text[start:], re.M):
        out[m.group(1)] = m.group(2).strip()
    return out


def _handled_kinds() -> tuple[set[int], set[int]]:
    """Kinds a store server and a locator register handlers for (HELLO and AUTH are
    answered by the connection layer itself)."""
    from spark_ext.ha.leases import LeaseTable
    from spark_ext.locator.catalog import Catalog
    from spark_ext.locator.lease_service import LeaseService
    from spark_ext.locator.service import LocatorService
    from spark_ext.server.store_service import StoreService
    from spark_ext.server.tcp import FrameServer
    from spark_ext.store import Store

    store, locator = FrameServer(role="server"), FrameServer(role="locator")
    engine = Store(None)
    service = StoreService(engine)
    loc = LocatorService(Catalog(None))
    loc.lease_service = LeaseService(LeaseTable(None))
    try:
        service.register(store)
        loc.register(locator)
    finally:
        service.close()
        loc.close()
        engine.close()
    handshake = {int(Kind.HELLO), int(Kind.AUTH)}
    return set(store.handlers) | handshake, set(locator.handlers) | handshake


def test_spec_says_which_kinds_are_served() -> None:
    # Section 12's "served by": S = store server, L = locator, S<-L = store server (sent
    # by the locator), any = both, "not implemented" = neither.
    served = _served_by()
    assert set(served) == set(Kind.__members__)
    store, locator = _handled_kinds()
    for name, where in served.items():
        k = int(Kind[name])
        if where.startswith("not implemented"):
            assert k not in store and k not in locator, f"{name} is served: drop 'not implemented' in the spec"
        elif where.startswith("any"):
            assert k in store and k in locator, name
        elif where.startswith("S"):
            assert k in store, f"{name}: the spec says a store server serves it"
        elif where.startswith("L"):
            assert k in locator, f"{name}: the spec says the locator serves it"
        else:
            pytest.fail(f"{name}: unknown 'served by' {where!r}")


def test_spec_lists_exactly_the_error_codes() -> None:
    table = _spec_table("<!-- errors-table -->")
    assert {k: v for k, v in table.items() if k in ErrorCode.__members__} == {e.name: int(e) for e in ErrorCode}


def test_engine_error_codes_all_exist_on_the_wire() -> None:
    exc = pytest.importorskip("spark_ext.exceptions")
    codes = {
        getattr(obj, "code") for obj in vars(exc).values()
        if isinstance(obj, type) and issubclass(obj, Exception) and isinstance(getattr(obj, "code", None), str)
    }
    assert codes <= set(ErrorCode.__members__), codes - set(ErrorCode.__members__)


def test_wire_error_metadata_round_trip() -> None:
    e = WireError(ErrorCode.TYPE_MISMATCH, "bad", {"table": "t", "column": "c", "value": "'x'", "nan": float("nan")})
    md = e.to_metadata()
    assert md == {"code": 102, "name": "TYPE_MISMATCH", "message": "bad",
                  "details": {"table": "t", "column": "c", "value": "'x'", "nan": "nan"}}
    back = WireError.from_metadata(md)
    assert (back.code, back.name, back.message) == (ErrorCode.TYPE_MISMATCH, "TYPE_MISMATCH", "bad")
    assert str(back) == "TYPE_MISMATCH: bad"


def test_unknown_and_broken_error_metadata() -> None:
    e = WireError.from_metadata({"code": 4242, "name": "FUTURE_THING", "message": "m"})
    assert e.code == 4242 and e.name == "FUTURE_THING" and not e.fatal and not e.retryable
    assert WireError.from_metadata({}).code == ErrorCode.INTERNAL
    assert WireError.from_metadata({"code": True, "details": 5}).details == {}


def test_from_exception() -> None:
    class DuplicateKeyError(Exception):
        code = "DUPLICATE_KEY"

        def __init__(self, message: str, **details: object) -> None:
            super().__init__(message)
            self.message = message
            self.details = details

    e = WireError.from_exception(DuplicateKeyError("key 1 exists", table="t", value="1"))
    assert e.code == ErrorCode.DUPLICATE_KEY and e.details == {"table": "t", "value": "1"}
    i = WireError.from_exception(KeyError("boom"))
    assert i.code == ErrorCode.INTERNAL and "KeyError" in i.message
    same = WireError(ErrorCode.CONFLICT, "x")
    assert WireError.from_exception(same) is same


def test_fatal_set() -> None:
    assert ErrorCode.UNKNOWN_KIND not in FATAL_ERRORS  # the connection stays open
    assert {ErrorCode.MALFORMED, ErrorCode.FRAME_TOO_LARGE, ErrorCode.AUTH_FAILED} <= FATAL_ERRORS
