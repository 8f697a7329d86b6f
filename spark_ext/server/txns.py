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
OPEN, COMMITTED, ABORTED = "open", "committed", "aborted"

#: Outcomes of finished transactions kept in memory (the decider's ledger keeps commits longer).
MAX_DECIDED = 10_000
#: Answers about transactions never held here (the in-doubt resolver's ``aborted`` to a
#: question), kept apart from the decisions so that questions cannot evict those.
MAX_REFUSED = 4_096


def _put_bounded(d: OrderedDict[str, Any], key: str, value: Any, cap: int) -> list[str]:
    """Set ``d[key]`` and drop the oldest entries beyond ``cap``; returns the dropped
    keys. O(1) amortized."""
    d[key] = value
    dropped = []
    while len(d) > cap:
        dropped.append(d.popitem(last=False)[0])
    return dropped


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
        #: Transactions never held here that the in-doubt resolver answered about:
        #: txn id -> (outcome, why). Bounded apart from ``_decided`` (see remember()).
        self._refused: OrderedDict[str, tuple[str, str | None]] = OrderedDict()
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
        if done is None and txn_id in self._refused:
            done = self._refused[txn_id][0]
        return done

    def outcome(self, txn_id: str) -> str | None:
        """How a transaction this server no longer holds ended, or None (unknown, or
        still held: a restart may hold one in doubt that its ledger says to commit). O(1)."""
        with self._lock:
            return None if txn_id in self._txns else self._outcome_locked(txn_id)

    def _why(self, txn_id: str) -> str:
        r = self._reasons.get(txn_id)
        if r is None and txn_id in self._refused:
            r = self._refused[txn_id][1]
        return f" ({r})" if r else ""

    def _finish(self, t: ServerTxn, outcome: str, reason: str | None = None) -> None:
        with self._lock:
            self._txns.pop(t.txn_id, None)
            self._fences.pop(t.txn_id, None)
            self._decide_locked(t.txn_id, outcome, reason)

    def _decide_locked(self, txn_id: str, outcome: str, reason: str | None = None) -> None:
        """Remember how ``txn_id`` ended (caller holds ``_lock``); the newest
        ``MAX_DECIDED`` are kept. O(1) amortized."""
        self._refused.pop(txn_id, None)
        if reason:
            self._reasons[txn_id] = reason
        for old in _put_bounded(self._decided, txn_id, outcome, MAX_DECIDED):
            self._reasons.pop(old, None)

    def remember(self, txn_id: str, outcome: str, reason: str | None = None) -> None:
        """Record the outcome of a transaction this server never held (the in-doubt
        resolver's refusal of a transaction it was asked about but never prepared), so
        a late PREPARE or COMMIT of it is refused. O(1) amortized.

        Kept in a map of its own, the newest ``MAX_REFUSED``: anyone may ask about any
        id, and those answers must not push the real decisions (aborts that keep a late
        TXN_STAGE from beginning a transaction anew) out of ``_decided``. A transaction
        with a known outcome is left as it is.
        """
        with self._lock:
            if txn_id not in self._txns and self._outcome_locked(txn_id) is None:
                _put_bounded(self._refused, txn_id, (outcome, reason), MAX_REFUSED)

    def remembered_count(self) -> int:
        """How many finished or refused transactions are remembered in memory (bounded
        by ``MAX_DECIDED + MAX_REFUSED``). O(1)."""
        with self._lock:
            return len(self._decided) + len(self._refused)

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
            if t.cs.state == "committed":  # (applied, but its wait for durability failed)
                self._finish(t, COMMITTED)
                return "committed"
            if not t.final:
                self._finalize(t, parts)
            if t.participants is not None and self.decision_hook is not None:
                # The decider's decision is durable first. If applying it fails below,
                # the transaction stays here, decided: abort() then refuses to undo it.
                self.decision_hook(t, "committed", None)
            t.cs.commit()
            self._finish(t, "committed")
            return "committed"

    def abort(self, txn_id: str, reason: str | None = None, *, only_if_open: bool = False) -> str:
        """Abort a transaction; answers ``committed`` instead for a committed one (which
        is left alone: an abort can no longer undo it). Idempotent.

        Args:
            txn_id: the transaction.
            reason: why, given to later refusals of it (``... is already aborted (why)``).
            only_if_open: abort only a transaction not durably prepared (checked under
                its lock); a prepared one is left as it is and its state answered. For
                the server's own aborts (idle timeout, deposed leader): a prepared
                transaction is decided by its coordinator or the in-doubt resolver.

        Raises:
            TransactionStateError: this server is the transaction's decider and its
                ledger holds the commit, which could not be applied here (yet): the
                transaction is committed and is not aborted (``state: committed``).
        """
        with self._lock:
            t = self._txns.get(txn_id)
            if t is None:
                done = self._outcome_locked(txn_id)
                if done is None:
                    # Not begun here yet: a task of the aborted statement may still be
                    # running (Spark aborts a failed job while its other tasks wind
                    # down), and its late TXN_STAGE must not begin the transaction anew
                    # and leave it open, holding key locks, until the idle timeout.
                    self._fences.pop(txn_id, None)
                    self._decide_locked(txn_id, ABORTED, reason)
                return done or ABORTED
        return self._abort(t, reason, only_if_open)[0]

    def _abort(self, t: ServerTxn, reason: str | None, only_if_open: bool,
               stale_before: float | None = None) -> tuple[str, bool]:
        """Abort ``t`` under its lock: ``(state afterwards, whether this call aborted it)``.

        The conditions are checked under the lock, where they cannot change: a caller
        that looked at ``t`` without it (the reaper, a newer fencing token) may have
        seen it open while a PREPARE was running, which then answered ``prepared``.
        ``stale_before``: abort only if no request came since that clock time.
        """
        with t.lock:
            state = t.cs.state
            if state in (COMMITTED, ABORTED):
                self._finish(t, state)
                return state, False
            if only_if_open and state != OPEN:
                return state, False
            if stale_before is not None and t.last_seen >= stale_before:
                return state, False
            if self.outcome_lookup is not None and self.outcome_lookup(t.txn_id) == COMMITTED:
                return self._apply_recorded_commit(t), False
            if t.participants is not None and state == "prepared" and self.decision_hook is not None:
                self.decision_hook(t, ABORTED, reason)
            t.cs.abort()
            self._finish(t, ABORTED, reason)
            return ABORTED, True

    def _apply_recorded_commit(self, t: ServerTxn) -> str:
        """An abort reached a transaction whose commit this server, its decider, has
        recorded in its ledger, but whose commit failed to apply (caller holds ``t.lock``).

        The ledger entry is the transaction's outcome from the moment it is written:
        participants in doubt are answered ``committed`` from it once this server no
        longer holds the transaction, and the failed commit may have reached the log
        (a restart would replay it). So the abort is refused and the commit applied
        once more; see docs/in-doubt.md, "Why it is safe", 2.

        Raises:
            TransactionStateError: the commit fails again (``state: committed``).
        """
        try:
            t.cs.commit()
        except Exception as e:
            raise TransactionStateError(
                f"transaction {t.txn_id} is already decided: committed (this server decides it and recorded the "
                f"commit), so it cannot abort; applying the commit here failed ({type(e).__name__}: {e}) and is "
                "retried by the in-doubt resolver", txn=t.txn_id, state=COMMITTED) from e
        self._finish(t, COMMITTED)
        logger.warning("transaction %s: an abort was asked after its recorded commit failed to apply; "
                       "the commit is applied now", t.txn_id)
        return COMMITTED

    # --- fencing ------------------------------------------------------------------------

    def note_fence(self, txn_id: Any, group: str, token: int) -> None:
        """Remember which leader (group, token) writes ``txn_id``. O(1)."""
        if isinstance(txn_id, str) and txn_id:
            with self._lock:
                if txn_id not in self._decided and txn_id not in self._refused:
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
        reason = f"a newer leader of group {group} took over (token {token})"
        with self._lock:
            old = [x for x, (g, tk) in self._fences.items() if g == group and tk < token]
            found = [(x, self._txns.get(x)) for x in old]
        aborted = []
        for txn_id, t in found:
            if t is None:
                with self._lock:
                    t = self._txns.get(txn_id)
                    if t is None:  # noted, not begun yet: it can never begin now
                        self._fences.pop(txn_id, None)
                        if self._outcome_locked(txn_id) is None:
                            self._decide_locked(txn_id, ABORTED, reason)
                        continue
            # Open is checked again under the transaction's lock: the old leader's
            # PREPARE passed its fence check before this token was known and may be
            # running now; once it answered ``prepared``, the old leader's phase 2 is
            # still accepted (protocol section 15), so aborting here would split it.
            if self._abort(t, reason, only_if_open=True)[1]:
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
        """Abort transactions idle past the timeout (not the durably prepared ones: a
        PREPARE may finish between this look and the abort, which checks again under
        the transaction's lock). O(transactions)."""
        cutoff = self.clock() - self.timeout_s
        reason = f"no request for over {self.timeout_s:.0f}s (transaction timeout)"
        with self._lock:
            stale = [t for t in self._txns.values() if t.last_seen < cutoff and t.cs.state == OPEN]
        for t in stale:
            if self._abort(t, reason, only_if_open=True, stale_before=cutoff)[1]:
                logger.warning("aborted transaction %s: %s", t.txn_id, reason)
