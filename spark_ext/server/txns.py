"""Statement transactions on one store server, in parts (one per Spark task attempt).

Life cycle (``docs/protocol.md``, "Transactions")::

    TXN_STAGE   {txn, part}      buffer a change of one writer; nothing is checked
                                 against data yet, nothing is visible
    TXN_PREPARE {txn, part}      task commit: apply the part's changes to the
                                 transaction (types, keys, duplicates, key locks); after
                                 success the part cannot fail at commit
    TXN_ABORT   {txn, part}      task abort: drop an unprepared part (a failed attempt)
    TXN_PREPARE {txn, parts}     job commit, phase 1: keep exactly these parts, log the
                                 transaction durably (it survives a crash, in doubt)
    TXN_COMMIT  {txn, parts?}    job commit, phase 2: make everything visible at once
    TXN_ABORT   {txn}            job abort: discard everything, release the locks

A prepared part that is not in the final ``parts`` cannot be taken out again: the
transaction is then refused (TXN_STATE) and must be aborted, never half-applied.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from spark_ext.exceptions import BadArgumentError, NoSuchTransactionError, SparkExtError, TransactionStateError
from spark_ext.store import ChangeSet, Store

logger = logging.getLogger(__name__)

#: One buffered change: (kind, table name, arguments for ChangeSet).
Change = tuple[str, str, tuple[Any, ...]]

STAGING, PREPARED = "staging", "prepared"


@dataclass
class ServerTxn:
    """A transaction's state on this server."""

    txn_id: str
    cs: ChangeSet
    parts: dict[str, list[Change]] = field(default_factory=dict)
    part_state: dict[str, str] = field(default_factory=dict)
    poisoned: str | None = None
    #: The error that poisoned it ({code, message, details}), carried by later refusals.
    poison_cause: dict[str, Any] | None = None
    final: bool = False
    last_seen: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _poisoned_error(t: ServerTxn, message: str) -> TransactionStateError:
    """TXN_STATE for a poisoned transaction; the details carry the error that poisoned it
    (``cause_code``, ``cause_message``, ``cause_details``) so a retried task or the
    driver can report the original violation (e.g. DUPLICATE_KEY naming the key)."""
    c = t.poison_cause or {}
    return TransactionStateError(message, txn=t.txn_id, cause_code=c.get("code"), cause_message=c.get("message"),
                                 cause_details=c.get("details") or None)


