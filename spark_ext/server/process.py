"""The long-lived processes: a store server, a locator, or both in one (embedded).

Each runs until SIGTERM or SIGINT, then shuts down cleanly: stops accepting, lets the
engine flush its log, writes its final state. Start-up recovers the engine from its
data directory before the server accepts its first request.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from spark_ext.client.connection import ConnectionPool
from spark_ext.locator.catalog import Catalog
from spark_ext.locator.service import LocalLink, LocatorService
from spark_ext.ha.leases import LeaseTable
from spark_ext.locator.lease_service import LeaseService
from spark_ext.server.fencing import FenceRegistry
from spark_ext.server.indoubt import DecisionLedger, InDoubtResolver
from spark_ext.server.store_service import StoreService
from spark_ext.server.tcp import FrameServer
from spark_ext.store import Store
from spark_ext.wire.kinds import Kind

logger = logging.getLogger(__name__)


@dataclass
class ServerConfig:
    """Settings of a store server or locator process (see conf/server.conf)."""

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    secret: bytes | None = None
    locator: tuple[str, int] | None = None
    server_id: str | None = None
    flush: str = "commit"
    memory_limit_bytes: int | None = None
    heartbeat_s: float = 1.0
    lost_after_s: float = 10.0
    txn_timeout_s: float = 600.0  # an open transaction idle this long is aborted
    indoubt_timeout_s: float = 300.0  # a prepared one whose coordinator is silent this long is aborted by its decider
    run_file: Path | None = None  # written once listening: {pid, host, port, ...}


def _server_id(cfg: ServerConfig) -> str:
    if cfg.server_id:
        return cfg.server_id
    p = cfg.data_dir / "server_id"
    if p.exists():
        return p.read_text().strip()
    sid = "srv-" + uuid.uuid4().hex[:8]
    p.write_text(sid)
    return sid


def write_run_file(path: Path, info: dict[str, Any]) -> None:
    """Write a run file atomically with owner-only permissions."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(info, f)
    os.replace(tmp, path)


class Process:
    """Base: owns a FrameServer and the shutdown sequence."""

    role = "server"

    def __init__(self, cfg: ServerConfig) -> None:
        self.cfg = cfg
        cfg.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.stopped = threading.Event()
        self.frames: FrameServer | None = None

    def run_info(self) -> dict[str, Any]:
        assert self.frames is not None
        return {"pid": os.getpid(), "host": self.cfg.host, "port": self.frames.port, "role": self.role,
                "data_dir": str(self.cfg.data_dir), "started": time.time()}

    def serve_forever(self) -> None:
        """Start, install signal handlers, block until stopped, then shut down."""
        self.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopped.set())
        try:
            while not self.stopped.wait(0.5):
                pass
        finally:
            self.shutdown()

    def start(self) -> None:
        raise NotImplementedError

    def shutdown(self) -> None:
        raise NotImplementedError

    def _announce(self) -> None:
        if self.cfg.run_file is not None:
            write_run_file(self.cfg.run_file, self.run_info())
        assert self.frames is not None
        logger.info("%s ready on %s:%d (pid %d)", self.role, self.cfg.host, self.frames.port, os.getpid())

    def _remove_run_file(self) -> None:
        if self.cfg.run_file is not None:
            try:
                info = json.loads(self.cfg.run_file.read_text())
                if info.get("pid") == os.getpid():
                    self.cfg.run_file.unlink()
            except (OSError, ValueError):
                pass


class StoreServerProcess(Process):
    """A store server; registers with its locator (or embeds one, see EmbeddedProcess)."""

    role = "server"

    def start(self) -> None:
        cfg = self.cfg
        self.server_id = _server_id(cfg)
        self.store = Store(cfg.data_dir / "store", flush=cfg.flush, memory_limit_bytes=cfg.memory_limit_bytes)
        self.service = StoreService(self.store, self.server_id, cfg.txn_timeout_s)
        self.service.fence = FenceRegistry(cfg.data_dir / "fences.json")
        self._locator: ConnectionPool | None = None
        if cfg.locator is not None:
            self._locator = ConnectionPool(cfg.locator[0], cfg.locator[1], cfg.secret, timeout=10.0, max_idle=1)
        resolver = _start_resolver(cfg, self.service, self._peer_address)
        self.service.fence.on_newer = _on_newer_token(self.service, resolver)
        self.frames = FrameServer(cfg.host, cfg.port, secret=cfg.secret, role=self.role,
                                  extra_hello={"server_id": self.server_id})
        self.service.register(self.frames)
        self.frames.start()
        if self._locator is not None:
            self._register()
            threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True).start()
        self._announce()

    def _peer_address(self, sid: str) -> tuple[str, int] | None:
        """A peer server's current address, from the locator (a restart changes ports)."""
        if self._locator is None:
            return None
        for s in self._locator.request(Kind.LIST_SERVERS, {}).metadata.get("servers", []):
            if s.get("server_id") == sid and s.get("up") and s.get("host"):
                return str(s["host"]), int(s["port"])
        return None

    def _register(self) -> None:
        assert self._locator is not None and self.frames is not None
        reply = self._locator.request(Kind.REGISTER_SERVER, {
            "server_id": self.server_id, "host": self.cfg.host, "port": self.frames.port,
        })
        self._observe_fences(reply.metadata)
        assigned = {a["table"]["name"]: a for a in reply.metadata.get("assignments", [])}
        self.service.host_assignments(list(assigned.values()))
        for name in list(self.store.tables):
            if name not in assigned:
                # Dropped (or moved) while this server was away.
                logger.info("dropping local table %s: the catalog no longer places it here", name)
                self.store.drop_table(name, if_exists=True)
                self.service.owned.pop(name, None)
        logger.info("registered with locator as %s: hosting %d table(s)", self.server_id, len(assigned))

    def _observe_fences(self, meta: dict[str, Any]) -> None:
        fences = meta.get("fences") or {}
        if isinstance(fences, dict):
            for group, token in fences.items():
                if isinstance(group, str) and isinstance(token, int):
                    self.service.fence.observe(group, token)

    def _heartbeat_loop(self) -> None:
        assert self._locator is not None
        while not self.stopped.wait(self.cfg.heartbeat_s):
            try:
                reply = self._locator.request(Kind.HEARTBEAT, {"server_id": self.server_id})
                self._observe_fences(reply.metadata)
                if reply.metadata.get("register"):
                    self._register()
            except Exception as e:  # the locator may be restarting: keep trying
                logger.warning("heartbeat to locator failed: %s", e)

    def shutdown(self) -> None:
        logger.info("store server %s shutting down", self.server_id)
        self.stopped.set()
        if self._locator is not None:
            try:
                self._locator.request(Kind.DEREGISTER_SERVER, {"server_id": self.server_id})
            except Exception:
                pass
            self._locator.close()
        if self.frames is not None:
            self.frames.stop()
        self.service.close()
        if self.service.resolver is not None:
            self.service.resolver.close()
        self.store.close()
        self._remove_run_file()


