"""A poisoned transaction's later refusals carry the error that poisoned it."""

from __future__ import annotations

import pytest

from spark_ext.exceptions import DuplicateKeyError, TransactionStateError
from spark_ext.server.store_service import StoreService
from spark_ext.server.txns import TxnManager
from spark_ext.store import Store
from spark_ext.wire.errors import WireError


def test_later_calls_carry_the_original_error() -> None:
    store = Store(background=False)
    try:
        store.create_table("ns.t", [("id", "int64"), ("v", "string")], "id", 2).insert([(1, "a")])
        mgr = TxnManager(store)
        mgr.stage("tx", "p1", ("insert", "ns.t", ([(2, "b"), (1, "dup")],)), 2)
        with pytest.raises(DuplicateKeyError) as first:
            mgr.prepare_part("tx", "p1", StoreService._apply)
        for call in (lambda: mgr.prepare_part("tx", "p2", StoreService._apply),
                     lambda: mgr.commit("tx", None), lambda: mgr.prepare_all("tx", ["p1"])):
            with pytest.raises(TransactionStateError, match="DuplicateKeyError") as later:
                call()
            d = later.value.details
            assert d["txn"] == "tx" and d["cause_code"] == "DUPLICATE_KEY"
            assert d["cause_message"] == first.value.message
            assert d["cause_details"] == first.value.details and d["cause_details"]["table"] == "ns.t"
            # and so on the wire (what a client or the JVM bridge receives)
            meta = WireError.from_exception(later.value).to_metadata()
            assert meta["name"] == "TXN_STATE" and meta["details"]["cause_code"] == "DUPLICATE_KEY"
        assert mgr.abort("tx") == "aborted"
        assert store.table("ns.t").get(2) is None  # nothing of the poisoned transaction
    finally:
        store.close()
