"""A private Docker engine for the tests: Debian's dockerd (docker.io 20.10), started by the
session, never the host's daemon.

Why each choice:
- Root is required (dockerd runs containers); a missing dockerd fails, naming the package.
- Own --exec-root, --pidfile and unix socket under a per-run temp dir (short, so containerd's
  socket path stays under the 108-byte limit); own --config-file, so a host daemon.json is ignored.
- A fixed --data-root per address pool under CACHE_ROOT: locally imported images survive between
  runs on one machine (nothing is ever pulled), while two concurrent engines never share one.
- --default-address-pool: the first 10.N.0.0/16 (N from POOL_OCTETS) that no host route or
  address overlaps and whose lock file is free. The lock fd is inherited by dockerd, so a daemon
  orphaned by a killed session keeps its pool and data root to itself.
- --bridge=none, --iptables=false, --ip-forward=false, --ip-masq=false: containers reach each
  other on the networks a test creates and the host through ports published on 127.0.0.1
  (docker-proxy); nothing is routed or NATed off the machine, and the host's firewall and
  forwarding sysctl are left as they were.

At the end, the containers, volumes and networks in the data root are removed and the daemon is
stopped by PID (SIGTERM, then SIGKILL after STOP_TIMEOUT_S). Images stay as a cache, unless
WARPWATCH_TEST_DOCKER_CACHE=drop, which deletes the data root before and after the run: a run
like on a fresh machine, leaving nothing behind.
"""

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import require_tool

CACHE_ROOT = Path("/var/lib/warpwatch-test-docker")
POOL_OCTETS = range(231, 251)
POOL_SUBNET_PREFIX = 24
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30
CACHE_ENV = "WARPWATCH_TEST_DOCKER_CACHE"
DEFAULT_NETWORKS = {"bridge", "host", "none"}


