#!/usr/bin/env python3
"""Half-sent-request flood against warpwatch (README "Limits and timeouts"), bounded in time.

Usage: bench/flood.py [--nofile N] [--connections N] [--hold SECONDS]

Starts target/release/warpwatch (build it first: cargo build --release --locked) on 127.0.0.1
with a kernel-chosen port and its open-file limit set to --nofile (soft and hard, as prlimit
would), then opens --connections connections to it that each send half a request line and stop,
and holds them for --hold seconds while probing GET /healthz. It prints the connections the
service holds, evicts and refuses, its resident memory before, during and after the flood, the
/healthz latencies under attack, and the WARN/ERROR lines it logged. Sends traffic to 127.0.0.1
only.
"""

import argparse
import os
import resource
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "warpwatch")
HALF_REQUEST = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "
MAX_CONNECTIONS, MAX_HOLD_S = 30000, 60


def rss_kib(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


def get(addr, path, timeout=5.0):
    """One GET on a fresh connection: (status, body, seconds)."""
    start = time.monotonic()
    with socket.create_connection(addr, timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode(), time.monotonic() - start


def metric(addr, name):
    _, body, _ = get(addr, "/metrics")
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise RuntimeError(f"no {name} in /metrics")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nofile", type=int, default=1024)
    p.add_argument("--connections", type=int, default=1014)
    p.add_argument("--hold", type=float, default=5.0)
    a = p.parse_args()
    if not 1 <= a.connections <= MAX_CONNECTIONS or not 0 < a.hold <= MAX_HOLD_S:
        sys.exit(f"flood.py: --connections 1..{MAX_CONNECTIONS}, --hold up to {MAX_HOLD_S} s")
    if not os.access(BIN, os.X_OK):
        sys.exit(f"flood.py: {BIN} missing: cargo build --release --locked")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = a.connections + 64
    if need > hard:
        sys.exit(f"flood.py: needs an open-file limit of {need} for its own sockets (hard limit {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))

    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (a.nofile, a.nofile))

    server = subprocess.Popen(
        [BIN, "--addr", "127.0.0.1:0"],
        env={"RUST_LOG": "info", "PATH": os.environ.get("PATH", "")},
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=limit,
    )
    try:
        line = server.stderr.readline()
        while "listening on http://" not in line:
            if not line:
                sys.exit("flood.py: warpwatch exited before listening")
            line = server.stderr.readline()
        host, port = line.split("listening on http://")[1].split()[0].rsplit(":", 1)
        addr = (host, int(port))
        for _ in range(100):
            get(addr, "/metrics")
        idle = rss_kib(server.pid)
        cap = metric(addr, "warpwatch_connections_max")

        start = time.monotonic()
        flood, failed = [], 0
        for _ in range(a.connections):
            try:
                s = socket.create_connection(addr, timeout=2)
                s.sendall(HALF_REQUEST)
                flood.append(s)
            except OSError:
                failed += 1
        opened_s = time.monotonic() - start
        probes = []
        held = metric(addr, "warpwatch_connections_open")
        while time.monotonic() - start < opened_s + a.hold:
            status, _, took = get(addr, "/healthz")
            probes.append((status, took))
            time.sleep(0.2)
        peak = rss_kib(server.pid, "VmHWM")
        during = rss_kib(server.pid)
        evicted = metric(addr, "warpwatch_connections_evicted_total")
        refused = metric(addr, "warpwatch_connections_refused_total")
        for s in flood:
            s.close()
        time.sleep(2)
        after = rss_kib(server.pid)
        server.terminate()
        logs = server.stderr.read()
        server.wait(timeout=15)
    finally:
        if server.poll() is None:
            server.kill()
    loud = [l for l in logs.splitlines() if l.lstrip().startswith(("WARN", "ERROR"))]
    worst = max(t for _, t in probes)
    print(f"nofile {a.nofile}, cap {cap:.0f}: {a.connections} half-sent connections opened in "
          f"{opened_s:.1f} s ({failed} failed), {held:.0f} held by the service, {evicted:.0f} evicted, "
          f"{refused:.0f} refused")
    print(f"GET /healthz under attack: {len(probes)} probes, statuses {sorted({s for s, _ in probes})}, "
          f"slowest {worst * 1000:.1f} ms")
    print(f"RSS: idle {idle / 1024:.1f} MiB, during {during / 1024:.1f} MiB (peak {peak / 1024:.1f} MiB), "
          f"2 s after {after / 1024:.1f} MiB")
    print(f"WARN/ERROR lines: {len(loud)}" + "".join(f"\n  {l}" for l in loud[:5]))
    print(f"exit status after SIGTERM: {server.returncode}")


if __name__ == "__main__":
    main()
