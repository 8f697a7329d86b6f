"""The locator's side of ALTER TABLE in one process: the catalog change is versioned and
persisted, pushed to a real store service (LocalLink, as in the embedded server), and a
server that fails to take it is told to register again at its next heartbeat."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from spark_ext.exceptions import ConflictError, SchemaError, TableExistsError
from spark_ext.locator.catalog import Catalog
from spark_ext.locator.service import LocalLink, LocatorService
from spark_ext.server.store_service import StoreService
from spark_ext.store import Store
from spark_ext.wire.frames import Frame
from spark_ext.wire.kinds import Kind


class _Handlers:
    """Collects a service's handlers the way a FrameServer would."""

    def __init__(self) -> None:
        self.handlers: dict[int, Callable[..., Any]] = {}
        self.before_replies: list[Callable[[], None]] = []

    def register(self, kind: Kind, fn: Callable[..., Any], **_how: Any) -> None:
        self.handlers[int(kind)] = fn  # (how the server would run it, e.g. inline, does not matter here)


def _call(loc: LocatorService, kind: Kind, meta: dict[str, Any]) -> dict[str, Any]:
    h = _Handlers()
    loc.register(h)  # type: ignore[arg-type]
    return h.handlers[int(kind)](Frame(int(kind), 1, meta), None).metadata


def test_versioned_pushed_and_persisted(tmp_path: Path) -> None:
    store = Store(background=False)
    svc = StoreService(store, "s1")
    h = _Handlers()
    svc.register(h)  # type: ignore[arg-type]
    loc = LocatorService(Catalog(tmp_path / "catalog.json"))
    try:
        loc.add_member("s1", "127.0.0.1", 1, LocalLink(h.handlers))
        _call(loc, Kind.CREATE_NAMESPACE, {"namespace": ["n2"]})
        spec = {"name": "default.t", "fields": [{"name": "id", "type": "int64"}, {"name": "v", "type": "string"}],
                "primary_key": ["id"], "num_buckets": 2}
        _call(loc, Kind.CREATE_TABLE, {"namespace": ["default"], "name": "t", "table": spec})
        store.table("default.t").insert([(1, "a")])

        r = _call(loc, Kind.ALTER_TABLE, {"namespace": ["default"], "name": "t",
                                          "add_columns": [{"name": "c", "type": "int32"}], "expected_version": 1})
        assert r["table"]["version"] == 2
        assert store.table("default.t").get(1) == (1, "a", None)  # pushed before the reply
        with pytest.raises(ConflictError, match=r"version 2, expected 1"):
            _call(loc, Kind.ALTER_TABLE, {"namespace": ["default"], "name": "t",
                                          "add_columns": [{"name": "d", "type": "int32"}], "expected_version": 1})
        r = _call(loc, Kind.RENAME_TABLE, {"namespace": ["default"], "name": "t", "new_namespace": ["n2"],
                                           "new_name": "u"})
        assert r["table"]["former_names"] == ["default.t"] and r["table"]["version"] == 3
        assert sorted(store.tables) == ["n2.u"] and store.table("n2.u").get(1) == (1, "a", None)
        _call(loc, Kind.CREATE_TABLE, {"namespace": ["default"], "name": "t", "table": spec})
        with pytest.raises(TableExistsError, match=r"cannot rename table 'n2.u' to 'default.t'"):
            _call(loc, Kind.RENAME_TABLE, {"namespace": ["n2"], "name": "u", "new_namespace": ["default"], "new_name": "t"})

        # Every change is in catalog.json: a restarted locator has it.
        again = Catalog(tmp_path / "catalog.json")
        e = again.get(["n2"], "u")
        assert e["version"] == 3 and e["former_names"] == ["default.t"]
        assert [f["name"] for f in e["spec"]["fields"]] == ["id", "v", "c"]
        assert {a["table"]["name"]: a["former_names"] for a in again.assignments("s1")} == {
            "n2.u": ["default.t"], "default.t": []}

        # A server whose table cannot take the change: the error comes back, and its next
        # heartbeat tells it to register again (to catch up from its assignments).
        store.add_columns("n2.u", [("zz", "string")])  # a local layout the catalog never had
        with pytest.raises(SchemaError, match=r"do not extend to the catalog's"):
            _call(loc, Kind.ALTER_TABLE, {"namespace": ["n2"], "name": "u", "add_columns": [{"name": "e", "type": "bool"}]})
        assert _call(loc, Kind.HEARTBEAT, {"server_id": "s1"})["register"] is True
        assert _call(loc, Kind.HEARTBEAT, {"server_id": "s1"})["register"] is False
    finally:
        loc.close()
        svc.close()
        store.close()


def test_storage_options_checked_at_create_and_fixed_after(tmp_path: Path) -> None:
    """``flush``, ``persistence``, ``memory_limit_bytes`` are applied by the servers at
    CREATE: a bad value is refused before the table exists, and ALTER cannot change them."""
    from spark_ext.exceptions import BadArgumentError, SchemaError

    loc = LocatorService(Catalog(tmp_path / "catalog.json"))
    spec = {"name": "default.t", "fields": [{"name": "id", "type": "int64"}], "primary_key": ["id"],
            "num_buckets": 2}
    for opts, msg in (({"flush": "sometimes"}, "option flush must be commit, group or off, got 'sometimes'"),
                      ({"memory_limit_bytes": "lots"}, "option memory_limit_bytes must be a positive integer")):
        with pytest.raises(SchemaError, match=msg):
            loc.catalog.create_table(["default"], "t", {**spec, "options": opts}, ["s1", "s1"])
        assert "default.t" not in loc.catalog.tables
    loc.catalog.create_table(["default"], "t", {**spec, "options": {"flush": "group", "owner": "x"}}, ["s1", "s1"])
    for change in ({"set_options": {"FLUSH": "off"}}, {"remove_options": ["persistence"]},
                   {"set_options": {"memory_limit_bytes": "10"}}):
        with pytest.raises(BadArgumentError, match=r"table 'default.t': option '\w+' is fixed when the table is created"):
            _call(loc, Kind.ALTER_TABLE, {"namespace": ["default"], "name": "t", **change})
    assert loc.catalog.tables["default.t"]["spec"]["options"] == {"flush": "group", "owner": "x"}
    out = _call(loc, Kind.ALTER_TABLE, {"namespace": ["default"], "name": "t", "set_options": {"owner": "y"}})
    assert loc.catalog.tables["default.t"]["spec"]["options"] == {"flush": "group", "owner": "y"}, out
