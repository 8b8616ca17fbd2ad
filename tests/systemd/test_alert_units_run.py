"""Issue 17: the Alertmanager and node exporter units of the NixOS mapping, run under a real systemd
(Debian bookworm's, PID 1 of a container on the tests' private dockerd, like test_units_run.py).

Each unit is what NixOS would write: nixpkgs' own part (nixos/tests/nixos/nixpkgs_units.py, copied
from alertmanager.nix and exporters.nix + exporters/node.nix) merged with the mapping's
(sandbox defaults, MemoryMax, LoadCredential), the configuration the mapping hands nixpkgs'
module as its store file. The store paths hold Debian's real programs: prometheus-alertmanager,
prometheus-node-exporter, GNU envsubst (gettext-base, behind a wrapper taking the flags of the
envsubst nixpkgs uses) and a static busybox for the test's webhook receiver (tests/webhook.py), a
unit of its own on loopback.
"""

import json
import shutil
import time
from pathlib import Path

import pytest

from tests import spec
from tests.conftest import require_tool
from tests.nixos.helpers import mapping, mapping_raw
from tests.nixos.nixpkgs_units import alertmanager_unit, merge_unit, node_exporter_unit
from tests.systemd.helpers import Machine
from tests.webhook import CGI_PATH, Notifications, cgi

HOOK_PORT = 8099
HOOK_HOME = "/var/lib/alert-hook/www"
HOOK_DATA = "/var/lib/alert-hook/data"
SMTP_PASSWORD = "/etc/warpwatch-test/smtp-password"
OVERRIDES = {
    "alerts": {
        "receivers": {
            "test": {"webhook": {"url": f"http://127.0.0.1:{HOOK_PORT}{CGI_PATH}"}},
            # Never reached; its password file shows the credential path.
            "mail": {
                "email": {
                    "smarthost": "127.0.0.1:2525",
                    "from": "alerts@example.org",
                    "to": "ops@example.org",
                    "authUsername": "alerts",
                    "authPasswordFile": SMTP_PASSWORD,
                }
            },
        },
        "defaultReceiver": "test",
        "groupWaitSeconds": 1,
    }
}
# Debian's Alertmanager loads its default templates from here (upstream's binary embeds them).
DEBIAN_TEMPLATES = Path("/usr/share/prometheus/alertmanager")


def store_program(box: Machine, name: str, program: str, source: str) -> str:
    """A copy of a host program as <store>/<hash>-name/bin/<program>; its store path."""
    binary = Path(require_tool(source)).resolve()
    path = box.store.add(name, f"bin/{program}", "", mode=0o555)
    target = box.store.directory / Path(path).relative_to("/nix/store")
    target.chmod(0o755)
    shutil.copyfile(binary, target)
    target.chmod(0o555)
    return path.rsplit("/bin/", 1)[0]


def envsubst_package(box: Machine) -> str:
    """nixpkgs' envsubst (a8m/envsubst: `-i IN -o OUT`) has no Debian package: GNU envsubst
    (gettext-base) behind a wrapper taking those flags. The configuration holds no `$` (tests/nixos
    checks it), so the two substitute it alike: not at all."""
    gnu = store_program(box, "gnu-envsubst", "envsubst", "envsubst")
    wrapper = (
        "#!/bin/sh\n# nixpkgs' envsubst flags, for GNU envsubst: -o OUT -i IN\n"
        'while [ $# -gt 0 ]; do case "$1" in -o) out=$2; shift 2 ;; -i) in=$2; shift 2 ;; *) exit 2 ;; esac; done\n'
        f'exec {gnu}/bin/envsubst <"$in" >"$out"\n'
    )
    return box.store.add("envsubst", "bin/envsubst", wrapper, mode=0o555).rsplit("/bin/", 1)[0]


