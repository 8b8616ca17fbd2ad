"""The NixOS units of the service, rendered from the offline mapping as NixOS writes them, run
under a real systemd (Debian bookworm's, as PID 1 of a container on the tests' private dockerd)
with the real warpwatch binary at the store path the unit names.

One container serves the whole module (booting it costs seconds); tests that change its state
(restarts, a reboot, shortened healthcheck timings, a frozen service) run last, in file order.
"""

import json
import re

import pytest

from tests import spec
from tests.conftest import ROOT
from tests.systemd.helpers import Machine, service_mapping

UNIT = "warpwatch.service"
HEALTH = "warpwatch-health-warpwatch"
URL = f"http://{spec.LOOPBACK}:{spec.PORTS['warpwatch']}"
# Seconds instead of the declared 30 s / 10 s / 5 s, through the same overrides an operator uses.
FAST_HEALTHCHECK = {
    "healthcheck": {"intervalSeconds": 1, "timeoutSeconds": 1},
    "services": {"warpwatch": {"startPeriodSeconds": 1}},
}


@pytest.fixture(scope="module")
def declared():
    return service_mapping()


def readme_log_command() -> str:
    """The command the README's NixOS section gives an operator for the service's own lines."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("<!-- section:nixos -->") : readme.index("<!-- /section:nixos -->")]
    commands = set(re.findall(r"`(journalctl [^`]*-u warpwatch)`", section))
    assert len(commands) == 1, f"README's NixOS section should name one `journalctl ... -u warpwatch`, names {commands}"
    return commands.pop()


@pytest.fixture(scope="module")
def machine(dockerd, warpwatch_bin, tmp_path_factory, declared):
    # The journal without -u: lines of a process that dies at once may miss their unit field.
    diagnostics = (f"systemctl status --no-pager {UNIT}", "journalctl -b -n 15 --no-pager")
    box = Machine(dockerd, tmp_path_factory.mktemp("systemd"), warpwatch_bin, diagnostics)
    box.install(declared)
    box.boot()
    yield box
    dockerd.run(["rm", "-f", box.name])


def serving(box: Machine, what: str = "warpwatch to answer /healthz"):
    """Wait for the service (cheap when it is up); tests that need it running start with it, so a
    service that cannot start fails them, with its status and last log lines."""
    box.wait(what, lambda: healthz(box) == "200")


def unit_config(result: dict) -> dict:
    return result["systemd"]["services"]["warpwatch"]["serviceConfig"]


def healthz(box: Machine) -> str:
    return box.sh(f"curl -s -o /dev/null -w '%{{http_code}}' {URL}/healthz", check=False).stdout


def visits(box: Machine) -> int:
    return json.loads(box.sh(f"curl -sf {URL}/visits").stdout)["visits"]


def visit(box: Machine, times: int):
    """`times` GET / in a row; fails unless every one is acknowledged with 200."""
    box.sh(f"for i in $(seq {times}); do curl -sf -o /dev/null {URL}/ || exit 1; done")


def main_pid(box: Machine) -> int:
    return int(box.show(UNIT, "MainPID"))


def proc_status(box: Machine, pid: int) -> dict[str, str]:
    lines = box.sh(f"cat /proc/{pid}/status").stdout.splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def open_files_limits(value) -> tuple[int, int]:
    """LimitNOFILE= as (soft, hard): a single value sets both."""
    parts = str(value).split(":")
    return int(parts[0]), int(parts[-1])


def open_files(box: Machine, pid: int) -> tuple[int, int]:
    limits = box.sh(f"cat /proc/{pid}/limits").stdout
    soft, hard = re.search(r"^Max open files\s+(\d+)\s+(\d+)", limits, re.M).groups()
    return int(soft), int(hard)


def test_systemd_analyze_verify_is_clean(machine, declared):
    units = sorted(p for p in machine.render(declared) if p.startswith("systemd/system/"))
    assert units, "the mapping rendered no units"
    proc = machine.sh("systemd-analyze verify " + " ".join(f"/etc/{u}" for u in units) + " 2>&1", check=False)
    assert (proc.returncode, proc.stdout) == (0, ""), f"systemd-analyze verify:\n{proc.stdout}"


def test_the_contributing_guide_names_the_systemd_that_ran_them(machine):
    major = re.match(r"systemd (\d+) ", machine.sh("systemctl --version").stdout).group(1)
    assert f"**systemd {major}**" in (ROOT / "CONTRIBUTING.md").read_text()


def test_active_under_every_hardening_directive_and_serving(machine, declared):
    serving(machine)
    config = unit_config(declared)
    assert machine.show(UNIT, "ActiveState") == "active"
    # What systemd loaded is what the mapping declared (an unknown or dropped key would differ).
    shown = machine.sh(f"systemctl show {UNIT}").stdout
    for key in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices",
                "PrivateUsers", "DynamicUser", "MemoryDenyWriteExecute", "RestrictNamespaces",
                "LockPersonality", "ProtectProc", "ProcSubset", "UMask"):  # fmt: skip
        if key in config:
            want = {True: "yes", False: "no"}.get(config[key], config[key])
            assert f"\n{key}={want}\n" in shown, f"{key}: declared {config[key]!r}, systemd has {re.findall(rf'^{key}=.*$', shown, re.M)}"
    # ... and the kernel enforces it on the running process.
    pid = main_pid(machine)
    status = proc_status(machine, pid)
    if config.get("NoNewPrivileges"):
        assert status["NoNewPrivs"] == "1"
    if "SystemCallFilter" in config or config.get("MemoryDenyWriteExecute"):
        assert status["Seccomp"] == "2", "no seccomp filter on the service"
    if config.get("CapabilityBoundingSet") == "":
        assert int(status["CapBnd"], 16) == 0 and int(status["CapEff"], 16) == 0
    if config.get("DynamicUser"):
        uid = int(status["Uid"].split()[0])
        assert 61184 <= uid <= 65519, f"not a dynamic user: uid {uid}"
    mounts = machine.sh(f"cat /proc/{pid}/mountinfo").stdout.splitlines()
    root_options = next(line.split()[5] for line in mounts if line.split()[4] == "/")
    if config.get("ProtectSystem") == "strict":
        assert root_options.split(",")[0] == "ro", f"/ is {root_options} for the service"
    if config.get("PrivateTmp"):
        assert any(line.split()[4] == "/tmp" for line in mounts), "no private /tmp"
    if config.get("PrivateUsers"):
        assert machine.sh(f"cat /proc/{pid}/uid_map").stdout.split() != ["0", "0", "4294967295"]

    assert healthz(machine) == "200"
    metrics = machine.sh(f"curl -sf {URL}/metrics").stdout
    assert "# TYPE http_requests_total counter" in metrics and "warpwatch_visits_total" in metrics


def test_memory_max_and_open_files_limit_as_declared(machine, declared):
    serving(machine)
    config = unit_config(declared)
    limit = spec.MEMORY_MIB["warpwatch"] * spec.MIB
    assert machine.show(UNIT, "MemoryMax") == str(limit)
    # The limit the kernel holds for the service's cgroup (cgroup v1 memory controller here).
    pid = main_pid(machine)
    cgroup = next(line.split(":", 2)[2] for line in machine.sh(f"cat /proc/{pid}/cgroup").stdout.splitlines()
                  if line.split(":")[1] == "memory")  # fmt: skip
    assert machine.sh(f"cat /sys/fs/cgroup/memory{cgroup}/memory.limit_in_bytes").stdout.strip() == str(limit)

    # LimitNOFILE: declared in the unit NixOS writes and loaded by systemd as declared...
    assert "LimitNOFILE" in config, "the mapping sets no LimitNOFILE: systemd's soft limit of 1024 is the service's"
    soft, hard = open_files_limits(config["LimitNOFILE"])
    assert f"\nLimitNOFILE={config['LimitNOFILE']}\n" in machine.render(declared)["systemd/system/warpwatch.service"]
    assert (int(machine.show(UNIT, "LimitNOFILESoft")), int(machine.show(UNIT, "LimitNOFILE"))) == (soft, hard)
    # ... and applied to the process, as far as the machine allows: without CAP_SYS_RESOURCE no
    # process may raise its hard limit above the one it has, so systemd (its setrlimit_closest)
    # lowers both to PID 1's hard limit, the machine's. On a host whose limit is higher, the
    # process gets exactly the declared value.
    ceiling = open_files(machine, 1)[1]
    assert open_files(machine, pid) == (min(soft, ceiling), min(hard, ceiling))


def test_log_lines_visible_the_way_the_readme_says(machine):
    serving(machine)
    command = readme_log_command()
    out = machine.sh(f"{command} --no-pager -o cat").stdout
    assert f"listening on {URL}" in out, f"`{command}` shows no start line of the service:\n{out[-2000:]}"


def journal_files(box: Machine) -> dict[str, int]:
    """{journal file: its size} of the persistent system journal. journald may rotate a file
    between the listing and its stat (the active system.journal is renamed): that file is left
    out of this listing, not an error."""
    out = box.sh("for f in /var/log/journal/*/*.journal; do stat -c '%n %s' \"$f\" 2>/dev/null; done; true").stdout
    return {name: int(size) for name, size in (line.rsplit(" ", 1) for line in out.splitlines())}


def test_the_journal_limits_the_mapping_writes_are_in_effect(machine, declared):
    serving(machine)
    assert "systemd/journald.conf" in machine.render(declared), "the mapping sets no services.journald: nothing bounds the journal"
    # The total cap: journald reports the limit it applies when it opens the persistent journal.
    cap = f"max {float(spec.LOG_FILE_MIB * spec.LOG_FILES * len(spec.SERVICES)):.1f}M"  # journald's size format
    out = machine.sh("journalctl -b --no-pager -o cat _COMM=systemd-journal").stdout
    assert re.search(rf"System Journal \(/var/log/journal/\S+\) is .*, {re.escape(cap)}", out), out
    # The file size: twice a file's worth of random bytes, as base64 lines (which journald's
    # compression brings back to about the random bytes' size), ends up in files of at most that.
    before = journal_files(machine)
    machine.sh(f"head -c {2 * spec.LOG_FILE_MIB}M /dev/urandom | base64 -w 40000 | systemd-cat -t journal-fill")
    machine.wait("journald to rotate the system journal", lambda: set(journal_files(machine)) - set(before))
    sizes = journal_files(machine)
    assert sum(sizes.values()) - sum(before.values()) > spec.LOG_FILE_MIB * spec.MIB, sizes
    assert max(sizes.values()) <= spec.LOG_FILE_MIB * spec.MIB, sizes


def test_visits_persist_across_systemctl_restart(machine):
    serving(machine)
    visit(machine, 3)
    before = visits(machine)
    machine.sh(f"systemctl restart {UNIT}")
    serving(machine, "warpwatch back after restart")
    assert visits(machine) == before


def test_sigterm_from_systemctl_stop_persists_every_acknowledged_visit(machine, declared):
    serving(machine)
    before = visits(machine)
    # The burst and the stop in one shell: the final write on SIGTERM, not the periodic flush,
    # has to carry the last visits.
    machine.sh(f"for i in $(seq 200); do curl -sf -o /dev/null {URL}/ || exit 1; done; systemctl stop {UNIT}")
    data_dir = declared["systemd"]["services"]["warpwatch"]["environment"]["WARPWATCH_DATA_DIR"]
    # DynamicUser keeps the state under /var/lib/private, /var/lib/<name> links to it.
    assert machine.sh(f"cat {data_dir}/visits").stdout.strip() == str(before + 200)
    assert machine.show(UNIT, "Result") == "success"
    machine.sh(f"systemctl start {UNIT}")
    serving(machine, "warpwatch back after start")
    assert visits(machine) == before + 200


def test_visits_persist_across_a_container_restart(machine):
    serving(machine)
    visit(machine, 2)
    before = visits(machine)
    machine.reboot()
    serving(machine, "warpwatch up after the reboot")
    assert machine.show(UNIT, "ActiveState") == "active"
    assert visits(machine) == before


@pytest.fixture(scope="module")
def fast_healthcheck(machine):
    result = service_mapping(FAST_HEALTHCHECK)
    machine.install(result)
    machine.sh(f"systemctl restart {HEALTH}.timer")
    return result


def journal_cursor(box: Machine) -> str:
    return json.loads(box.sh("journalctl -n 1 -o json --no-pager").stdout)["__CURSOR"]


def events_since(box: Machine, cursor: str) -> list[dict]:
    out = box.sh(f"journalctl --after-cursor='{cursor}' -o json --no-pager").stdout
    return [json.loads(line) for line in out.splitlines()]


def health_runs(events) -> int:
    return sum(1 for e in events if e.get("UNIT") == f"{HEALTH}.service" and e.get("JOB_RESULT") == "done")


def test_a_healthy_service_is_never_restarted(machine, fast_healthcheck):
    serving(machine)
    retries = spec.HEALTHCHECK_RETRIES
    cursor, pid, restarts = journal_cursor(machine), main_pid(machine), machine.show(UNIT, "NRestarts")
    machine.wait(f"{2 * retries} healthcheck runs", lambda: health_runs(events_since(machine, cursor)) >= 2 * retries)
    events = events_since(machine, cursor)
    # A lone slow probe on a loaded machine may be logged; a restart must never follow.
    said = [(int(e["PRIORITY"]), e["MESSAGE"]) for e in events if e.get("_SYSTEMD_UNIT") == f"{HEALTH}.service"]
    assert not [m for p, m in said if p <= 3], said
    assert not [e for e in events if e.get("UNIT") == UNIT and e.get("MESSAGE", "").startswith("Stopping")]
    assert (main_pid(machine), machine.show(UNIT, "NRestarts")) == (pid, restarts)


def test_a_frozen_service_is_restarted_after_exactly_retries_failures(machine, fast_healthcheck):
    serving(machine)
    retries = spec.HEALTHCHECK_RETRIES
    pid = main_pid(machine)
    cursor = journal_cursor(machine)
    machine.sh(f"kill -STOP {pid}")
    machine.wait("the healthcheck to restart the frozen service", lambda: main_pid(machine) not in (0, pid), deadline=60)
    serving(machine, "warpwatch healthy again")

    events = events_since(machine, cursor)
    story = []
    for e in events:
        if e.get("_SYSTEMD_UNIT") == f"{HEALTH}.service":
            story.append((int(e["PRIORITY"]), e["MESSAGE"]))
        elif e.get("UNIT") == UNIT and e.get("MESSAGE", "").startswith("Stopping"):
            story.append(("stop", e["MESSAGE"]))
    failures = [(4, m) for p, m in story if p == 4]
    assert [m.split(":")[0] for _, m in failures[:retries]] == [
        f"warpwatch healthcheck failed ({n}/{retries})" for n in range(1, retries + 1)
    ], story
    first_stop = next(i for i, (p, _) in enumerate(story) if p == "stop")
    assert story[first_stop - 1] == (3, f"warpwatch unhealthy after {retries} consecutive failed probes: restarting {UNIT}"), story
    assert sum(1 for p, _ in story[:first_stop] if p == 4) == retries, story
