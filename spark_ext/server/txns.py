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

A job-form PREPARE may name the transaction's ``participants`` (server ids, the first
is the *decider*). Such a transaction, once prepared, is resolved without its
coordinator if it dies or is deposed: see :mod:`spark_ext.server.indoubt`, which hooks
in here through ``decision_hook`` and ``outcome_lookup``.
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
    #: Server ids of every participant, the decider first (job-form PREPARE); None: the
    #: coordinator sent none, nobody can resolve it but the coordinator (or an operator).
    participants: list[str] | None = None
    #: Restored in doubt from the log by a restart (its coordinator lost contact).
    recovered: bool = False


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
        clock: monotonic seconds, for ``last_seen`` and the idle timeouts (the in-doubt
            resolver reads it too); tests pass one they advance themselves.
    """

    def __init__(self, store: Store, timeout_s: float = 600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.timeout_s = timeout_s
        self.clock = clock
        self._txns: dict[str, ServerTxn] = {}
        self._decided: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()
        self._fences: dict[str, tuple[str, int]] = {}  # txn id -> (group, token) of its writer
        self._reasons: dict[str, str] = {}  # txn id -> why it was aborted, for resolver aborts
        #: Called as (txn, outcome, reason) under the transaction's lock just before a
        #: transaction with participants commits or aborts here; may raise to refuse
        #: (the in-doubt resolver records the decider's decision durably with it).
        self.decision_hook: Callable[[ServerTxn, str, str | None], None] | None = None
        #: Durable outcome of a finished transaction this server no longer holds, or
        #: None (the in-doubt resolver's decision ledger).
        self.outcome_lookup: Callable[[str], str | None] | None = None
        for txn_id in store.in_doubt():
            cs = store.transaction(txn_id)
            t = ServerTxn(txn_id, cs, final=True, recovered=True, last_seen=clock())
            meta = cs.meta or {}
            if isinstance(meta.get("participants"), list):
                t.participants = [str(p) for p in meta["participants"]]
            fence = meta.get("fence")
            if isinstance(fence, list) and len(fence) == 2:
                self._fences[txn_id] = (str(fence[0]), int(fence[1]))
            self._txns[txn_id] = t

    # --- lookup -------------------------------------------------------------------------

    def _get(self, txn_id: str, create: bool = False) -> ServerTxn:
        if not isinstance(txn_id, str) or not txn_id or len(txn_id) > 200:
            raise BadArgumentError(f"bad transaction id {txn_id!r}")
        with self._lock:
            t = self._txns.get(txn_id)
            if t is None:
                done = self._outcome_locked(txn_id)
                if done is not None:
                    raise TransactionStateError(f"transaction {txn_id} is already {done}{self._why(txn_id)}",
                                                txn=txn_id, state=done)
                if not create:
                    raise NoSuchTransactionError(f"no transaction {txn_id!r} on this server", txn=txn_id)
                # The change set carries the protocol id: its PREPARE log record is
                # found by that id after a restart (in doubt), so it can be decided.
                t = self._txns[txn_id] = ServerTxn(txn_id, self.store.begin(txn_id))
            t.last_seen = self.clock()
            return t

    def _outcome_locked(self, txn_id: str) -> str | None:
        """``committed`` / ``aborted`` for a finished transaction, else None (caller holds
        ``_lock``). The in-memory record is bounded; the ledger keeps decided ones longer."""
        done = self._decided.get(txn_id)
        if done is None and self.outcome_lookup is not None:
            done = self.outcome_lookup(txn_id)
        return done

    def outcome(self, txn_id: str) -> str | None:
        """How a transaction this server no longer holds ended, or None (unknown, or
        still held: a restart may hold one in doubt that its ledger says to commit). O(1)."""
        with self._lock:
            return None if txn_id in self._txns else self._outcome_locked(txn_id)

    def _why(self, txn_id: str) -> str:
        r = self._reasons.get(txn_id)
        return f" ({r})" if r else ""

    def _finish(self, t: ServerTxn, outcome: str, reason: str | None = None) -> None:
        with self._lock:
            self._txns.pop(t.txn_id, None)
            self._fences.pop(t.txn_id, None)
            self._decide_locked(t.txn_id, outcome, reason)

    def _decide_locked(self, txn_id: str, outcome: str, reason: str | None = None) -> None:
        """Remember how ``txn_id`` ended (caller holds ``_lock``); the newest 10,000 are
        kept. O(1) amortized."""
        self._decided[txn_id] = outcome
        if reason:
            self._reasons[txn_id] = reason
        while len(self._decided) > 10000:
            old, _ = self._decided.popitem(last=False)
            self._reasons.pop(old, None)

    def remember(self, txn_id: str, outcome: str, reason: str | None = None) -> None:
        """Record the outcome of a transaction this server never held (the in-doubt
        resolver's refusal of a transaction it was asked about but never prepared), so
        a late PREPARE or COMMIT of it is refused. O(1)."""
        with self._lock:
            if txn_id not in self._txns:
                self._decided[txn_id] = outcome
                if reason:
                    self._reasons[txn_id] = reason

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

    def prepare_all(self, txn_id: str, parts: Sequence[str] | None, participants: Sequence[str] | None = None) -> str:
        """Job commit phase 1: keep ``parts`` and log the transaction durably.

        ``participants``: every server of the transaction, the decider first; logged with
        it (and its writer's fence) so that it can be resolved after a restart too.
        """
        t = self._get(txn_id, create=True)
        with t.lock:
            if t.cs.state == "prepared":
                return "prepared"
            self._finalize(t, parts)
            if participants:
                t.participants = list(participants)
                with self._lock:
                    fence = self._fences.get(txn_id)
                t.cs.meta = {"participants": t.participants, "fence": list(fence) if fence else None}
            t.cs.prepare()
            return t.cs.state

    def commit(self, txn_id: str, parts: Sequence[str] | None) -> str:
        """Job commit phase 2 (or both phases at once). Idempotent once committed."""
        if self.outcome(txn_id) == "committed":
            return "committed"
        t = self._get(txn_id)
        with t.lock:
            if t.cs.state == "aborted":  # the in-doubt resolver got there first
                raise TransactionStateError(f"transaction {txn_id} was aborted{self._why(txn_id)}; it cannot commit",
                                            txn=txn_id, state="aborted")
            if t.cs.state == "committed":
                return "committed"
            if not t.final:
                self._finalize(t, parts)
            if t.participants is not None and self.decision_hook is not None:
                self.decision_hook(t, "committed", None)  # the decider's decision is durable first
            t.cs.commit()
            self._finish(t, "committed")
            return "committed"

    def abort(self, txn_id: str, reason: str | None = None) -> str:
        """Abort a transaction; answers ``committed`` instead for a committed one (which
        is left alone: an abort can no longer undo it). Idempotent."""
        with self._lock:
            t = self._txns.get(txn_id)
            if t is None:
                done = self._outcome_locked(txn_id)
                if done is None:
                    # Not begun here yet: a task of the aborted statement may still be
                    # running (Spark aborts a failed job while its other tasks wind
                    # down), and its late TXN_STAGE must not begin the transaction anew
                    # and leave it open, holding key locks, until the idle timeout.
                    self._decide_locked(txn_id, "aborted")
                return done or "aborted"
        with t.lock:
            if t.cs.state in ("committed", "aborted"):
                return t.cs.state
            if t.participants is not None and t.cs.state == "prepared" and self.decision_hook is not None:
                self.decision_hook(t, "aborted", reason)
            t.cs.abort()
            self._finish(t, "aborted", reason)
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
        until the idle timeout. Durably prepared ones are left to the in-doubt resolver
        (spark_ext/server/indoubt.py: their decider decides), or without participants
        kept: the old leader may have decided to commit them (phase 2 is still
        accepted). O(transactions).
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
        """A transaction's state here (``unknown`` if never seen or long forgotten). O(1)."""
        with self._lock:
            t = self._txns.get(txn_id)
            if t is None:
                return {"state": self._outcome_locked(txn_id) or "unknown", "parts": {}}
            return {"state": t.cs.state, "parts": dict(t.part_state), "poisoned": t.poisoned}

    def fence_of(self, txn_id: str) -> tuple[str, int] | None:
        """(group, token) of the leader that wrote ``txn_id``, or None (unfenced). O(1)."""
        with self._lock:
            return self._fences.get(txn_id)

    def prepared(self) -> list[ServerTxn]:
        """Every durably prepared transaction (waiting for phase 2, or in doubt). O(txns)."""
        with self._lock:
            return [t for t in self._txns.values() if t.cs.state == "prepared"]

    def in_doubt_report(self, server_id: str) -> list[dict[str, Any]]:
        """Operator view of the prepared transactions here: id, participants, decider,
        this server's role, seconds since its coordinator's last request, whether a
        restart recovered it, its writer's fence. O(txns)."""
        now = self.clock()
        out = []
        for t in sorted(self.prepared(), key=lambda x: x.last_seen):
            ps = t.participants
            fence = self.fence_of(t.txn_id)
            out.append({
                "txn": t.txn_id, "participants": ps, "decider": ps[0] if ps else None,
                "role": ("decider" if ps[0] == server_id else "participant") if ps else "unresolvable",
                "idle_s": round(now - t.last_seen, 1), "recovered": t.recovered,
                "fence": {"group": fence[0], "token": fence[1]} if fence else None,
            })
        return out

    def open_count(self) -> int:
        return len(self._txns)

    def reap(self) -> None:
        """Abort transactions idle past the timeout (not the durably prepared ones)."""
        now = self.clock()
        with self._lock:
            stale = [t for t in self._txns.values() if now - t.last_seen > self.timeout_s and t.cs.state == "open"]
        for t in stale:
            logger.warning("aborting transaction %s: idle for over %.0fs", t.txn_id, self.timeout_s)
            self.abort(t.txn_id)