@pytest.fixture(scope="module")
def box(dockerd, warpwatch_bin, tmp_path_factory):
    machine = Machine(
        dockerd,
        tmp_path_factory.mktemp("alert-units"),
        warpwatch_bin,
        diagnostics=("systemctl status --no-pager alertmanager prometheus-node-exporter alert-hook", "journalctl -b -n 30 --no-pager"),
    )
    alertmanager = store_program(machine, "prometheus-alertmanager", "alertmanager", "prometheus-alertmanager")
    node_exporter = store_program(machine, "prometheus-node-exporter", "node_exporter", "prometheus-node-exporter")
    envsubst = envsubst_package(machine)
    busybox = store_program(machine, "busybox", "busybox", "busybox")

    result = mapping(OVERRIDES)["monitoring"]
    raw = mapping_raw(OVERRIDES)["monitoring"]
    options = result["services"]["prometheus"]
    # nixpkgs writes `configuration` as JSON into the store (amtool checks it at build time).
    config_file = machine.store.add("alertmanager.yml", "alertmanager.yml", json.dumps(options["alertmanager"]["configuration"]))
    am = alertmanager_unit(options["alertmanager"], alertmanager, envsubst, config_file)
    am["serviceConfig"] = merge_unit(am["serviceConfig"], raw["systemd"]["services"]["alertmanager"]["serviceConfig"])
    ne = node_exporter_unit(options["exporters"]["node"], node_exporter)
    ne["serviceConfig"] = merge_unit(ne["serviceConfig"], raw["systemd"]["services"]["prometheus-node-exporter"]["serviceConfig"])
    hook = {
        "wantedBy": ["multi-user.target"],
        "serviceConfig": {"ExecStart": f"{busybox}/bin/busybox httpd -f -p 127.0.0.1:{HOOK_PORT} -h {HOOK_HOME}"},
    }
    machine.install({"systemd": {"services": {"alertmanager": am, "prometheus-node-exporter": ne, "alert-hook": hook}}})
    # What the rest of NixOS would provide before the units start: the exporter's system user,
    # a root-only secret file; and Debian's templates, the receiver's CGI (run by busybox's sh).
    setup = machine.work / "setup"
    for name in ("passwd", "group"):
        dockerd.run(["cp", f"{machine.name}:/etc/{name}", str(machine.work / name)])
    with open(machine.work / "passwd", "a") as passwd:
        passwd.write("node-exporter:x:990:990:node exporter:/var/empty:/usr/sbin/nologin\n")
    with open(machine.work / "group", "a") as group:
        group.write("node-exporter:x:990:\n")
    (setup / "etc").mkdir(parents=True)
    for name in ("passwd", "group"):
        shutil.copyfile(machine.work / name, setup / "etc" / name)
        (setup / "etc" / name).chmod(0o644)
    secret = setup / SMTP_PASSWORD.lstrip("/")
    secret.parent.mkdir(parents=True)
    secret.write_text("smtp-secret-0400\n")
    secret.chmod(0o400)
    cgi_file = setup / HOOK_HOME.lstrip("/") / "cgi-bin" / "hook"
    cgi_file.parent.mkdir(parents=True)
    cgi_file.write_text(cgi(HOOK_DATA).replace("#!/bin/sh", f"#!{busybox}/bin/busybox sh", 1))
    cgi_file.chmod(0o755)
    (setup / HOOK_DATA.lstrip("/")).mkdir(parents=True)
    templates = setup / DEBIAN_TEMPLATES.relative_to("/")
    templates.parent.mkdir(parents=True)
    shutil.copytree(DEBIAN_TEMPLATES, templates, symlinks=True)
    dockerd.run(["cp", f"{setup}/.", f"{machine.name}:/"])
    machine.boot()
    yield machine
    dockerd.run(["rm", "-f", machine.name])


def active(box: Machine, unit: str) -> bool:
    return box.sh(f"systemctl is-active {unit}", check=False).stdout.strip() == "active"


def test_both_units_run_with_the_declared_memory_and_sandbox(box):
    for unit, name in (("alertmanager", "alertmanager"), ("prometheus-node-exporter", "node-exporter")):
        box.wait(f"{unit} active", lambda u=unit: active(box, u))
        assert box.show(unit, "MemoryMax") == str(spec.MEMORY_MIB[name] * spec.MIB), unit
        assert box.show(unit, "NoNewPrivileges") == "yes", unit
        assert box.show(unit, "CapabilityBoundingSet") == "", unit
    box.wait("alertmanager healthy", lambda: box.sh(f"curl -sf http://127.0.0.1:{spec.PORTS['alertmanager']}/-/healthy", check=False).returncode == 0)
    # No gossip listener: only the API port.
    listening = box.sh("cat /proc/net/tcp /proc/net/tcp6").stdout
    assert f":{spec.PORTS['alertmanager']:04X} " in listening and ":2386 " not in listening  # 9094 = 0x2386


