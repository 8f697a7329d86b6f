"""The ``spark-ext`` command: start, stop and inspect servers and locators.

Examples::

    spark-ext server start --embedded          # locator + store on 127.0.0.1 (detached)
    spark-ext locator start --port 7100 --data-dir /var/lib/spark-ext/locator
    spark-ext server start --locator 127.0.0.1:7100 --data-dir /var/lib/spark-ext/s1
    spark-ext status                           # servers, tables, buckets, rows, memory
    spark-ext txns                             # prepared transactions in doubt, per server
    spark-ext server stop --embedded
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from spark_ext.client import embedded


def _addr(s: str) -> tuple[str, int]:
    host, _, port = s.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {s!r}")
    return host, int(port)


def _secret(args: argparse.Namespace) -> bytes | None:
    if getattr(args, "secret_file", None):
        return Path(args.secret_file).read_bytes().strip()
    if os.environ.get("SPARK_EXT_SECRET"):
        return os.environ["SPARK_EXT_SECRET"].encode()
    return None


def _run_file(role: str, args: argparse.Namespace) -> Path:
    name = "embedded" if getattr(args, "embedded", False) else role + (f"-{args.port}" if getattr(args, "port", 0) else "")
    return embedded.home() / "run" / f"{name}.json"


def _start(role: str, args: argparse.Namespace) -> int:
    from spark_ext.server.process import EmbeddedProcess, LocatorProcess, ServerConfig, StoreServerProcess

    is_embedded = role == "server" and args.embedded
    if not args.foreground:
        if is_embedded:
            (host, port), _ = embedded.ensure_embedded()
            print(f"embedded server running on {host}:{port}")
            return 0
        cmd = [sys.executable, "-m", "spark_ext.cli", *sys.argv[1:], "--foreground"]
        log = embedded.home() / "logs"
        log.mkdir(parents=True, exist_ok=True, mode=0o700)
        out = open(log / f"{role}-{args.port or 'auto'}.log", "ab")
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        run_file = Path(args.run_file) if args.run_file else _run_file(role, args)
        for _ in range(600):
            if p.poll() is not None:
                print(f"{role} exited with code {p.returncode}; see {out.name}", file=sys.stderr)
                return 1
            if run_file.exists():
                info = json.loads(run_file.read_text())
                if info.get("pid") == p.pid:
                    print(f"{role} running on {info['host']}:{info['port']} (pid {p.pid})")
                    return 0
            time.sleep(0.1)
        print(f"{role} did not report ready in 60s; see {out.name}", file=sys.stderr)
        return 1
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    h = embedded.home()
    secret = _secret(args)
    if is_embedded and secret is None:
        secret = embedded.load_or_create_secret(h / "secret")
    data_dir = Path(args.data_dir) if args.data_dir else h / ("data" if is_embedded else f"{role}-data")
    cfg = ServerConfig(
        data_dir=data_dir, host=args.host, port=args.port, secret=secret,
        locator=getattr(args, "locator", None), server_id=getattr(args, "server_id", None),
        flush=getattr(args, "flush", "commit"), lost_after_s=getattr(args, "lost_after", 10.0),
        txn_timeout_s=getattr(args, "txn_timeout", 600.0),
        indoubt_timeout_s=getattr(args, "indoubt_timeout", 300.0),
        run_file=Path(args.run_file) if args.run_file else _run_file(role, args),
    )
    if role == "locator":
        LocatorProcess(cfg).serve_forever()
    elif is_embedded:
        EmbeddedProcess(cfg).serve_forever()
    else:
        if cfg.locator is None:
            print("a store server needs --locator HOST:PORT (or use --embedded)", file=sys.stderr)
            return 2
        StoreServerProcess(cfg).serve_forever()
    return 0


def _stop(role: str, args: argparse.Namespace) -> int:
    run_file = Path(args.run_file) if args.run_file else _run_file(role, args)
    try:
        info = json.loads(run_file.read_text())
    except (OSError, ValueError):
        print(f"no running {role} found ({run_file} is missing)")
        return 1
    pid = int(info["pid"])
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        run_file.unlink(missing_ok=True)
        print(f"{role} (pid {pid}) was not running; removed its stale run file")
        return 0
    for _ in range(300):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            print(f"{role} (pid {pid}) stopped")
            return 0
        time.sleep(0.1)
    print(f"{role} (pid {pid}) did not stop within 30s", file=sys.stderr)
    return 1


def _client(args: argparse.Namespace) -> Any:
    from spark_ext.client.client import StoreClient

    if args.locator:
        return StoreClient(args.locator, _secret(args))
    (host, port), secret = embedded.ensure_embedded(start=False)
    return StoreClient((host, port), secret)


def _status(args: argparse.Namespace) -> int:
    c = _client(args)
    try:
        servers = c.servers()
        print(f"locator {c.locator_address[0]}:{c.locator_address[1]}: {len(servers)} server(s)")
        rows: list[tuple[str, ...]] = []
        for s in servers:
            state = "up" if s["up"] else "LOST"
            print(f"  {s['server_id']:<16} {s['host']}:{s['port']:<6} {state}")
            if not s["up"]:
                continue
            st = c.server_status(s["host"], s["port"])
            if st.get("in_doubt_txns"):
                print(f"  {'':<16} {len(st['in_doubt_txns'])} prepared transaction(s) in doubt: see 'spark-ext txns'")
            for t in st["tables"]:
                rows.append((t["table"], s["server_id"], f"{len(t['buckets'])}", f"{t['rows']:,}", f"{t['memory_bytes'] / 1e6:.1f} MB"))
        if rows:
            print(f"\n  {'table':<30} {'server':<16} {'buckets':>7} {'rows':>12} {'memory':>10}")
            for r in sorted(rows):
                print(f"  {r[0]:<30} {r[1]:<16} {r[2]:>7} {r[3]:>12} {r[4]:>10}")
        else:
            print("\n  no tables")
    finally:
        c.close()
    return 0


def _txns(args: argparse.Namespace) -> int:
    """List every prepared transaction still waiting for a decision, per server."""
    c = _client(args)
    try:
        rows: list[tuple[str, ...]] = []
        for s in c.servers():
            if not s["up"]:
                print(f"server {s['server_id']} is down: its transactions are not listed")
                continue
            for t in c.server_status(s["host"], s["port"]).get("in_doubt_txns", []):
                fence = t.get("fence")
                rows.append((t["txn"], s["server_id"], t["role"], str(t.get("decider") or "-"),
                             ",".join(t.get("participants") or []) or "-", f"{t['idle_s']:.0f}s",
                             "yes" if t.get("recovered") else "no",
                             f"{fence['group']}:{fence['token']}" if fence else "-"))
        if not rows:
            print("no prepared transactions in doubt")
            return 0
        head = ("transaction", "server", "role", "decider", "participants", "silent", "restart", "fence")
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        for r in [head, *sorted(rows)]:
            print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    finally:
        c.close()
    return 0


def _ha_status(args: argparse.Namespace) -> int:
    from spark_ext.ha.backends import LocatorLeases, ZooKeeperLeases

    backend: Any
    if args.zookeeper:
        backend = ZooKeeperLeases(args.zookeeper)
    elif args.locator:
        backend = LocatorLeases(args.locator, _secret(args))
    else:
        address, secret = embedded.ensure_embedded(start=False)
        backend = LocatorLeases(address, secret)
    try:
        leases = backend.status(args.group)
    finally:
        backend.close()
    if not leases:
        print("no leader groups")
        return 0
    print(f"{'group':<24} {'holder':<32} {'token':>6} {'expires in':>11}  waiters")
    for lz in leases:
        exp = f"{lz['expires_in_ms'] / 1000:.1f}s" if lz.get("expires_in_ms") is not None else "-"
        holder = lz["holder"] if lz["held"] else "(none)"
        token = lz["token"] if lz["held"] else lz.get("last_token", "-")
        print(f"{lz['name']:<24} {holder:<32} {token!s:>6} {exp:>11}  {', '.join(lz.get('waiters') or []) or '-'}")
    return 0


def _role_status(role: str, args: argparse.Namespace) -> int:
    run_file = Path(args.run_file) if args.run_file else _run_file(role, args)
    info = embedded.running(run_file, _secret(args) or _maybe_secret())
    if info is None:
        print(f"{role}: not running")
        return 1
    print(f"{role}: running on {info['host']}:{info['port']} (pid {info['pid']}, data {info['data_dir']})")
    return 0


def _maybe_secret() -> bytes | None:
    p = embedded.home() / "secret"
    return p.read_bytes().strip() if p.exists() else None


# --- `spark-ext shell` (owned by the PySpark face, spark_ext/spark/shell.py) -------------


def add_shell_command(sub: Any) -> None:
    """``spark-ext shell``: interactive PySpark with the extension switched on."""
    from spark_ext.spark import shell

    shell.add_arguments(sub.add_parser("shell", help="interactive PySpark session with spark-ext configured"))


def run_shell(args: argparse.Namespace) -> int:
    from spark_ext.spark import shell

    return shell.run(args)


# --- end of `spark-ext shell` --------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spark-ext", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp: argparse.ArgumentParser, role: str) -> None:
        sp.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
        sp.add_argument("--port", type=int, default=0, help="port to listen on (default: any free port)")
        sp.add_argument("--data-dir", help=f"data directory (default under $SPARK_EXT_HOME, now {embedded.home()})")
        sp.add_argument("--secret-file", help="file holding the shared secret (or set SPARK_EXT_SECRET)")
        sp.add_argument("--run-file", help="where to write {pid, host, port} once ready")
        sp.add_argument("--foreground", action="store_true", help="run in this terminal instead of detaching")
        sp.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
        sp.add_argument("--lost-after", type=float, default=10.0, help="seconds without heartbeat before a server is lost")

    for role in ("server", "locator"):
        rp = sub.add_parser(role, help=f"manage a {role}")
        rsub = rp.add_subparsers(dest="action", required=True)
        st = rsub.add_parser("start", help=f"start a {role}")
        common(st, role)
        if role == "server":
            st.add_argument("--embedded", action="store_true", help="locator and store server in one process (single machine)")
            st.add_argument("--locator", type=_addr, help="HOST:PORT of the locator to register with")
            st.add_argument("--server-id", help="stable id of this server (default: kept in its data directory)")
            st.add_argument("--flush", default="commit", choices=["commit", "group", "off"],
                            help="log flush policy: fsync every commit, every few ms, or leave it to the OS")
            st.add_argument("--txn-timeout", type=float, default=600.0,
                            help="seconds after which an open (unprepared) transaction that saw no request "
                                 "is aborted (default 600)")
            st.add_argument("--indoubt-timeout", type=float, default=300.0,
                            help="seconds after which a prepared transaction whose coordinator sent nothing is "
                                 "aborted by its deciding server (presumed abort; default 300)")
        for action in ("stop", "status"):
            ap = rsub.add_parser(action, help=f"{action} a {role}")
            ap.add_argument("--run-file", help="run file of the process (default: the one under $SPARK_EXT_HOME)")
            ap.add_argument("--port", type=int, default=0, help="port it was started with, to find its run file")
            ap.add_argument("--secret-file")
            if role == "server":
                ap.add_argument("--embedded", action="store_true")
    hp = sub.add_parser("ha", help="driver high availability: leader groups")
    hsub = hp.add_subparsers(dest="action", required=True)
    hs = hsub.add_parser("status", help="leader groups: holders, fencing tokens, waiters")
    hs.add_argument("--locator", type=_addr, help="HOST:PORT of the lock service (default: the embedded server)")
    hs.add_argument("--zookeeper", help="ZooKeeper hosts (host:port,...) when the ZooKeeper backend is used")
    hs.add_argument("--secret-file")
    hs.add_argument("--group", help="only this group")
    sp = sub.add_parser("status", help="servers, tables, buckets, rows and memory of a cluster")
    sp.add_argument("--locator", type=_addr, help="HOST:PORT (default: the embedded server)")
    sp.add_argument("--secret-file")
    tp = sub.add_parser("txns", help="prepared transactions waiting for a decision (in doubt), per server")
    tp.add_argument("--locator", type=_addr, help="HOST:PORT (default: the embedded server)")
    tp.add_argument("--secret-file")
    add_shell_command(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cmd == "shell":
        return run_shell(args)
    if args.cmd == "status":
        return _status(args)
    if args.cmd == "txns":
        return _txns(args)
    if args.cmd == "ha":
        return _ha_status(args)
    if args.action == "start":
        return _start(args.cmd, args)
    if args.action == "stop":
        return _stop(args.cmd, args)
    return _role_status(args.cmd, args)


if __name__ == "__main__":
    sys.exit(main())
