"""Alertmanager renderings (issue 17): every rendered configuration passes Debian's `amtool
check-config`, every declared route is proven with `amtool config routes test`, the inhibition is
proven on Debian's real Alertmanager, and bad receiver declarations fail evaluation naming the
field and the fix."""

import contextlib
import http.server
import json
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import free_port, nix_eval, nix_eval_error, require_tool, stop_process, wait_for
from tests.stack.helpers import render_compose, stack_expr

# Receivers as a user declares them (the secret files need not exist to render).
WEBHOOK_FILE = '{ webhook.urlFile = "/run/keys/oncall-url"; }'
MAIL = (
    '{ email = { smarthost = "smtp.example.org:587"; from = "alerts@example.org"; to = "ops@example.org"; '
    'authUsername = "alerts"; authPasswordFile = "/run/keys/smtp-password"; }; }'
)
HOOK = '{ webhook.url = "http://hooks.internal:8000/alerts"; }'

CASES = {
    "none": "{ }",
    "one-webhook": f"{{ alerts.receivers.oncall = {WEBHOOK_FILE}; }}",
    "plain-webhook": f"{{ alerts.receivers.hook = {HOOK}; }}",
    "mail-without-login": (
        '{ alerts.receivers.mail.email = { smarthost = "mail:25"; from = "a@example.org"; to = "b@example.org"; '
        "requireTls = false; }; }"
    ),
    "paging": (
        f"{{ alerts = {{ receivers = {{ mail = {MAIL}; oncall = {WEBHOOK_FILE}; hook = {HOOK}; }}; "
        'defaultReceiver = "mail"; pagingReceiver = "oncall"; '
        'routes = [ { service = "loki"; receiver = "hook"; } { severity = "ticket"; service = "grafana"; receiver = "hook"; } ]; }; }'
    ),
}


def rendered(overrides: str, target: str = "compose") -> str:
    return nix_eval(stack_expr(f's.toYAML (s.configs.alertmanager {{ target = "{target}"; }})', overrides))


def for_debian_amtool(text: str) -> str:
    """Debian's amtool is Alertmanager 0.25, which predates the webhook's `url_file` (newer
    Alertmanager reads the URL from that file at send time). It checks everything else as rendered;
    the one field it cannot know is handed to it as the `url` the file would hold."""
    config = yaml.safe_load(text)
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            if "url_file" in hook:
                assert hook["url_file"].startswith(("/run/secrets/", "/run/credentials/alertmanager.service/"))
                del hook["url_file"]
                hook["url"] = "https://hooks.example.org/services/T0/B0/token"
    return yaml.safe_dump(config)


def amtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([require_tool("amtool"), *args], capture_output=True, text=True, timeout=60)


def write_config(tmp_path: Path, overrides: str, target: str = "compose") -> Path:
    path = tmp_path / f"alertmanager-{target}.yml"
    path.write_text(for_debian_amtool(rendered(overrides, target)))
    return path


