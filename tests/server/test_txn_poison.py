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


def test_abort_before_the_first_stage_refuses_a_late_stage() -> None:
    """Spark aborts a failed job while its other tasks wind down: a task's TXN_STAGE that
    reaches a server after the statement's abort must not begin the transaction anew
    (it would stay open, holding its key locks, until the idle timeout)."""
    store = Store(background=False)
    try:
        store.create_table("ns.t", [("id", "int64"), ("v", "string")], "id", 2).insert([(1, "a")])
        mgr = TxnManager(store)
        assert mgr.abort("late") == "aborted"
        with pytest.raises(TransactionStateError, match="transaction late is already aborted"):
            mgr.stage("late", "p1", ("insert", "ns.t", ([(2, "b")],)), 1)
        assert mgr.open_count() == 0 and mgr.outcome("late") == "aborted"
        # An abort of a transaction that did begin here is answered the same way, once
        # more: idempotent.
        mgr.stage("tx", "p1", ("insert", "ns.t", ([(3, "c")],)), 1)
        assert mgr.abort("tx") == "aborted" and mgr.abort("tx") == "aborted"
        assert mgr.open_count() == 0 and store.table("ns.t").get(3) is None
    finally:
        store.close()
