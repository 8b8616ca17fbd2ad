#!/usr/bin/env python3
"""Many agents against one monitoring server (README "Many hosts", issue 18), bounded in time.

Usage: bench/hosts.py [--agents N ...] [--seconds S]

For each N (default 10 and 50): one real Prometheus in agent mode per simulated host (Debian's
2.42, `--enable-feature=agent`), each with the configuration the stack renders for
`role = "agent"` and its own `hosts.name` (sim-1 … sim-N), all scraping one warpwatch (release
build) and one node exporter at the declared 15 s interval, so the server receives N hosts'
worth of series; pushing through the rendered nginx receiver (mutual TLS, certificates made with
openssl) into a server Prometheus with the remote-write receiver. After S seconds (default 240)
it prints the server's active series, its ingest rate, its RSS (current and peak) against the
declared 512 MiB limit, where its heap goes (go_memstats), nginx's RSS against the receiver's
declared limit, and the agents' mean RSS. Everything listens on 127.0.0.1; it needs
target/release/warpwatch (cargo build --release --locked), prometheus, prometheus-node-exporter,
nginx, openssl and nix-instantiate.
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.hosts.helpers import agent_overrides, make_pki, render, server_overrides  # noqa: E402

MIB = 1024 * 1024


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def query(port, promql):
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as r:
        result = json.load(r)["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


def wait_ready(port, deadline=60):
    end = time.time() + deadline
    while time.time() < end:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    sys.exit(f"Prometheus on {port} not ready after {deadline}s")


def run(agents, seconds, work):
    stack = render("s.stack", {})
    server_limit = stack["services"]["prometheus"]["memoryMiB"]
    receiver_limit = stack["services"]["receiver"]["memoryMiB"]
    pki = make_pki(work / "pki", ["127.0.0.1"], ["agent"])
    tls = work / "agent-tls"
    tls.mkdir()
    for name, src in (("client.crt", pki["clients"]["agent"][0]), ("client.key", pki["clients"]["agent"][1]), ("ca.crt", pki["ca"][0])):
        shutil.copy(src, tls / name)
    receiver_port, server_port, ww_port, node_port = (free_port() for _ in range(4))
    server = server_overrides(
        [f"sim-{i}" for i in range(1, agents + 1)],
        receiver={"bindAddress": "127.0.0.1", "port": receiver_port},
        services={"prometheus": {"port": server_port}},
    )
    server["receiver"].update(certFile=str(pki["server"][0]), keyFile=str(pki["server"][1]), clientCaFile=str(pki["ca"][0]))
    (work / "nginx").mkdir()
    (work / "nginx.conf").write_text(render(f's.configs.nginx {{ target = "host"; stateDir = "{work / "nginx"}"; }}', server))
    (work / "rules.yml").write_text(render("s.configs.rules", server))
    # The server's own job only: the other services of a server are not what is measured here.
    (work / "server.yml").write_text(
        "global: {scrape_interval: 15s, evaluation_interval: 15s}\nrule_files: [rules.yml]\n"
        f"scrape_configs: [{{job_name: prometheus, static_configs: [{{targets: ['127.0.0.1:{server_port}']}}]}}]\n"
    )
    procs = []
    logs = open(work / "processes.log", "ab")

    def start(args, env=None):
        procs.append(subprocess.Popen(args, stdout=logs, stderr=subprocess.STDOUT, env=env, cwd=work))
        return procs[-1]

    try:
        srv = start(["prometheus", f"--config.file={work / 'server.yml'}", f"--storage.tsdb.path={work / 'server-data'}",
                     f"--web.listen-address=127.0.0.1:{server_port}", "--web.enable-remote-write-receiver"])  # fmt: skip
        wait_ready(server_port)
        nginx = start(["nginx", "-e", "stderr", "-p", str(work), "-c", str(work / "nginx.conf")])
        start([str(ROOT / "target" / "release" / "warpwatch")],
              env={**os.environ, "WARPWATCH_ADDR": f"127.0.0.1:{ww_port}", "WARPWATCH_DATA_DIR": str(work / "ww")})  # fmt: skip
        start(["prometheus-node-exporter", f"--web.listen-address=127.0.0.1:{node_port}"])
        agent_pids = []
        for i in range(1, agents + 1):
            overrides = agent_overrides(
                f"sim-{i}", f"127.0.0.1:{receiver_port}",
                services={"warpwatch": {"port": ww_port}, "node-exporter": {"port": node_port}},
            )  # fmt: skip
            config = work / f"agent-{i}.yml"
            config.write_text(render(f's.toYAML (s.configs.agentPrometheus {{ tlsDir = "{tls}"; }})', overrides))
            agent_pids.append(start(["prometheus", "--enable-feature=agent", f"--config.file={config}",
                                     f"--storage.agent.path={work / f'wal-{i}'}", f"--web.listen-address=127.0.0.1:{free_port()}"]).pid)  # fmt: skip
        started = time.time()
        peak_nginx = 0.0
        while time.time() - started < seconds:
            time.sleep(5)
            peak_nginx = max(peak_nginx, rss_mib(nginx.pid) + sum(rss_mib(int(p)) for p in child_pids(nginx.pid)))
            for proc in procs:
                if proc.poll() is not None:
                    sys.exit(f"{proc.args[0]} exited with {proc.returncode}; see {work / 'processes.log'}")
        hosts_seen = query(server_port, 'count(count by (host) (up{host=~"sim-.*"}))')
        series = query(server_port, "prometheus_tsdb_head_series")
        rate = query(server_port, "rate(prometheus_tsdb_head_samples_appended_total[2m])")
        heap = query(server_port, 'go_memstats_heap_inuse_bytes{job="prometheus",host=""}') / MIB
        sys_mem = query(server_port, 'go_memstats_sys_bytes{job="prometheus",host=""}') / MIB
        per_host = query(server_port, 'count({host="sim-1"})')
        # Every simulated host scrapes the same two targets: the share of scrapes that succeeded
        # says whether those targets, not the server, limited the ingest.
        up_share = query(server_port, 'avg(avg_over_time(up{host=~"sim-.*"}[2m]))')
        rss, hwm = rss_mib(srv.pid), rss_mib(srv.pid, "VmHWM")
        agents_rss = sum(rss_mib(p) for p in agent_pids) / len(agent_pids)
        print(f"agents {agents}: hosts seen {hosts_seen:.0f}, {per_host:.0f} series per host, head series {series:.0f}, "
              f"ingest {rate:.0f} samples/s, {up_share:.0%} of scrapes up; server RSS {rss:.0f} MiB (peak {hwm:.0f}) of {server_limit} MiB, "
              f"heap in use {heap:.0f} MiB, Go sys {sys_mem:.0f} MiB; nginx peak {peak_nginx:.1f} MiB of {receiver_limit} MiB; "
              f"agent mean RSS {agents_rss:.0f} MiB", flush=True)  # fmt: skip
        return hwm < server_limit and peak_nginx < receiver_limit and hosts_seen == agents
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def child_pids(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return f.read().split()
    except OSError:
        return []


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--seconds", type=int, default=240)
    args = parser.parse_args()
    ok = True
    for agents in args.agents:
        with tempfile.TemporaryDirectory(prefix="warpwatch-hosts-bench.") as work:
            ok = run(agents, args.seconds, Path(work)) and ok
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