@pytest.mark.parametrize("target", ["compose", "host"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_amtool_check_config_accepts_every_rendering(tmp_path, case, target):
    proc = amtool("check-config", str(write_config(tmp_path, CASES[case], target)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_amtool_check_config_would_catch_a_defect(tmp_path):
    config = yaml.safe_load(for_debian_amtool(rendered(CASES["paging"])))
    config["route"]["routes"][0]["receiver"] = "nobody"
    path = tmp_path / "bad.yml"
    path.write_text(yaml.safe_dump(config))
    proc = amtool("check-config", str(path))
    assert proc.returncode != 0 and "nobody" in proc.stdout + proc.stderr


def route_of(config: Path, labels: dict[str, str]) -> str:
    """The receiver `amtool config routes test` picks for an alert with these labels."""
    proc = amtool("config", "routes", "test", f"--config.file={config}", *(f"{k}={v}" for k, v in labels.items()))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.strip()


def verify_route(config: Path, labels: dict[str, str], receiver: str) -> subprocess.CompletedProcess:
    return amtool(
        "config", "routes", "test", f"--config.file={config}", f"--verify.receivers={receiver}",
        *(f"{k}={v}" for k, v in labels.items()),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        # severity="page" reaches the paging receiver...
        ({"alertname": "TargetDown", "service": "warpwatch", "severity": "page"}, "oncall"),
        ({"alertname": "HostMemoryPressure", "service": "node-exporter", "severity": "page"}, "oncall"),
        # ...a ticket the default one...
        ({"alertname": "HighLatencyP99", "service": "warpwatch", "severity": "ticket"}, "mail"),
        # ...and the declared routes come first: any Loki alert, a Grafana ticket.
        ({"alertname": "LokiDown", "service": "loki", "severity": "page"}, "hook"),
        ({"alertname": "MemoryNearLimit", "service": "grafana", "severity": "ticket"}, "hook"),
        ({"alertname": "TargetDown", "service": "grafana", "severity": "page"}, "oncall"),
    ],
)
def test_every_declared_route_reaches_its_receiver(tmp_path, labels, receiver):
    config = write_config(tmp_path, CASES["paging"])
    proc = verify_route(config, labels, receiver)
    assert proc.returncode == 0, f"{labels} -> {proc.stdout.strip()} {proc.stderr.strip()}, expected {receiver}"


def test_a_route_test_can_fail(tmp_path):
    config = write_config(tmp_path, CASES["paging"])
    proc = verify_route(config, {"alertname": "TargetDown", "service": "warpwatch", "severity": "page"}, "mail")
    assert proc.returncode != 0


def test_without_a_paging_receiver_pages_go_to_the_default(tmp_path):
    config = write_config(tmp_path, CASES["one-webhook"])
    assert route_of(config, {"alertname": "TargetDown", "severity": "page"}) == "oncall"
    assert route_of(config, {"alertname": "HighLatencyP99", "severity": "ticket"}) == "oncall"


def test_with_no_receiver_alerts_go_to_a_receiver_named_for_it(tmp_path):
    config = write_config(tmp_path, CASES["none"])
    assert route_of(config, {"alertname": "TargetDown", "severity": "page"}) == "warpwatch-no-receiver-declared"
    parsed = yaml.safe_load(config.read_text())
    assert parsed["receivers"] == [{"name": "warpwatch-no-receiver-declared"}]
    assert nix_eval(stack_expr("s.configs.alertmanager.noReceiver")) is True
    assert nix_eval(stack_expr("s.configs.alertmanager.noReceiver", CASES["one-webhook"])) is False


def test_route_tree_groups_by_alert_and_service_and_resolves():
    config = yaml.safe_load(rendered(CASES["paging"]))
    route = config["route"]
    assert route["group_by"] == ["alertname", "service"]
    assert (route["group_wait"], route["group_interval"], route["repeat_interval"]) == ("30s", "5m", "4h")
    for receiver in config["receivers"]:
        for kind in ("webhook_configs", "email_configs"):
            for integration in receiver.get(kind, []):
                assert integration["send_resolved"] is True, receiver["name"]
    (rule,) = config["inhibit_rules"]
    assert rule == {
        "source_matchers": ['alertname="TargetDown"'],
        "target_matchers": ['alertname!="TargetDown"'],
        "equal": ["service"],
    }


@pytest.mark.parametrize(("target", "directory"), [("compose", "/run/secrets"), ("host", "/run/credentials/alertmanager.service")])
def test_secrets_are_files_where_the_target_delivers_them(target, directory):
    config = yaml.safe_load(rendered(CASES["paging"], target))
    receivers = {r["name"]: r for r in config["receivers"]}
    assert receivers["oncall"]["webhook_configs"] == [
        {"url_file": f"{directory}/alertmanager-oncall-webhook-url", "send_resolved": True}
    ]
    mail = receivers["mail"]["email_configs"][0]
    assert mail["auth_password_file"] == f"{directory}/alertmanager-mail-smtp-password"
    assert (mail["smarthost"], mail["from"], mail["to"], mail["auth_username"], mail["require_tls"]) == (
        "smtp.example.org:587", "alerts@example.org", "ops@example.org", "alerts", True,
    )  # fmt: skip
    assert "auth_password" not in mail and "url" not in receivers["oncall"]["webhook_configs"][0]
    assert receivers["hook"]["webhook_configs"] == [{"url": "http://hooks.internal:8000/alerts", "send_resolved": True}]


def test_compose_mounts_the_secret_files_and_never_their_contents(tmp_path):
    token = "s3cr3t-token-that-must-not-leak"
    url_file = tmp_path / "oncall-url"
    url_file.write_text(f"https://hooks.example.org/{token}\n")
    password_file = tmp_path / "smtp-password"
    password_file.write_text(token + "-password\n")
    overrides = (
        f'{{ alerts = {{ receivers = {{ oncall.webhook.urlFile = "{url_file}"; mail.email = {{ smarthost = "smtp.example.org:587"; '
        f'from = "a@example.org"; to = "b@example.org"; authUsername = "alerts"; authPasswordFile = "{password_file}"; }}; }}; '
        'defaultReceiver = "mail"; pagingReceiver = "oncall"; }; }'
    )
    files = render_compose(tmp_path / "project", overrides)
    for rel, text in files.items():
        assert token not in text, rel
    compose = yaml.safe_load(files["docker-compose.yml"])
    assert compose["secrets"]["alertmanager-oncall-webhook-url"] == {"file": str(url_file)}
    assert compose["secrets"]["alertmanager-mail-smtp-password"] == {"file": str(password_file)}
    assert sorted(compose["services"]["alertmanager"]["secrets"]) == [
        "alertmanager-mail-smtp-password",
        "alertmanager-oncall-webhook-url",
    ]
    # No other service sees them.
    for name, service in compose["services"].items():
        if name != "alertmanager":
            assert not any(s.startswith("alertmanager-") for s in service.get("secrets", [])), name
    # The stack's own services: limits and confinement like every other service.
    alertmanager = compose["services"]["alertmanager"]
    assert "--storage.path=/var/lib/alertmanager" in alertmanager["command"]
    assert "alertmanager-data:/var/lib/alertmanager" in alertmanager["volumes"]


def test_compose_without_receivers_mounts_no_alert_secret(tmp_path):
    compose = yaml.safe_load(render_compose(tmp_path / "project")["docker-compose.yml"])
    assert "secrets" not in compose["services"]["alertmanager"]
    assert not any(name.startswith("alertmanager-") for name in compose["secrets"])


# Bad input: each message names the field and says what to do.
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ("{ alerts.receivers.oncall.webhook = { }; }", "alerts.receivers.oncall.webhook has no URL: set alerts.receivers.oncall.webhook.urlFile"),
        ("{ alerts.receivers.oncall = { }; }", "alerts.receivers.oncall has neither webhook nor email"),
        (
            '{ alerts.receivers.mail.email = { smarthost = "smtp.example.org:587"; from = "a@example.org"; }; }',
            "alerts.receivers.mail.email has no to: set alerts.receivers.mail.email.to",
        ),
        (
            '{ alerts.receivers.mail.email = { smarthost = "smtp.example.org"; from = "a@example.org"; to = "b@example.org"; }; }',
            'alerts.receivers.mail.email.smarthost must be host:port, such as "smtp.example.org:587"',
        ),
        (
            '{ alerts.receivers.hook.webhook.url = "hooks.example.org/x"; }',
            "alerts.receivers.hook.webhook.url must be an http:// or https:// URL",
        ),
        (
            '{ alerts.receivers.oncall.webhook.urlFile = "/run/keys/u"; alerts.routes = [ { severity = "critical"; receiver = "oncall"; } ]; }',
            'alerts.routes.0.severity must be one of page, ticket (got "critical")',
        ),
        (
            '{ alerts.receivers.oncall.webhook.urlFile = "/run/keys/u"; alerts.routes = [ { severity = "page"; receiver = "pager"; } ]; }',
            'alerts.routes.0.receiver names receiver "pager", which is not declared (declared: oncall): add it to alerts.receivers',
        ),
        ('{ alerts.pagingReceiver = "pager"; }', 'alerts.pagingReceiver names receiver "pager", which is not declared (none is declared)'),
        (
            '{ alerts.receivers.oncall.webhook.urlFile = "/run/keys/u"; alerts.routes = [ { service = "lokki"; receiver = "oncall"; } ]; }',
            'alerts.routes.0.service must be a service of the declaration',
        ),
        (
            "{ alerts.receivers.oncall.webhook.urlFile = ./README.md; }",
            "alerts.receivers.oncall.webhook.urlFile is the Nix path",
        ),
        (
            '{ alerts.receivers.mail.email = { smarthost = "s:25"; from = "a@example.org"; to = "b@example.org"; '
            'authUsername = "u"; authPasswordFile = ./README.md; }; }',
            "alerts.receivers.mail.email.authPasswordFile is the Nix path",
        ),
        (
            '{ alerts.receivers.oncall.webhook.urlFile = "/nix/store/0000-url"; }',
            "alerts.receivers.oncall.webhook.urlFile is in the Nix store (/nix/store/0000-url), readable by every user",
        ),
        ('{ alerts.receivers.oncall.webhook.urlFile = "keys/url"; }', "alerts.receivers.oncall.webhook.urlFile must be an absolute path"),
        (
            '{ alerts.receivers.a.webhook.url = "http://a/"; alerts.receivers.b.webhook.url = "http://b/"; }',
            "alerts.defaultReceiver is not set and several receivers are declared (a, b)",
        ),
        (
            '{ alerts.receivers.mail.email = { smarthost = "s:25"; from = "a@example.org"; to = "b@example.org"; authUsername = "u"; }; }',
            "alerts.receivers.mail.email: authUsername and authPasswordFile go together",
        ),
        ('{ alerts.receivers.oncall.slack.url = "http://x/"; }', "alerts.receivers.oncall.slack is not a known field (known: webhook, email)"),
        ("{ alerts.targetDownForSeconds = 0; }", "alerts.targetDownForSeconds must be a positive integer (got 0)"),
    ],
)
def test_bad_receivers_fail_naming_the_field_and_the_fix(overrides, message):
    err = nix_eval_error(stack_expr("s.compose.project", overrides))
    assert "warpwatch stack: " in err and message in err, err


def test_a_path_secret_is_named_without_being_copied_into_the_store():
    # Printing the value through toJSON would copy README.md into the store: the message shows
    # the path as a string and suggests exactly that string.
    err = nix_eval_error(stack_expr("s.compose.project", "{ alerts.receivers.oncall.webhook.urlFile = ./README.md; }"))
    assert "copied into the world-readable Nix store" in err
    assert 'urlFile = "/' in err and "README.md" in err
    assert "-README.md" not in err  # no store path was made


# --- Debian's real Alertmanager with the rendered configuration: grouping, inhibition ---------


class Hook(http.server.ThreadingHTTPServer):
    """A webhook receiver: every notification's JSON body, in arrival order."""

    def __init__(self, port: int):
        self.received: list[dict] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                server.received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", port), Handler)


@contextlib.contextmanager
def running_alertmanager(tmp_path: Path, overrides: str):
    config = tmp_path / "alertmanager.yml"
    config.write_text(rendered(overrides))
    port = free_port()
    proc = subprocess.Popen(
        [
            require_tool("prometheus-alertmanager"),
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for("alertmanager", lambda: urllib.request.urlopen(f"{url}/-/ready", timeout=2).status == 200, processes=[proc])
        yield url
    finally:
        stop_process(proc)


def post_alerts(url: str, alerts: list[dict]):
    request = urllib.request.Request(
        f"{url}/api/v2/alerts", data=json.dumps(alerts).encode(), headers={"Content-Type": "application/json"}
    )
    assert urllib.request.urlopen(request, timeout=5).status == 200


def test_real_alertmanager_inhibits_a_down_services_other_alerts(tmp_path):
    """A service that is down pages once (TargetDown), not also for its errors; another service's
    errors still get through."""
    hook_port = free_port()
    hook = Hook(hook_port)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    overrides = f'{{ alerts.receivers.test.webhook.url = "http://127.0.0.1:{hook_port}/"; alerts.groupWaitSeconds = 1; }}'
    try:
        with running_alertmanager(tmp_path, overrides) as url:
            alert = lambda name, service, severity: {  # noqa: E731
                "labels": {"alertname": name, "service": service, "job": service, "severity": severity}
            }
            post_alerts(
                url,
                [
                    alert("TargetDown", "warpwatch", "page"),
                    alert("HighErrorRatio", "warpwatch", "page"),
                    alert("HighLatencyP99", "warpwatch", "ticket"),
                    alert("HighErrorRatio", "grafana", "page"),
                ],
            )
            # group_wait 1 s: both groups are out within a few seconds; wait a little more for
            # any inhibited one that would wrongly follow.
            wait_for("two notifications", lambda: len(hook.received) >= 2, deadline=20)
            time.sleep(3)
    finally:
        hook.shutdown()
    delivered = sorted(
        (a["labels"]["alertname"], a["labels"]["service"]) for n in hook.received for a in n["alerts"]
    )
    assert delivered == [("HighErrorRatio", "grafana"), ("TargetDown", "warpwatch")], hook.received
    for notification in hook.received:
        assert notification["receiver"] == "test"
        assert set(notification["groupLabels"]) == {"alertname", "service"}
