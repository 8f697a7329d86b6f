"""The JVM bridge reports the error that poisoned a transaction, not TXN_STATE."""

from __future__ import annotations

import json

from spark_ext.exceptions import DuplicateKeyError, TransactionStateError
from spark_ext.wire.errors import WireError
from tests.jvm.conftest import run_java


def test_poisoned_transaction_reports_the_original_error(java_cp: str) -> None:
    first = DuplicateKeyError("table 'ns.t': key (id=1) already exists", table="ns.t", value="1")
    with_details = TransactionStateError(
        f"transaction tx failed earlier: DuplicateKeyError: {first.message}", txn="tx",
        cause_code="DUPLICATE_KEY", cause_message=first.message, cause_details=first.details)
    message_only = TransactionStateError(f"transaction tx failed earlier: DuplicateKeyError: {first.message}", txn="tx")
    plain = TransactionStateError("transaction tx is being committed", txn="tx")
    metas = [json.dumps(WireError.from_exception(e).to_metadata()) for e in (with_details, message_only, plain)]
    r = run_java(java_cp, "io.sparkext.spark.ErrorsCheck", *metas)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("MAPPED ")]
    want = "MAPPED [spark-ext DUPLICATE_KEY] table 'ns.t': key (id=1) already exists (found by an earlier attempt of this statement)"
    assert lines == [want, want, "MAPPED [spark-ext TXN_STATE] transaction tx is being committed"], r.stdout