class TxnManager:
    """All transactions of one server. Thread-safe.

    Args:
        store: the engine.
        timeout_s: a transaction with no request for this long is aborted (a dead Spark
            job must not keep its key locks forever). In-doubt ones are kept.
    """

    def __init__(self, store: Store, timeout_s: float = 600.0) -> None:
        self.store = store
        self.timeout_s = timeout_s
        self._txns: dict[str, ServerTxn] = {}
        self._decided: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()
        self._fences: dict[str, tuple[str, int]] = {}  # txn id -> (group, token) of its writer
        for txn_id in store.in_doubt():
            t = ServerTxn(txn_id, store.transaction(txn_id), final=True)
            self._txns[txn_id] = t

    # --- lookup -------------------------------------------------------------------------

    def _get(self, txn_id: str, create: bool = False) -> ServerTxn:
        if not isinstance(txn_id, str) or not txn_id or len(txn_id) > 200:
            raise BadArgumentError(f"bad transaction id {txn_id!r}")
        with self._lock:
            t = self._txns.get(txn_id)
            if t is None:
                if txn_id in self._decided:
                    raise TransactionStateError(f"transaction {txn_id} is already {self._decided[txn_id]}", txn=txn_id)
                if not create:
                    raise NoSuchTransactionError(f"no transaction {txn_id!r} on this server", txn=txn_id)
                # The change set carries the protocol id: its PREPARE log record is
                # found by that id after a restart (in doubt), so it can be decided.
                t = self._txns[txn_id] = ServerTxn(txn_id, self.store.begin(txn_id))
            t.last_seen = time.monotonic()
            return t

    def _finish(self, t: ServerTxn, outcome: str) -> None:
        with self._lock:
            self._txns.pop(t.txn_id, None)
            self._fences.pop(t.txn_id, None)
            self._decided[t.txn_id] = outcome
            while len(self._decided) > 10000:
                self._decided.popitem(last=False)

    # --- steps --------------------------------------------------------------------------

    def stage(self, txn_id: str, part: str, change: Change, rows: int,
              log: Callable[[ChangeSet], None] | None = None) -> int:
        """Buffer one change of ``part``. O(1) (the rows were decoded by the caller).

        ``log``: called with the transaction's change set once the change is accepted,
        before it is buffered (the bulk write path logs the rows there, see
        ``StoreService.txn_stage``); an error in it buffers nothing.
        """
        t = self._get(txn_id, create=True)
        with t.lock:
            if t.final:
                raise TransactionStateError(f"transaction {txn_id} is being committed; no more changes", txn=txn_id)
            if t.part_state.get(part) == PREPARED:
                raise TransactionStateError(f"part {part!r} of transaction {txn_id} is already prepared", txn=txn_id)
            if log is not None:
                log(t.cs)
            t.parts.setdefault(part, []).append(change)
            t.part_state[part] = STAGING
        return rows

    def prepare_part(self, txn_id: str, part: str, apply: Callable[[ChangeSet, Change], int]) -> int:
        """Check and lock a part's changes; returns how many rows they touched."""
        t = self._get(txn_id, create=True)  # a writer that staged nothing here prepares empty
        with t.lock:
            if t.poisoned:
                raise _poisoned_error(t, f"transaction {txn_id} failed earlier: {t.poisoned}")
            if t.part_state.get(part) == PREPARED:
                return 0
            if t.final:
                raise TransactionStateError(f"transaction {txn_id} is being committed", txn=txn_id)
            n = 0
            try:
                for ch in t.parts.get(part, []):
                    n += apply(t.cs, ch)
            except SparkExtError as e:
                # Earlier changes of this part are in the change set and cannot be taken
                # out one by one: the whole transaction can only be aborted now.
                t.poisoned = f"{type(e).__name__}: {e}"
                t.poison_cause = {"code": e.code, "message": e.message, "details": dict(e.details)}
                raise
            t.parts[part] = []
            t.part_state[part] = PREPARED
            return n

    def abort_part(self, txn_id: str, part: str) -> str:
        """Drop an unprepared part (a failed task attempt)."""
        try:
            t = self._get(txn_id)
        except (NoSuchTransactionError, TransactionStateError):
            return "unknown"
        with t.lock:
            if t.part_state.get(part) == PREPARED:
                t.poisoned = f"prepared part {part!r} was aborted"
                return "poisoned"
            t.parts.pop(part, None)
            t.part_state.pop(part, None)
            return "aborted"

    def _finalize(self, t: ServerTxn, parts: Sequence[str] | None) -> None:
        if t.poisoned:
            raise _poisoned_error(t, f"transaction {t.txn_id} cannot commit: {t.poisoned}")
        prepared = {p for p, s in t.part_state.items() if s == PREPARED}
        if parts is not None:
            wanted = set(parts)
            extra = prepared - wanted
            if extra:
                t.poisoned = f"prepared part(s) {sorted(extra)} are not in the commit"
                raise TransactionStateError(f"transaction {t.txn_id}: {t.poisoned}", txn=t.txn_id)
            missing = wanted - prepared
            if missing:
                raise TransactionStateError(
                    f"transaction {t.txn_id}: part(s) {sorted(missing)} were never prepared here", txn=t.txn_id)
        # Unprepared parts belong to task attempts that did not commit: drop them.
        t.parts.clear()
        t.final = True

    def prepare_all(self, txn_id: str, parts: Sequence[str] | None) -> str:
        """Job commit phase 1: keep ``parts`` and log the transaction durably."""
        t = self._get(txn_id, create=True)
        with t.lock:
            if t.cs.state == "prepared":
                return "prepared"
            self._finalize(t, parts)
            t.cs.prepare()
            return t.cs.state

    def commit(self, txn_id: str, parts: Sequence[str] | None) -> str:
        """Job commit phase 2 (or both phases at once). Idempotent once committed."""
        with self._lock:
            if self._decided.get(txn_id) == "committed":
                return "committed"
        t = self._get(txn_id)
        with t.lock:
            if not t.final:
                self._finalize(t, parts)
            t.cs.commit()
            self._finish(t, "committed")
            return "committed"

    def abort(self, txn_id: str) -> str:
        with self._lock:
            t = self._txns.get(txn_id)
            if t is None:
                return self._decided.get(txn_id, "aborted")
        with t.lock:
            if t.cs.state == "committed":
                return "committed"
            t.cs.abort()
            self._finish(t, "aborted")
            return "aborted"

    # --- fencing ------------------------------------------------------------------------

    def note_fence(self, txn_id: Any, group: str, token: int) -> None:
        """Remember which leader (group, token) writes ``txn_id``. O(1)."""
        if isinstance(txn_id, str) and txn_id:
            with self._lock:
                if txn_id not in self._decided:
                    self._fences[txn_id] = (group, token)

    def abort_fenced(self, group: str, token: int) -> list[str]:
        """Abort the unfinished transactions of ``group``'s leaders older than ``token``.

        A new leader took over: the old one can no longer stage, prepare or commit (its
        token is refused), so its open transactions would only hold their key locks
        until the idle timeout. Durably prepared ones are kept: the old leader may have
        decided to commit them (phase 2 is still accepted). O(transactions).
        """
        with self._lock:
            old = [x for x, (g, tk) in self._fences.items() if g == group and tk < token]
            found = [(x, self._txns.get(x)) for x in old]
        aborted = []
        for txn_id, t in found:
            if t is None:  # noted, not begun yet: it can never begin now
                with self._lock:
                    self._fences.pop(txn_id, None)
                    self._decided.setdefault(txn_id, "aborted")
                continue
            if t.cs.state == "open":
                self.abort(txn_id)
                aborted.append(txn_id)
        if aborted:
            logger.warning("aborted %d unfinished transaction(s) of group %s's former leader (new token %d): %s",
                           len(aborted), group, token, ", ".join(aborted))
        return aborted

    def status(self, txn_id: str) -> dict[str, Any]:
        with self._lock:
            t = self._txns.get(txn_id)
            if t is None:
                return {"state": self._decided.get(txn_id, "unknown"), "parts": {}}
            return {"state": t.cs.state, "parts": dict(t.part_state), "poisoned": t.poisoned}

    def open_count(self) -> int:
        return len(self._txns)

    def reap(self) -> None:
        """Abort transactions idle past the timeout (not the durably prepared ones)."""
        now = time.monotonic()
        with self._lock:
            stale = [t for t in self._txns.values() if now - t.last_seen > self.timeout_s and t.cs.state == "open"]
        for t in stale:
            logger.warning("aborting transaction %s: idle for over %.0fs", t.txn_id, self.timeout_s)
            self.abort(t.txn_id)
