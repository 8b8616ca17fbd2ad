"""The healthcheck script of the mapping, run for real: the real warpwatch binary probes a real
warpwatch server; only systemctl is replaced by a recorder (no systemd to restart units here)."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests import spec
from tests.conftest import free_port, stop_process, wait_for
from tests.nixos.helpers import mapping, warpwatch_package

FAKE_SYSTEMCTL = """#!/bin/sh
echo "$*" >> "$FAKE_SYSTEMCTL_LOG"
case "$1" in
  is-active) exit "${FAKE_ACTIVE_RC:-0}" ;;
  show) echo "${FAKE_ACTIVE_ENTER_US:-0}" ;;
esac
"""


@pytest.fixture()
def rig(tmp_path: Path, warpwatch_bin: Path):
    port = free_port()
    package = warpwatch_package(tmp_path, warpwatch_bin)
    systemd = tmp_path / "systemd-pkg"
    (systemd / "bin").mkdir(parents=True)
    (systemd / "bin" / "systemctl").write_text(FAKE_SYSTEMCTL)
    (systemd / "bin" / "systemctl").chmod(0o755)
    # A 1 s probe timeout keeps the hung-service case quick; everything else is as declared.
    result = mapping(
        {"services": {"warpwatch": {"port": port}}, "healthcheck": {"timeoutSeconds": 1}},
        warpwatch=str(package),
        systemd=str(systemd),
    )
    script = tmp_path / "check.sh"
    script.write_text(result["service"]["systemd"]["services"]["warpwatch-health-warpwatch"]["script"])
    runtime = tmp_path / "run"
    runtime.mkdir()
    log = tmp_path / "systemctl.log"
    log.touch()

    class Rig:
        def __init__(self):
            self.port = port
            self.runtime = runtime
            self.log = log
            self.server = None

        def start_server(self):
            self.server = subprocess.Popen(
                [str(warpwatch_bin), "--addr", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "data")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            url = f"http://127.0.0.1:{port}/healthz"
            wait_for(
                "warpwatch to become healthy",
                lambda: subprocess.run([str(warpwatch_bin), "probe", url], capture_output=True).returncode == 0,
                deadline=20,
                processes=[self.server],
            )

        def run(self, **env) -> subprocess.CompletedProcess:
            full_env = dict(os.environ, RUNTIME_DIRECTORY=str(runtime), FAKE_SYSTEMCTL_LOG=str(log), **env)
            # NixOS runs `script` with `bash -e` semantics (set -e).
            return subprocess.run(["bash", "-e", str(script)], capture_output=True, text=True, env=full_env, timeout=30)

        def failures(self) -> str:
            return (runtime / "failures").read_text().strip()

        def restarts(self) -> list[str]:
            return [line for line in log.read_text().splitlines() if line.startswith("restart")]

    rig = Rig()
    yield rig
    if rig.server is not None:
        rig.server.send_signal(signal.SIGCONT)
        stop_process(rig.server)


def test_healthy_service_resets_the_counter(rig):
    rig.start_server()
    (rig.runtime / "failures").write_text("2\n")
    proc = rig.run()
    assert proc.returncode == 0, proc.stderr
    assert rig.failures() == "0"
    assert rig.restarts() == []


def test_restart_after_the_required_consecutive_failures(rig):
    retries = spec.HEALTHCHECK_RETRIES
    for attempt in range(1, retries + 1):
        proc = rig.run()
        assert proc.returncode == 0, proc.stderr
        assert f"<4>warpwatch healthcheck failed ({attempt}/{retries})" in proc.stdout
        if attempt < retries:
            assert rig.failures() == str(attempt)
            assert rig.restarts() == []
    # The event is logged (priority 3 in the journal) and the unit restarted; the count starts over.
    assert f"<3>warpwatch unhealthy after {retries} consecutive failed probes: restarting warpwatch.service" in proc.stdout
    assert rig.restarts() == ["restart --no-block warpwatch.service"]
    assert rig.failures() == "0"


def test_a_hung_service_counts_as_a_failure(rig):
    rig.start_server()
    rig.server.send_signal(signal.SIGSTOP)
    started = time.monotonic()
    proc = rig.run()
    assert proc.returncode == 0, proc.stderr
    assert rig.failures() == "1"
    # The probe gave up after the timeout passed on its command line, it did not hang.
    assert time.monotonic() - started < 10
    assert "healthcheck failed (1/" in proc.stdout


def test_one_success_between_failures_starts_the_count_over(rig):
    rig.run()
    rig.run()
    assert rig.failures() == "2"
    rig.start_server()
    rig.run()
    assert rig.failures() == "0"


def test_failures_during_the_start_period_do_not_count(rig):
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    proc = rig.run(FAKE_ACTIVE_ENTER_US=str(int(uptime * 1_000_000)))
    assert proc.returncode == 0
    assert not (rig.runtime / "failures").exists()
    assert "probe" not in proc.stdout


def test_a_stopped_unit_is_left_alone(rig):
    proc = rig.run(FAKE_ACTIVE_RC="3")
    assert proc.returncode == 0
    assert rig.failures() == "0"
    assert rig.restarts() == []