def failed_collectors(metrics: str) -> set[str]:
    return {
        line.split('"')[1]
        for line in metrics.splitlines()
        if line.startswith("node_scrape_collector_success{") and line.endswith(" 0")
    }


def test_node_exporter_serves_the_machine_on_loopback_as_its_user(box):
    box.wait("node exporter metrics", lambda: box.sh(f"curl -sf http://127.0.0.1:{spec.PORTS['node-exporter']}/metrics", check=False).returncode == 0)
    metrics = box.sh(f"curl -sf http://127.0.0.1:{spec.PORTS['node-exporter']}/metrics").stdout
    for name in ("node_cpu_seconds_total", "node_memory_MemAvailable_bytes", "node_filesystem_avail_bytes", "node_load1", "node_timex_offset_seconds"):
        assert f"\n{name}" in metrics, name
    # The sandbox costs no collector: the same ones fail (no such hardware here) as for the same
    # binary run outside the unit as root (timex needed adjtimex: issue 17).
    exec_start = box.show("prometheus-node-exporter", "ExecStart")
    binary = exec_start.split("path=", 1)[1].split(" ", 1)[0].rstrip(";")
    plain = box.sh(
        f"{binary} --web.listen-address=127.0.0.1:9199 >/dev/null 2>&1 & pid=$!; "
        "for i in $(seq 50); do curl -sf http://127.0.0.1:9199/metrics && break; sleep 0.1; done; kill $pid"
    ).stdout
    # Debian's build turns the systemd collector on by default (upstream's and nixpkgs' leave it
    # off; nixpkgs' node.nix allows AF_UNIX for it when it is enabled): not part of the comparison.
    sandboxed, unconfined = failed_collectors(metrics) - {"systemd"}, failed_collectors(plain) - {"systemd"}
    assert sandboxed == unconfined, (sandboxed, unconfined)
    assert "timex" not in failed_collectors(metrics)
    pid = box.show("prometheus-node-exporter", "MainPID")
    assert box.sh(f"stat -c %U /proc/{pid}").stdout.strip() == "node-exporter"


def test_the_smtp_password_is_a_credential_of_the_unit(box):
    """The unit loads the file as a credential and the configuration names the credential, never
    the file's content. What this container cannot show is the content arriving: its systemd 252
    mounts every unit's credentials directory but leaves it empty (measured: even a bare
    `systemd-run -p SetCredential=x:hello` finds no x), so the VM test (nix/tests/vm.nix) is where
    a credential's content is used (the webhook URL it delivers through url_file)."""
    credential_dir = "/run/credentials/alertmanager.service"
    unit = box.sh("systemctl cat alertmanager.service").stdout
    assert f"LoadCredential=alertmanager-mail-smtp-password:{SMTP_PASSWORD}" in unit
    pid = box.show("alertmanager", "MainPID")
    environ = box.sh(f"tr '\\0' '\\n' < /proc/{pid}/environ").stdout.splitlines()
    assert f"CREDENTIALS_DIRECTORY={credential_dir}" in environ
    config = box.sh("cat /nix/store/*-alertmanager.yml/alertmanager.yml").stdout
    assert "smtp-secret" not in config and f"{credential_dir}/alertmanager-mail-smtp-password" in config


def test_an_alert_reaches_the_webhook_through_the_unit(box):
    box.wait("the webhook receiver", lambda: active(box, "alert-hook"))
    alert = [{"labels": {"alertname": "TargetDown", "service": "warpwatch", "job": "warpwatch", "severity": "page"}}]
    posted = time.monotonic()
    box.sh(
        f"curl -sf -H 'Content-Type: application/json' -d '{json.dumps(alert)}' "
        f"http://127.0.0.1:{spec.PORTS['alertmanager']}/api/v2/alerts"
    )

    def stored():
        out = box.sh(f"for f in {HOOK_DATA}/hook.*.json; do [ -e \"$f\" ] && printf '%s\\t' \"${{f##*/}}\" && cat \"$f\" && echo; done", check=False).stdout
        return dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)

    hook = Notifications(stored)
    seen, body = hook.wait("the notification", "TargetDown", "firing", posted - 1, 30, service="warpwatch")
    print(f"\nalert posted to the Alertmanager unit reached the webhook unit after {seen - posted:.1f}s")
    assert body["receiver"] == "test" and body["groupLabels"] == {"alertname": "TargetDown", "service": "warpwatch"}
