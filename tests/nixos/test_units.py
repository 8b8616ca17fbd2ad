"""The unit renderer's own rules (units.py), on small attrsets whose NixOS rendering is known
from nixos/lib/systemd-lib.nix: what the container test installs is only as faithful as this."""

from tests.nixos.units import Store, plain, render_journald, render_service, render_system, render_timer, wants_links

PACKAGES = {p: f"/nix/store/{p}" for p in ("coreutils", "findutils", "gnugrep", "gnused", "systemd")}
BASH = "/nix/store/bash"


def test_priority_wrappers_are_stripped():
    mk_default = {"_type": "override", "priority": 1000, "content": "2s"}
    value = {
        "RestartSec": mk_default,
        "LimitNOFILE": {"_type": "if", "condition": False, "content": 4096},
        "MemoryMax": {"_type": "if", "condition": True, "content": mk_default},
        "SystemCallFilter": {"_type": "merge", "contents": [["@system-service"], ["~@privileged"]]},
    }
    assert plain(value) == {"RestartSec": "2s", "MemoryMax": "2s", "SystemCallFilter": ["@system-service", "~@privileged"]}


def test_a_service_as_nixos_writes_it(tmp_path):
    unit = {
        "description": "demo",
        "after": ["network.target", "loki.service"],
        "wantedBy": ["multi-user.target"],
        "environment": {"B": "x y", "A": 'say "hi"'},
        "serviceConfig": {"Restart": "always", "NoNewPrivileges": True, "RestrictAddressFamilies": ["AF_INET", "AF_INET6"], "TimeoutSec": 5},
    }
    path = ":".join([f"/nix/store/{p}/bin" for p in PACKAGES] + [f"/nix/store/{p}/sbin" for p in PACKAGES])
    assert render_service("demo", unit, Store(tmp_path), PACKAGES, BASH) == (
        "[Unit]\nAfter=network.target loki.service\nDescription=demo\n\n"
        '[Service]\nEnvironment="A=say \\"hi\\""\nEnvironment="B=x y"\n'
        f'Environment="PATH={path}"\n'
        "NoNewPrivileges=true\nRestart=always\nRestrictAddressFamilies=AF_INET\nRestrictAddressFamilies=AF_INET6\nTimeoutSec=5\n"
        "\n[Install]\nWantedBy=multi-user.target\n"
    )


def test_a_script_becomes_a_bash_program_in_the_store(tmp_path):
    store = Store(tmp_path)
    text = render_service("check@x", {"script": "echo hi\n"}, store, PACKAGES, BASH)
    exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    program = exec_start.removeprefix("ExecStart=")
    assert program.endswith("-unit-script-check_x-start/bin/check_x-start "), "scriptArgs (empty) follow a space"
    on_disk = tmp_path / program.strip().removeprefix("/nix/store/")
    assert on_disk.read_text() == f"#!{BASH}/bin/bash\nset -e\n\necho hi\n"
    assert on_disk.stat().st_mode & 0o111


def test_a_timer_and_its_wants_link(tmp_path):
    timer = {"description": "every 30s", "wantedBy": ["timers.target"], "timerConfig": {"OnUnitActiveSec": "30s"}}
    assert render_timer("t", timer, Store(tmp_path)) == (
        "[Unit]\nDescription=every 30s\n\n[Timer]\nOnUnitActiveSec=30s\n\n\n[Install]\nWantedBy=timers.target\n"
    )
    result = {"systemd": {"timers": {"t": timer}, "services": {"s": {"wantedBy": ["multi-user.target"]}}}}
    assert wants_links(result) == {"timers.target.wants/t.timer": "../t.timer", "multi-user.target.wants/s.service": "../s.service"}


def test_journald_conf_as_nixos_writes_it(tmp_path):
    # services.journald.extraConfig follows NixOS' own [Journal] lines; the console and syslog
    # lines, off by default, leave their empty lines.
    result = {"services": {"journald": {"extraConfig": {"_type": "override", "priority": 1000, "content": "SystemMaxUse=1M\n"}}}}
    assert render_system(result, Store(tmp_path), PACKAGES, BASH) == {
        "systemd/journald.conf": "[Journal]\nStorage=persistent\nRateLimitInterval=30s\nRateLimitBurst=10000\n\n\nAudit=keep\nSystemMaxUse=1M\n\n"
    }
    assert render_journald({"console": "/dev/tty1", "forwardToSyslog": True, "audit": True}) == (
        "[Journal]\nStorage=persistent\nRateLimitInterval=30s\nRateLimitBurst=10000\n"
        "ForwardToConsole=yes\nTTYPath=/dev/tty1\n\nForwardToSyslog=yes\n\nAudit=true\n\n"
    )
