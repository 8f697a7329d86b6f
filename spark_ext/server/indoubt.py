"""Resolution of prepared transactions whose coordinator died or was deposed.

Protocol (the design and its argument are in ``docs/in-doubt.md``; the fields in
``docs/protocol.md``): the coordinator of a transaction over several servers names
them in the job-form TXN_PREPARE as ``participants``, the first one being the
*decider*. It prepares the decider first and, in phase 2, commits the decider first
and the others only after the decider answered. So:

* the decider's outcome IS the transaction's outcome. The decider writes a commit to
  its :class:`DecisionLedger` before applying it (its log's COMMIT record, fsynced with
  the commit, backs it up until the ledger is fsynced, which happens before a
  checkpoint trims that record), and the ledger outlives the log records, so a commit
  is not forgotten by a restart or a checkpoint; abort is presumed (a decider that does
  not know the transaction answers ``aborted``). A commit in the ledger is never
  aborted: if applying it failed, an abort applies it again instead (or is refused,
  ``already decided: committed``) and the resolver retries it;
* a participant other than the decider never decides: when in doubt it asks the
  decider (TXN_STATUS ``{txn, resolve: true}``) and follows its answer —
  ``committed`` -> commit, ``aborted`` or ``unknown`` -> abort, ``prepared`` -> ask
  again later (:func:`participant_verdict`);
* the decider aborts a prepared transaction only when no coordinator can still
  commit it legitimately: its writer's fencing token is older than one the decider
  knows (a new leader took over), or the coordinator has not been heard of for the
  in-doubt timeout (presumed abort, for coordinators without leases)
  (:func:`decider_verdict`). A coordinator's COMMIT and the decider's abort are
  serialized on the transaction: whichever comes first wins, and the other is refused
  with a clear error;
* a decider asked about a transaction it never prepared (``unknown``) or holds only
  open answers ``aborted`` and remembers it, so a late PREPARE or COMMIT fails (in a
  bounded map of its own: questions cannot evict real outcomes). A question's
  ``fences`` are checked whole (at most :data:`MAX_FENCES`) and only the token of the
  transaction's writer group is recorded.

Triggers: a newer fencing token (:meth:`InDoubtResolver.wake`, from the fence
registry), a restart that restored prepared transactions from the log, and a poll
that asks about every prepared transaction whose coordinator has been silent for a
while. Transactions prepared without participants (older coordinators) are left as
they were and listed to the operator (``spark-ext txns``).

The module never imports Spark; it talks to peers with the wire client.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from collections import OrderedDict
from typing import Any, Callable

from spark_ext.client.connection import ConnectionPool
from spark_ext.exceptions import BadArgumentError
from spark_ext.store.files import fsync_dir
from spark_ext.server.fencing import FenceRegistry
from spark_ext.server.txns import ServerTxn, TxnManager
from spark_ext.wire.kinds import Kind

logger = logging.getLogger(__name__)

COMMIT, ABORT = "committed", "aborted"

#: Finds a peer server's current (host, port) by its id, or None (unknown or down).
PeerLookup = Callable[[str], "tuple[str, int] | None"]

#: Most entries a participant's question (TXN_STATUS ``fences``) may carry. An asker
#: sends one, its newest token of the transaction's writer group; each entry could
#: cost the decider a write of its fence file, so a question with more is refused.
MAX_FENCES = 64


# --- the decision rules (pure: unit-tested on their own) ----------------------------------


def decider_verdict(*, recorded: str | None, fenced: bool, idle_s: float, timeout_s: float) -> tuple[str | None, str]:
    """What the decider does with a transaction prepared here: ``(outcome or None, why)``.

    Args:
        recorded: the outcome in the decider's ledger, if any (a decision taken before a
            restart, applied again).
        fenced: the transaction's writer holds a token older than the newest known
            here: it can no longer commit (its COMMIT would be refused... unless it
            arrives first, which the transaction's lock serializes).
        idle_s: seconds since the coordinator's last request about it.
        timeout_s: the in-doubt timeout (presumed abort).
    """
    if recorded in (COMMIT, ABORT):
        return recorded, "decided before a restart"
    if fenced:
        return ABORT, "its coordinator was deposed (a newer fencing token is known)"
    if idle_s >= timeout_s:
        return ABORT, f"no word from its coordinator for {idle_s:.0f}s (in-doubt timeout {timeout_s:g}s)"
    return None, "waiting for its coordinator"


def participant_verdict(decider_state: str) -> str | None:
    """What a participant other than the decider does, given the decider's answer.

    ``committed`` -> commit. ``aborted`` -> abort. ``unknown`` -> abort: the decider
    records a commit in its ledger before applying it, so it cannot have committed and
    forgotten it; and having answered, it refuses a late PREPARE or COMMIT.
    ``prepared`` / ``open`` -> undecided: ask again later.
    """
    if decider_state == COMMIT:
        return COMMIT
    if decider_state in (ABORT, "unknown"):
        return ABORT
    return None


def checked_fences(fences: Any) -> dict[str, int]:
    """The ``fences`` of a participant's question, validated whole before any is used
    (a refused question changes nothing). O(len(fences)).

    Raises:
        BadArgumentError: not an object of at most ``MAX_FENCES`` entries, each a leader
            group (a non-empty string of at most 200 characters) and a token (an
            integer, 0 <= token < 2**63).
    """
    if fences is None:
        return {}
    if not isinstance(fences, dict):
        raise BadArgumentError(f"request field 'fences' must be an object {{group: token}}, "
                               f"got {type(fences).__name__}")
    if len(fences) > MAX_FENCES:
        raise BadArgumentError(f"request field 'fences' has {len(fences)} entries; at most {MAX_FENCES} are accepted")
    for group, token in fences.items():
        if not isinstance(group, str) or not group or len(group) > 200:
            raise BadArgumentError(f"request field 'fences': leader group {group!r:.80} must be a non-empty string "
                                   "of at most 200 characters")
        if not isinstance(token, int) or isinstance(token, bool) or not 0 <= token < 2 ** 63:
            raise BadArgumentError(f"request field 'fences': the token of group {group!r} must be an integer in "
                                   f"[0, 2**63), got {token!r:.80}")
    return fences


# --- the decider's durable record ----------------------------------------------------------


def _datasync(fd: int) -> None:
    """Make appended data durable (its size too); fdatasync skips the timestamps."""
    getattr(os, "fdatasync", os.fsync)(fd)


class DecisionLedger:
    """The commits decided by this server as a transaction's decider. Thread-safe.

    Only commits are recorded: abort is the presumed outcome (a decider that does not
    know a transaction answers ``aborted``), so an abort needs no record. An append-only
    JSON-lines file (``{"txn", "at"}``), read at start; it keeps the newest
    ``max_entries`` commits no older than ``retention_s`` (rewritten at start and when it
    has grown to twice that). ``record`` writes to the OS without an fsync (O(1)): the
    commit's own log record is fsynced right after it and backs it up, so
    :meth:`sync` must run before the log drops that record (a checkpoint), and
    :meth:`backfill` after a restart with the commits the log still holds. ``get`` is O(1).

    Args:
        path: the file (None: in memory only, for a store without a data directory).
        max_entries, retention_s: how much is kept. A participant still in doubt after
            its decider forgot the commit (down for longer than this) would get
            ``unknown`` and abort: size these above the longest outage to survive.
    """

    def __init__(self, path: Path | None, max_entries: int = 200_000, retention_s: float = 7 * 86400.0) -> None:
        self.path = path
        self._dirty = False
        self.max_entries = max_entries
        self.retention_s = retention_s
        self._lock = threading.Lock()
        self._commits: OrderedDict[str, float] = OrderedDict()
        self._lines = 0
        self._file: Any = None
        if path is None:
            return
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    e = json.loads(line)
                    self._commits[str(e["txn"])] = float(e["at"])
                except (ValueError, KeyError, TypeError):
                    continue  # a torn last line of a crash: that commit was never applied
            self._lines = len(self._commits) + 1
        self._compact()

    def _compact(self) -> None:
        """Drop old entries and rewrite the file with the rest (caller holds the lock or
        is the constructor). O(entries)."""
        cutoff = time.time() - self.retention_s
        while self._commits and (len(self._commits) > self.max_entries or next(iter(self._commits.values())) < cutoff):
            self._commits.popitem(last=False)
        if self.path is None:
            return
        if self._file is not None:
            self._file.close()
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for txn, at in self._commits.items():
                f.write(json.dumps({"txn": txn, "at": at}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fsync_dir(self.path.parent)
        self._lines = len(self._commits)
        self._file = open(self.path, "a", encoding="utf-8")

    def get(self, txn_id: str) -> str | None:
        """``committed`` if this server decided to commit ``txn_id``, else None. O(1)."""
        with self._lock:
            return COMMIT if txn_id in self._commits else None

    def record(self, txn_id: str) -> None:
        """Record a commit (in the OS's hands on return: a crash of the process keeps it,
        a crash of the machine needs :meth:`sync` or the log's backup). O(1)."""
        with self._lock:
            self._add(txn_id)

    def _add(self, txn_id: str) -> None:
        if txn_id in self._commits:
            return
        at = time.time()
        if self._file is not None:
            self._file.write(json.dumps({"txn": txn_id, "at": at}) + "\n")
            self._file.flush()
            self._lines += 1
            self._dirty = True
        self._commits[txn_id] = at
        if self._lines > 2 * self.max_entries:
            self._compact()

    def backfill(self, txn_ids: list[str]) -> int:
        """Record commits the log replayed at start (a machine crash may have lost their
        ledger lines), then sync. Returns how many were missing. O(len(txn_ids))."""
        with self._lock:
            missing = [x for x in dict.fromkeys(txn_ids) if x not in self._commits]
            for x in missing:
                self._add(x)
        self.sync()
        return len(missing)

    def sync(self) -> None:
        """Make every recorded commit durable (one fdatasync if anything is new)."""
        with self._lock:
            if self._dirty and self._file is not None:
                _datasync(self._file.fileno())
                self._dirty = False

    def __len__(self) -> int:
        with self._lock:
            return len(self._commits)

    def close(self) -> None:
        self.sync()
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


# --- the resolver --------------------------------------------------------------------------


class InDoubtResolver:
    """Resolves this server's prepared transactions that have participants.

    Args:
        txns: the server's transactions (hooks are installed on it).
        server_id: this server's id (is it the decider?).
        ledger: the decider's durable decisions.
        fences: the server's fence registry (None: nothing is fenced).
        peer: finds a participant's address by its id (from the locator).
        secret: the cluster secret, to talk to peers.
        timeout_s: the in-doubt timeout: a decider aborts a prepared transaction whose
            coordinator has been silent this long (presumed abort).
        poll_s: how often the resolver looks; a participant asks its decider about a
            transaction once its coordinator has been silent this long.
    """

    def __init__(self, txns: TxnManager, server_id: str, ledger: DecisionLedger, fences: FenceRegistry | None,
                 peer: PeerLookup | None, secret: bytes | None = None, timeout_s: float = 300.0,
                 poll_s: float = 2.0) -> None:
        self.txns = txns
        self.server_id = server_id
        self.ledger = ledger
        self.fences = fences
        self.peer = peer
        self.secret = secret
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self._pools: dict[tuple[str, int], ConnectionPool] = {}
        self._addrs: dict[str, tuple[str, int] | None] = {}  # peer addresses, looked up once per pass
        self._warned: set[str] = set()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        txns.decision_hook = self._on_decision
        txns.outcome_lookup = ledger.get

    # --- hooks called by TxnManager / the fence registry ------------------------------------

    def _on_decision(self, t: ServerTxn, outcome: str, reason: str | None) -> None:
        # The decider's decision becomes durable before it is applied: from here on it
        # is the transaction's outcome, whatever happens to this process. Recording it
        # only after the commit applied would not do: a commit that fails may have
        # written its log record (a restart replays it), and a commit on tables kept in
        # memory only has no log record to back a line written later. So the ledger
        # comes first, and TxnManager refuses to abort a transaction it holds a commit
        # for (TxnManager._apply_recorded_commit): the commit is applied again instead.
        if outcome == COMMIT and t.participants and t.participants[0] == self.server_id:
            self.ledger.record(t.txn_id)
            if not self.txns.store.logged_prepare(t.txn_id):
                # Nothing of it is in the log (only non-persistent tables, or nothing
                # to change here), so no COMMIT record will back the line up: sync now.
                self.ledger.sync()

    def wake(self, *_: Any) -> None:
        """Look at the prepared transactions now (a newer fencing token was learned)."""
        self._wake.set()

    # --- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Apply the ledger's decisions to transactions a restart restored in doubt,
        then resolve in the background. Call before the server accepts requests."""
        n = self.ledger.backfill(self.txns.store.recovered_commits)
        if n:
            logger.info("in-doubt ledger: %d commit(s) restored from the log", n)
        self.txns.store.before_log_trim = self.ledger.sync
        for t in self.txns.prepared():
            recorded = self.ledger.get(t.txn_id)
            if recorded is not None:
                self._apply(t, recorded, "decided by this server before the restart")
        self._thread = threading.Thread(target=self._run, name="indoubt-resolver", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        for p in list(self._pools.values()):
            p.close()
        self.ledger.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            woken = self._wake.wait(self.poll_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.ledger.sync()  # bounds what a machine crash can take from the ledger alone
                self.step(force=woken)
            except Exception:
                logger.exception("in-doubt resolution failed; retrying in %.0fs", self.poll_s)

    # --- one pass -----------------------------------------------------------------------------

    def step(self, force: bool = False) -> None:
        """Resolve what can be resolved now. ``force``: ask deciders even about
        transactions whose coordinator spoke recently (a leader changed). O(prepared)."""
        prepared = self.txns.prepared()
        self._warned.intersection_update(t.txn_id for t in prepared)  # forget the settled ones
        self._addrs.clear()
        for t in prepared:
            if not t.participants:
                continue  # no participants: only its coordinator (or an operator) can decide
            try:
                if t.participants[0] == self.server_id:
                    self._as_decider(t)
                else:
                    self._as_participant(t, force)
            except Exception as e:
                # Once per transaction at WARNING (a decider down for long would flood the log).
                first = t.txn_id not in self._warned
                self._warned.add(t.txn_id)
                logger.log(logging.WARNING if first else logging.DEBUG,
                           "transaction %s stays in doubt for now: %s", t.txn_id, e)

    def _fenced(self, txn_id: str) -> bool:
        f = self.txns.fence_of(txn_id)
        return f is not None and self.fences is not None and self.fences.newest(f[0]) > f[1]

    def _as_decider(self, t: ServerTxn) -> str:
        outcome, why = decider_verdict(recorded=self.ledger.get(t.txn_id), fenced=self._fenced(t.txn_id),
                                       idle_s=self.txns.clock() - t.last_seen, timeout_s=self.timeout_s)
        if outcome is None:
            return "prepared"
        return self._apply(t, outcome, why)

    def _as_participant(self, t: ServerTxn, force: bool) -> None:
        idle = self.txns.clock() - t.last_seen
        if not (force or t.recovered or self._fenced(t.txn_id) or idle >= self.poll_s):
            return  # the coordinator is probably sending phase 2 right now
        decider = t.participants[0] if t.participants else ""
        state = self._ask(decider, t.txn_id)
        outcome = participant_verdict(state)
        if outcome is not None:
            self._apply(t, outcome, f"its decider {decider} answered {state}")

    def _apply(self, t: ServerTxn, outcome: str, why: str) -> str:
        if outcome == COMMIT:
            state = self.txns.commit(t.txn_id, None)
        else:
            state = self.txns.abort(t.txn_id, reason=f"in-doubt resolution: {why}")
        logger.warning("in-doubt transaction %s %s: %s", t.txn_id, state, why)
        self._warned.discard(t.txn_id)
        return state

    def _ask(self, sid: str, txn_id: str) -> str:
        """The decider's answer about ``txn_id`` (it applies its rules first)."""
        if sid not in self._addrs:
            self._addrs[sid] = self.peer(sid) if self.peer is not None else None
        addr = self._addrs[sid]
        if addr is None:
            raise ConnectionError(f"its decider {sid} is not reachable (unknown or down)")
        pool = self._pools.get(addr)
        if pool is None:
            pool = self._pools[addr] = ConnectionPool(addr[0], addr[1], self.secret, timeout=10.0, max_idle=1)
        meta: dict[str, Any] = {"txn": txn_id, "resolve": True}
        fence = self.txns.fence_of(txn_id)
        if self.fences is not None and fence is not None:
            # The newest token this server knows of the transaction's writer group, so
            # the decider need not wait for its own heartbeat to learn that the
            # coordinator was deposed (the other groups do not bear on this answer).
            meta["fences"] = {fence[0]: self.fences.newest(fence[0])}
        return str(pool.request(Kind.TXN_STATUS, meta).metadata["state"])

    # --- the decider's answer to a participant -------------------------------------------------

    def answer(self, txn_id: str, fences: Any = None) -> str:
        """TXN_STATUS ``{txn, resolve: true}``: this server's outcome for ``txn_id`` as its
        decider, after applying the decider's rules to it. O(len(fences)); at most one
        write of the fence file.

        ``fences``: the asker's newest tokens ({group: token}, see :func:`checked_fences`).
        Only the entry of the transaction's writer group is recorded (as if a request had
        carried it): it is the one the answer depends on, and a question must neither
        cost a write of the fence file per entry nor make the registry grow.

        Raises:
            BadArgumentError: malformed ``fences`` (nothing is recorded or decided).
        """
        given = checked_fences(fences)
        mine = self.txns.fence_of(txn_id)
        if self.fences is not None and mine is not None and mine[0] in given:
            self.fences.observe(mine[0], given[mine[0]])
        st = self.txns.status(txn_id)["state"]
        if st == "prepared":
            t = next((x for x in self.txns.prepared() if x.txn_id == txn_id), None)
            if t is not None and t.participants and t.participants[0] == self.server_id:
                return self._as_decider(t)
            return "prepared"
        if st == "open":
            # A participant already prepared it, so its coordinator should have prepared
            # it here first: it never will now. Abort, so a late PREPARE fails.
            return self.txns.abort(txn_id, reason="in-doubt resolution: a participant prepared it before its decider")
        if st == "unknown":
            # Never prepared here (or lost by a restart before it was): it can never
            # commit. Remember the answer so a late PREPARE or COMMIT is refused.
            self.txns.remember(txn_id, ABORT, "in-doubt resolution: its decider never prepared it")
            return ABORT
        return st