class Dockerd:
    """A running private engine: `host`/`env` to point a docker client (or docker-compose) at it,
    `run(args)` to call the docker CLI against it."""

    def __init__(self, proc: subprocess.Popen, run_dir: Path, data_root: Path, pool: str, log: Path):
        self.proc = proc
        self.pid = proc.pid
        self.run_dir = run_dir
        self.data_root = data_root
        self.pool = pool
        self.log = log
        self.socket = run_dir / "docker.sock"
        self.host = f"unix://{self.socket}"
        self.env = {**os.environ, "DOCKER_HOST": self.host}
        self.docker = require_tool("docker")

    def run(self, args, check: bool = True, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
        """`docker ARGS` against this engine; text output captured. A failure with check=True is a
        test failure quoting the command and its stderr."""
        proc = subprocess.run(
            [self.docker, *map(str, args)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            **kwargs,
        )
        if check and proc.returncode != 0:
            pytest.fail(
                f"docker {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr}{proc.stdout}",
                pytrace=False,
            )
        return proc

    def has_image(self, tag: str) -> bool:
        return self.run(["image", "inspect", tag], check=False).returncode == 0

    def import_image(self, tar: Path, tag: str, changes: tuple[str, ...] = ()) -> str:
        """`docker import` a root filesystem tarball as a local tag (the only way images get in)."""
        args = ["import"]
        for change in changes:
            args += ["--change", change]
        self.run([*args, tar, tag], timeout=600)
        return tag

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError as err:
            return f"(no daemon log: {err})"

    def remove_session_objects(self):
        """Remove every container, volume and user-defined network in the data root (it is this
        engine's alone, so whatever is there was made by this session or a crashed earlier one)."""
        containers = self.run(["ps", "-aq"]).stdout.split()
        if containers:
            self.run(["rm", "-f", "-v", *containers])
        volumes = self.run(["volume", "ls", "-q"]).stdout.split()
        if volumes:
            self.run(["volume", "rm", "-f", *volumes])
        networks = [
            n for n in self.run(["network", "ls", "--format", "{{.Name}}"]).stdout.split() if n not in DEFAULT_NETWORKS
        ]
        if networks:
            self.run(["network", "rm", *networks])


def host_networks() -> list:
    """Every IPv4 prefix the host routes or owns, to keep the pool clear of them."""
    ip = require_tool("ip")
    nets = []
    for args in (["-4", "-j", "route", "show", "table", "all"], ["-4", "-j", "addr", "show"]):
        out = subprocess.run([ip, *args], capture_output=True, text=True, check=True, timeout=10).stdout
        for entry in json.loads(out or "[]"):
            if "dst" in entry:
                if entry["dst"] != "default":
                    nets.append(ipaddress.ip_network(entry["dst"], strict=False))
            for addr in entry.get("addr_info", []):
                nets.append(ipaddress.ip_network(f"{addr['local']}/{addr['prefixlen']}", strict=False))
    return nets


def _claim_pool():
    """(pool, lock file object, data root) for the first free pool; the lock is held until the
    file is closed (by us and by the daemon that inherits it)."""
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    taken = []
    for octet in POOL_OCTETS:
        pool = ipaddress.ip_network(f"10.{octet}.0.0/16")
        lock = open(CACHE_ROOT / f"pool-{octet}.lock", "a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            taken.append(f"{pool} (locked by another engine)")
            continue
        clash = next((net for net in host_networks() if net.overlaps(pool)), None)
        if clash is not None:
            lock.close()
            taken.append(f"{pool} (host route {clash})")
            continue
        return str(pool), lock, CACHE_ROOT / f"pool-{octet}"
    pytest.fail(
        "no free address pool for a private dockerd:\n  " + "\n  ".join(taken)
        + f"\nstop a stale engine (its PID is in {CACHE_ROOT}/pool-*.lock) or free a route",
        pytrace=False,
    )


def _answers(docker: str, host: str) -> bool:
    proc = subprocess.run(
        [docker, "-H", host, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, timeout=15
    )
    return proc.returncode == 0 and proc.stdout.strip() != ""


def _stop_pid(pid: int, wait_exit, timeout: float):
    """SIGTERM, wait up to `timeout`, then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not wait_exit(timeout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_exit(10)


def _pid_gone(pid: int, timeout: float) -> bool:
    """Whether `pid` exits within `timeout`; a zombie (not our child, so not ours to reap) counts as gone."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.1)
    return False


@contextlib.contextmanager
def private_dockerd(netns: str | None = None):
    """Start a private dockerd, yield a Dockerd, stop it and clean up on exit. With `netns`, the
    daemon (and so every container it runs on the host's network) lives in that network
    namespace: a second Docker host on one machine (issue 18)."""
    binary = require_tool("dockerd")
    docker = require_tool("docker")
    if os.geteuid() != 0:
        pytest.fail("the private dockerd must run as root (run the suite as root, as CI does)", pytrace=False)
    pool, lock, data_root = _claim_pool()
    with lock:
        if os.environ.get(CACHE_ENV) == "drop" and data_root.exists():
            shutil.rmtree(data_root)
        run_dir = Path(tempfile.mkdtemp(prefix="wwd-"))
        (run_dir / "daemon.json").write_text("{}\n")
        log = run_dir / "dockerd.log"
        args = [
            # nsenter, not `ip netns exec`: that mounts a sysfs of the namespace's own over /sys,
            # hiding the cgroup file systems dockerd needs.
            *([require_tool("nsenter"), f"--net=/run/netns/{netns}"] if netns else []),
            binary,
            "--config-file", run_dir / "daemon.json",
            "--data-root", data_root,
            "--exec-root", run_dir / "exec",
            "--pidfile", run_dir / "dockerd.pid",
            "-H", f"unix://{run_dir / 'docker.sock'}",
            "--bridge=none",
            "--iptables=false",
            "--ip-forward=false",
            "--ip-masq=false",
            "--default-address-pool", f"base={pool},size={POOL_SUBNET_PREFIX}",
        ]  # fmt: skip
        with open(log, "wb") as log_file:
            proc = subprocess.Popen(
                list(map(str, args)),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                pass_fds=(lock.fileno(),),
                start_new_session=True,
            )
        lock.seek(0)
        lock.truncate()
        lock.write(f"{proc.pid}\n")
        lock.flush()
        engine = Dockerd(proc, run_dir, data_root, pool, log)
        try:
            end = time.monotonic() + START_TIMEOUT_S
            while not _answers(docker, engine.host):
                if proc.poll() is not None or time.monotonic() > end:
                    state = f"exited with {proc.returncode}" if proc.poll() is not None else f"not answering after {START_TIMEOUT_S}s"
                    pytest.fail(f"private dockerd {state}; last lines of {log}:\n{engine.log_tail()}", pytrace=False)
                time.sleep(0.2)
            engine.remove_session_objects()  # leftovers of a session that was killed
            yield engine
            engine.remove_session_objects()
        finally:
            _stop(engine)
            if os.environ.get(CACHE_ENV) == "drop":
                shutil.rmtree(data_root, ignore_errors=True)
            shutil.rmtree(run_dir, ignore_errors=True)


def _stop(engine: Dockerd):
    containerd_pid_file = engine.run_dir / "exec" / "containerd" / "containerd.pid"
    containerd_pid = None
    with contextlib.suppress(OSError, ValueError):
        containerd_pid = int(containerd_pid_file.read_text().strip())

    def dockerd_exited(timeout):
        try:
            engine.proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    _stop_pid(engine.pid, dockerd_exited, STOP_TIMEOUT_S)
    # dockerd stops its containerd on a clean exit; after a SIGKILL it would be left running.
    if containerd_pid is not None and not _pid_gone(containerd_pid, 5):
        _stop_pid(containerd_pid, lambda t: _pid_gone(containerd_pid, t), 10)


def busybox_image(engine: Dockerd) -> str:
    """A tiny local image (a static busybox as /bin/busybox, /bin/sh) for tests that need a
    container but no particular software; tagged by the binary's hash, imported when missing."""
    busybox = Path(require_tool("busybox"))
    data = busybox.read_bytes()
    if b"ld-linux" in data[:8192]:  # an ELF interpreter path: dynamically linked
        pytest.fail(f"{busybox} is not statically linked: apt-get install -y busybox-static", pytrace=False)
    tag = f"warpwatch-test/busybox:{hashlib.sha256(data).hexdigest()[:12]}"
    if engine.has_image(tag):
        return tag
    with tempfile.TemporaryDirectory() as tmp:
        tar_path = Path(tmp) / "rootfs.tar"
        with tarfile.open(tar_path, "w") as tar:
            tar.add(busybox, arcname="bin/busybox")
            link = tarfile.TarInfo("bin/sh")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
        return engine.import_image(tar_path, tag, changes=('CMD ["/bin/sh"]',))


@pytest.fixture(scope="session")
def dockerd():
    """The session's private Docker engine (see the module docstring)."""
    with private_dockerd() as engine:
        yield engine
