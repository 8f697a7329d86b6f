"""The embedded default: ``connect()`` with no address finds or starts this user's server.

Every application here is a separate Python process with a private ``SPARK_EXT_HOME``.
The tests run in order and share the home (one server life after another).
"""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path
from typing import Any

import pytest

from integration.cluster import EmbeddedHome, free_port, pid_alive, wait_until
from integration.test_client_apps import APP_A, APP_B, APP_CHECK, expected_rows

# Waits for a start signal (so that several applications call connect() together),
# then connects with no address and reports which server it got.
APP_CONNECT = r'''
import json, time, pathlib
from spark_ext.client.embedded import connect, home
d = PARAMS.get("dir")
if d:
    pathlib.Path(d, f"ready-{PARAMS['i']}").write_text("1")
    while not pathlib.Path(d, "go").exists():
        time.sleep(0.002)
c = connect()
info = json.loads((home() / "run" / "embedded.json").read_text())
hello = c.servers()
if "write" in PARAMS:
    k = PARAMS["write"]
    c.put("apps.orders", [(k, f"racer-{k}", 0)])
emit({"address": list(c.locator_address), "pid": info["pid"], "host": info["host"], "servers": hello})
'''


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def check_embedded_state(h: EmbeddedHome, extra: dict[int, list[Any]] | None = None) -> dict[str, Any]:
    got = h.run_app(APP_CHECK)
    rows = expected_rows()
    if extra:
        rows = sorted(rows + list(extra.values()))
    assert got["rows"] == rows
    assert got["tables"] == ["audit", "orders"] and got["indexes"] == ["item_ix"] and got["by_index"] == 50
    assert got["audit"] == ["b", 1]
    assert got["servers"] == [["embedded", True]] and got["placement"] == ["embedded"]
    return got


@pytest.fixture(scope="module")
def h(embedded_home: EmbeddedHome) -> EmbeddedHome:
    return embedded_home


def test_connect_without_address_starts_the_server(h: EmbeddedHome, tmp_path: Path) -> None:
    assert h.run_info() is None and h.server_pids() == []
    # Application A starts it on first use and keeps running; B connects meanwhile.
    a = h.spawn_app(APP_A, dir=str(tmp_path))
    wait_until(lambda: (tmp_path / "a_ready").exists() or a.popen.poll() is not None, 90, "application A")
    assert a.popen.poll() is None, a.result()
    seen_by_b = h.run_app(APP_B, dir=str(tmp_path))
    assert seen_by_b["count"] == 501 and seen_by_b["a_insert"] == [900, "from-a", 1]
    seen_by_a = a.result()
    assert seen_by_a["count"] == 550 and seen_by_a["updated"] == [10, "changed-by-b", 3]

    info = h.run_info()
    assert info is not None and info["host"] == "127.0.0.1" and info["role"] == "embedded"
    assert h.server_pids() == [info["pid"]]
    # Owner-only permissions on everything it created.
    assert mode(h.home) == 0o700
    assert mode(h.home / "secret") == 0o600 and len((h.home / "secret").read_bytes().strip()) >= 32
    assert mode(h.home / "run") == 0o700 and mode(h.run_file) == 0o600
    assert mode(Path(info["data_dir"])) == 0o700 and Path(info["data_dir"]).is_relative_to(h.home)
    assert (h.home / "logs" / "embedded.log").exists()
    # Both applications have exited: a new one finds the same server and all the data.
    check_embedded_state(h)
    got = h.run_app(APP_CONNECT)
    assert got["pid"] == info["pid"] and got["address"] == ["127.0.0.1", info["port"]]


def test_status_and_stop_commands(h: EmbeddedHome) -> None:
    info = h.run_info()
    assert info is not None
    r = h.cli("server", "status", "--embedded")
    assert r.returncode == 0 and f"running on 127.0.0.1:{info['port']}" in r.stdout, r.stdout + r.stderr
    r = h.cli("status")
    assert r.returncode == 0, r.stderr
    assert "embedded" in r.stdout and "apps.orders" in r.stdout and "550" in r.stdout, r.stdout
    r = h.cli("server", "stop", "--embedded")
    assert r.returncode == 0 and "stopped" in r.stdout, r.stdout + r.stderr
    assert not pid_alive(info["pid"]) and h.run_info() is None and h.server_pids() == []
    r = h.cli("server", "status", "--embedded")
    assert r.returncode == 1 and "not running" in r.stdout
    r = h.cli("status")  # does not start a server by itself
    assert r.returncode != 0 and h.server_pids() == []
    # Started again by the command: the data is all there (clean shutdown and restart).
    r = h.cli("server", "start", "--embedded")
    assert r.returncode == 0 and "running on" in r.stdout, r.stdout + r.stderr
    new = h.run_info()
    assert new is not None and new["pid"] != info["pid"] and h.server_pids() == [new["pid"]]
    check_embedded_state(h)


def test_two_processes_connecting_at_once_start_one_server(h: EmbeddedHome, tmp_path: Path) -> None:
    assert h.cli("server", "stop", "--embedded").returncode == 0
    assert h.server_pids() == [] and h.run_info() is None
    racers = [h.spawn_app(APP_CONNECT, dir=str(tmp_path), i=i, write=2000 + i) for i in range(4)]
    wait_until(lambda: all((tmp_path / f"ready-{i}").exists() for i in range(4)), 60, "the racing applications")
    (tmp_path / "go").write_text("1")
    results = [r.result() for r in racers]
    pids = {r["pid"] for r in results}
    addresses = {tuple(r["address"]) for r in results}
    assert len(pids) == 1 and len(addresses) == 1, results
    assert h.server_pids() == sorted(pids)
    check_embedded_state(h, {2000 + i: [2000 + i, f"racer-{2000 + i}", 0] for i in range(4)})


def test_stale_run_file_of_a_killed_server_is_replaced(h: EmbeddedHome) -> None:
    extra = {2000 + i: [2000 + i, f"racer-{2000 + i}", 0] for i in range(4)}
    info = h.run_info()
    assert info is not None
    os.kill(info["pid"], signal.SIGKILL)
    wait_until(lambda: not pid_alive(info["pid"]), 10, "the embedded server to die")
    assert h.run_info() == info  # left behind by the crash
    got = h.run_app(APP_CONNECT)
    assert got["pid"] != info["pid"] and pid_alive(got["pid"])
    assert h.server_pids() == [got["pid"]] and h.run_info()["pid"] == got["pid"]  # type: ignore[index]
    check_embedded_state(h, extra)  # every acknowledged write survived the kill -9

    # A run file naming a live process that is not the server (pid reuse) and a dead port.
    h.kill_all()
    h.run_file.write_text(json.dumps({"pid": os.getpid(), "host": "127.0.0.1", "port": free_port(),
                                      "role": "embedded", "data_dir": "x", "started": 0}))
    got = h.run_app(APP_CONNECT)
    assert got["pid"] != os.getpid() and h.server_pids() == [got["pid"]]
    # A run file that is not even JSON.
    h.kill_all()
    h.run_file.write_text("{garbage")
    got = h.run_app(APP_CONNECT)
    assert h.server_pids() == [got["pid"]]
    check_embedded_state(h, extra)