def _start_resolver(cfg: ServerConfig, service: StoreService, peer: Any) -> InDoubtResolver:
    """The in-doubt resolver of a store server, its ledger beside the data. Decisions
    recorded before a restart are applied before the first request."""
    ledger = DecisionLedger(cfg.data_dir / "txn_decisions.jsonl")
    resolver = InDoubtResolver(service.txns, service.server_id, ledger, service.fence, peer, cfg.secret,
                               timeout_s=cfg.indoubt_timeout_s, poll_s=min(2.0, max(0.2, cfg.indoubt_timeout_s / 2)))
    service.resolver = resolver
    resolver.start()
    return resolver


def _on_newer_token(service: StoreService, resolver: InDoubtResolver) -> Callable[[str, int], None]:
    def on_newer(group: str, token: int) -> None:
        service.txns.abort_fenced(group, token)  # the deposed leader's open transactions go at once
        resolver.wake()  # its prepared ones are settled with their deciders
    return on_newer


class LocatorProcess(Process):
    """A locator alone."""

    role = "locator"

    def start(self) -> None:
        cfg = self.cfg
        self.catalog = Catalog(cfg.data_dir / "catalog.json")
        self.locator = LocatorService(self.catalog, cfg.secret, cfg.lost_after_s)
        self.locator.lease_service = LeaseService(LeaseTable(cfg.data_dir / "leases.json"))
        self.locator.fences = FenceRegistry(cfg.data_dir / "fences.json")
        # A grant fences the catalog at once: a paused former leader's DDL is refused
        # before the new leader's first DDL.
        self.locator.lease_service.on_grant = self.locator.fences.observe
        self.frames = FrameServer(cfg.host, cfg.port, secret=cfg.secret, role=self.role)
        self.locator.register(self.frames)
        self.frames.start()
        self._announce()

    def shutdown(self) -> None:
        logger.info("locator shutting down")
        if self.frames is not None:
            self.frames.stop()
        self.locator.close()
        self._remove_run_file()


class EmbeddedProcess(Process):
    """Locator and store server in one process on one port: the default for one machine."""

    role = "embedded"

    def start(self) -> None:
        cfg = self.cfg
        self.server_id = "embedded"
        self.catalog = Catalog(cfg.data_dir / "catalog.json")
        self.store = Store(cfg.data_dir / "store", flush=cfg.flush, memory_limit_bytes=cfg.memory_limit_bytes)
        self.service = StoreService(self.store, self.server_id, cfg.txn_timeout_s)
        fences = FenceRegistry(cfg.data_dir / "fences.json")  # one process: one registry
        self.service.fence = fences
        # One server: it is the decider of whatever it prepares; it has no peers.
        resolver = _start_resolver(cfg, self.service, None)
        fences.on_newer = _on_newer_token(self.service, resolver)
        self.locator = LocatorService(self.catalog, cfg.secret, cfg.lost_after_s)
        self.locator.lease_service = LeaseService(LeaseTable(cfg.data_dir / "leases.json"))
        self.locator.lease_service.on_grant = fences.observe
        self.locator.fences = fences
        self.frames = FrameServer(cfg.host, cfg.port, secret=cfg.secret, role=self.role,
                                  extra_hello={"server_id": self.server_id})
        self.service.register(self.frames)
        self.locator.register(self.frames)
        self.frames.start()
        self.service.host_assignments(
            self.locator.add_member(self.server_id, cfg.host, self.frames.port, LocalLink(self.frames.handlers)))
        self._announce()

    def shutdown(self) -> None:
        logger.info("embedded server shutting down")
        if self.frames is not None:
            self.frames.stop()
        self.locator.close()
        self.service.close()
        if self.service.resolver is not None:
            self.service.resolver.close()
        self.store.close()
        self._remove_run_file()
