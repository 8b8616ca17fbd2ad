"""flake.nix's `outputs`, called offline with a stand-in nixpkgs (tests/flake/fake-nixpkgs.nix)
whose builders return their arguments: checks the wiring — which outputs exist on which system,
what reaches dockerTools, the compose package and the stack app, that Promtail comes from the
second input, the NixOS module wrapper and the example host."""

import pytest
import yaml

from tests import spec
from tests.conftest import nix_eval
from tests.flake.helpers import OUTPUTS, STACK_APP, stack_app_env

LINUX = ["x86_64-linux", "aarch64-linux"]
DARWIN = ["x86_64-darwin", "aarch64-darwin"]
STORE = "/nix/store/00000000000000000000000000000000-"


def out(expr: str):
    return nix_eval(f"let o = {OUTPUTS}; in {expr}")


def test_output_attributes_per_system():
    names = out("builtins.mapAttrs (_: builtins.attrNames) o.packages")
    linux = [
        "agent",
        "compose",
        "default",
        "image",
        "image-alertmanager",
        "image-alloy",
        "image-grafana",
        "image-loki",
        "image-node-exporter",
        "image-prometheus",
        "image-promtail",
        "image-receiver",
        "promtail",
        "stack",
        "warpwatch",
    ]
    assert names == {**{s: linux for s in LINUX}, **{s: ["default", "warpwatch"] for s in DARWIN}}
    apps = out("builtins.mapAttrs (_: builtins.attrNames) o.apps")
    assert apps == {**{s: ["agent", "default", "stack"] for s in LINUX}, **{s: ["default"] for s in DARWIN}}
    assert sorted(out("builtins.attrNames o.checks")) == sorted(LINUX)
    assert sorted(out("builtins.attrNames o.devShells")) == sorted(LINUX)
    assert sorted(out("builtins.attrNames o.formatter")) == sorted(LINUX + DARWIN)
    assert out("o.formatter.x86_64-linux.name") == "nixfmt-tree-1-from-26.05"


def test_checks():
    assert sorted(out("builtins.attrNames o.checks.x86_64-linux")) == [
        "clippy",
        "nixfmt",
        "package",
        "rustfmt",
        "stack-amtool",
        "stack-compose",
        "stack-promtool",
        "vm-alloy",
        "vm-hosts",
        "vm-promtail",
    ]
    clippy = out("o.checks.x86_64-linux.clippy.buildPhase")
    assert "cargo clippy --all-targets --offline --locked -- -D warnings" in clippy
    assert "cargo fmt --all -- --check" in out("o.checks.x86_64-linux.rustfmt.script")
    # Each VM test is nix/tests/vm.nix for one shipper, handed to testers.runNixOSTest.
    for shipper in ("promtail", "alloy"):
        module = out(f"builtins.attrNames o.checks.x86_64-linux.vm-{shipper}.module")
        assert {"name", "nodes", "testScript"} <= set(module)
        assert shipper in out(f"o.checks.x86_64-linux.vm-{shipper}.module.name")
    # The two-host test of many hosts: nix/tests/hosts.nix, one node per host of the pair.
    assert out("builtins.attrNames o.checks.x86_64-linux.vm-hosts.module.nodes") == ["app1", "monitor"]
    assert out("o.checks.x86_64-linux.vm-hosts.module.name") == "warpwatch-hosts"
    promtool = out("o.checks.x86_64-linux.stack-promtool.script")
    for command in ("promtool check config", "promtool check rules", "promtool test rules"):
        assert command in promtool


def test_package_and_default_are_the_rust_package():
    pkg = out(
        "let p = o.packages.x86_64-linux.warpwatch; in "
        "{ inherit (p) pname version meta name; lock = toString p.cargoLock.lockFile; "
        "same = o.packages.x86_64-linux.default == p; }"
    )
    assert pkg["same"]
    assert (pkg["pname"], pkg["version"]) == ("warpwatch", "0.1.0")
    assert pkg["lock"].endswith("/Cargo.lock")
    assert pkg["meta"]["mainProgram"] == "warpwatch"
    assert pkg["meta"]["license"] == "mit"
    assert pkg["meta"]["description"]
    assert sorted(pkg["meta"]["platforms"]) == sorted(LINUX + DARWIN)


@pytest.mark.parametrize(
    "service", ["warpwatch", "prometheus", "loki", "promtail", "alloy", "grafana", "alertmanager", "node-exporter"]
)
def test_images_get_the_specs(service):
    attr = "image" if service == "warpwatch" else f"image-{service}"
    image = out(
        f"let i = o.packages.x86_64-linux.{attr}.imageArgs; in "
        "{ inherit (i) name tag config created mtime fakeRootCommands contents; }"
    )
    # The expected spec: image-specs.nix given the stand-in nixpkgs' own packages.
    specs = nix_eval(
        f"let o = {OUTPUTS}; "
        'pkgs = (import ./tests/flake/fake-nixpkgs.nix "26.05").legacyPackages.x86_64-linux; '
        'old = (import ./tests/flake/fake-nixpkgs.nix "25.11").legacyPackages.x86_64-linux; in '
        "(import ./nix/stack/image-specs.nix { packages = builtins.mapAttrs (_: p: { inherit (p) version; "
        'path = "${p}"; }) { warpwatch = o.packages.x86_64-linux.warpwatch; inherit (pkgs) prometheus grafana; '
        "loki = pkgs.grafana-loki; alloy = pkgs.grafana-alloy; inherit (old) promtail; "
        'alertmanager = pkgs.prometheus-alertmanager; "node-exporter" = pkgs.prometheus-node-exporter; }; })'
        f'.images."{service}"'
    )
    for key in ("name", "tag", "config", "created", "mtime", "fakeRootCommands"):
        assert image[key] == specs[key], key
    assert f"{STORE}warpwatch-0.1.0" in image["contents"]


def test_promtail_comes_from_the_second_input_and_nothing_else_does():
    contents = out("o.packages.x86_64-linux.image-promtail.imageArgs.contents")
    assert f"{STORE}promtail-3.6.11-from-25.11" in contents
    assert out("o.packages.x86_64-linux.promtail.name") == "promtail-3.6.11-from-25.11"
    for attr in ("image-prometheus", "image-loki", "image-alloy", "image-grafana", "image-alertmanager", "image-node-exporter"):
        for path in out(f"o.packages.x86_64-linux.{attr}.imageArgs.contents"):
            assert "from-25.11" not in path, (attr, path)


def test_compose_package_holds_the_rendered_project_with_the_built_tags():
    entries = out("builtins.mapAttrs (_: e: e.text) o.packages.x86_64-linux.compose.entries")
    compose = yaml.safe_load(entries["docker-compose.yml"])
    tags = {
        name: out(f'o.packages.x86_64-linux.{"image" if name == "warpwatch" else "image-" + name}.imageArgs.tag')
        for name in compose["services"]
    }
    assert tags["grafana"] == "12.4.0" and tags["loki"] == "3.7.8"
    for name, service in compose["services"].items():
        assert service["image"].rsplit(":", 1)[1] == tags[name]
    assert "prometheus/prometheus.yml" in entries
    assert not any(path.startswith("secrets/") for path in entries)


def test_agent_app_is_the_stack_script_for_the_agent_project():
    """Issue 18: `nix run .#agent` runs nix/stack-app.sh on the agent's project (image-specs.nix
    with role = "agent"), loading each image it runs once (the collector runs the prometheus
    image), with the declaration's own rules for --host and --server."""
    app = out("let s = o.packages.x86_64-linux.agent; in { inherit (s) runtimeEnv text name; }")
    env = app["runtimeEnv"]
    assert app["text"] == STACK_APP.read_text()
    assert env["WARPWATCH_STACK_ROLE"] == "agent"
    assert env["WARPWATCH_STACK_PROJECT"] == "warpwatch-agent"
    refs = [line.split(" ")[0] for line in env["WARPWATCH_STACK_IMAGES"].splitlines()]
    assert sorted(refs) == sorted(set(refs)), refs
    # A project of its own, not the server's.
    assert env["WARPWATCH_STACK_COMPOSE"] != out("o.packages.x86_64-linux.compose.outPath")
    assert any(ref.startswith("warpwatch/prometheus:") for ref in refs), refs
    assert len(refs) == 4, refs  # warpwatch, node exporter, prometheus (the collector), promtail
    lib = nix_eval("{ inherit (import ./nix/stack/lib.nix) hostNamePattern serverAddressPattern; }")
    assert env["WARPWATCH_AGENT_HOST_PATTERN"] == lib["hostNamePattern"]
    assert env["WARPWATCH_AGENT_SERVER_PATTERN"] == lib["serverAddressPattern"]
    decl = nix_eval("(import ./nix/stack { }).stack.services")
    assert env["WARPWATCH_AGENT_TLS_READERS"].splitlines() == [
        f"collector {decl['collector']['uid']}",
        f"promtail {decl['promtail']['uid']}",
    ]
    for name in ("HOST", "SERVER", "TLS_DIR"):
        assert env[f"WARPWATCH_AGENT_{name}_PLACEHOLDER"], name


def test_stack_app_environment():
    app = out("let s = o.packages.x86_64-linux.stack; in { inherit (s) runtimeEnv text runtimeInputs; }")
    env = app["runtimeEnv"]
    assert env["WARPWATCH_STACK_PROJECT"] == "warpwatch"
    assert env["WARPWATCH_STACK_COMPOSE"] == out("o.packages.x86_64-linux.compose.outPath")
    lines = [line.split(" ") for line in env["WARPWATCH_STACK_IMAGES"].splitlines()]
    assert len(lines) == len(spec.SERVICES)
    for ref, script in lines:
        assert script.startswith(STORE + "stream-")
    refs = {ref for ref, _ in lines}
    compose = yaml.safe_load(
        out('o.packages.x86_64-linux.compose.entries."docker-compose.yml".text')
    )
    assert refs == {s["image"] for s in compose["services"].values()}
    assert f"grafana: http://{spec.LOOPBACK}:{spec.PORTS['grafana']}/" in env["WARPWATCH_STACK_URLS"].splitlines()
    # The secrets are made readable by the uid Grafana runs as in the compose file.
    assert env["WARPWATCH_STACK_SECRET_READER_UID"] == compose["services"]["grafana"]["user"].split(":")[0]
    # `up` checks that the receivers' secret files are readable by the uid Alertmanager runs as
    # (setpriv from util-linux when root); the default declaration has no receiver, so no file.
    assert env["WARPWATCH_STACK_ALERTMANAGER_UID"] == compose["services"]["alertmanager"]["user"].split(":")[0]
    assert env["WARPWATCH_STACK_ALERTMANAGER_SECRETS"] == ""
    # Issue 18: no receiver declared, so no TLS file for `up` to check.
    assert env["WARPWATCH_STACK_RECEIVER_FILES"] == ""
    assert any(str(i).endswith("-util-linux-1-from-26.05") for i in app["runtimeInputs"]), app["runtimeInputs"]
    # Issue 8, defect 5: the app brings its pinned docker-compose and the docker CLI (nixpkgs).
    assert env["WARPWATCH_STACK_DOCKER_COMPOSE"] == f"{STORE}docker-compose-1-from-26.05/bin/docker-compose"
    assert any(str(i).endswith("-docker-client-1-from-26.05") for i in app["runtimeInputs"]), app["runtimeInputs"]
    assert int(env["WARPWATCH_STACK_UP_TIMEOUT"]) >= spec.HEALTHCHECK_INTERVAL_S * (spec.HEALTHCHECK_RETRIES + 1)
    # Issue 20, item 4: the compose file the app adds on Engine 25+ is in the project.
    start_interval = out(f'o.packages.x86_64-linux.compose.entries."{env["WARPWATCH_STACK_START_INTERVAL_FILE"]}".text')
    assert "start_interval" in start_interval
    assert app["text"] == STACK_APP.read_text()
    # Issue 17: the flake's default declaration has no receiver, and the app is told to say so.
    assert env["WARPWATCH_STACK_ALERTS_NOTICE"].startswith("No alert receiver is declared")
    assert out("o.apps.x86_64-linux.stack.program") == f"{STORE}warpwatch-stack/bin/warpwatch-stack"


def test_stack_app_is_given_every_declared_receiver_secret_file():
    # nix/stack-app.nix with a declaration that has receivers: one "<receiver>.<field> <file>"
    # line per secret file, the file last (a path may hold a space).
    overrides = (
        '{ alerts = { defaultReceiver = "mail"; receivers = { '
        'oncall.webhook.urlFile = "/run/keys/on call/url"; '
        'mail.email = { to = "ops@example.org"; from = "alerts@example.org"; smarthost = "smtp.example.org:587"; '
        'authUsername = "alerts"; authPasswordFile = "/run/keys/smtp"; }; }; }; }'
    )
    env = stack_app_env(overrides)
    assert sorted(env["WARPWATCH_STACK_ALERTMANAGER_SECRETS"].splitlines()) == [
        "mail.email.authPasswordFile /run/keys/smtp",
        "oncall.webhook.urlFile /run/keys/on call/url",
    ]


def test_stack_app_is_given_every_declared_receiver_tls_file_the_crl_when_declared():
    # One "receiver.<field> <file>" line per file the receiver (nginx) reads, which `up` checks
    # its uid may read: the CRL only when declared.
    receiver = (
        'receiver = { enable = true; certFile = "/etc/tls/server.crt"; keyFile = "/run/keys/server.key"; '
        'clientCaFile = "/etc/tls/ca.crt";'
    )
    files = [
        "receiver.certFile /etc/tls/server.crt",
        "receiver.keyFile /run/keys/server.key",
        "receiver.clientCaFile /etc/tls/ca.crt",
    ]
    expected = 'hosts.expected = [ "app1" ];'
    without = stack_app_env(f"{{ {receiver} }}; {expected} }}")
    assert without["WARPWATCH_STACK_RECEIVER_FILES"].splitlines() == files
    revoking = stack_app_env(f'{{ {receiver} crlFile = "/etc/tls/ca.crl"; }}; {expected} }}')
    assert revoking["WARPWATCH_STACK_RECEIVER_FILES"].splitlines() == [*files, "receiver.crlFile /etc/tls/ca.crl"]


def test_default_app_runs_the_wrapper_with_the_declared_port():
    assert out("o.apps.x86_64-linux.default.type") == "app"
    assert out("o.apps.aarch64-darwin.default.program") == f"{STORE}warpwatch-run/bin/warpwatch-run"
    assert f"{spec.LOOPBACK}:{spec.PORTS['warpwatch']}" in out("o.apps.x86_64-linux.default.meta.description")


# Just enough of nixpkgs' lib for nix/module.nix to declare its package options: mkOption as the
# identity, so a test reads the option's attributes (default, defaultText) as declared.
MODULE_LIB = (
    "{ mkOption = o: o; optionalAttrs = c: s: if c then s else { }; literalMD = t: t; "
    "types = { package = \"package\"; nullOr = t: \"nullOr \" + t; }; }"
)


def module_package_options(module: str, system: str) -> dict:
    """The package options `module` (a Nix expression of nix/module.nix's module function)
    declares on a host of `system`: {option: its default's name, or None} where a default exists."""
    return nix_eval(
        f"let o = {OUTPUTS}; m = {module} {{ config = {{ }}; options = {{ }}; lib = {MODULE_LIB}; "
        f'pkgs.stdenv.hostPlatform.system = "{system}"; }}; '
        "opts = m.options.services.warpwatch; in { "
        "package = if opts.package ? default then opts.package.default.name else false; "
        "promtail = let p = opts.monitoring.promtailPackage.default; in if p == null then null else p.name; }"
    )


def test_nixos_module_has_the_flake_packages_as_defaults():
    """nixosModules.default is nix/module.nix given the flake's packages (lib.modules.importApply):
    the host's system picks the package and Promtail defaults."""
    module = nix_eval(
        f"let o = {OUTPUTS}; m = o.nixosModules.default; in {{ file = toString m._file; n = builtins.length m.imports; }}"
    )
    assert module["file"].endswith("/nix/module.nix") and module["n"] == 1
    assert module_package_options("(builtins.head o.nixosModules.default.imports)", "aarch64-linux") == {
        "package": "warpwatch-0.1.0",
        "promtail": "promtail-3.6.11-from-25.11",
    }


def test_nixos_module_without_the_flake_has_no_package_default():
    """Imported on its own (`import ./nix/module.nix { }`), the package must be set by the host."""
    assert module_package_options("(import ./nix/module.nix { })", "x86_64-linux") == {
        "package": False,
        "promtail": None,
    }


def test_example_host():
    args = out(
        "let a = o.nixosConfigurations.example.nixosSystemArgs; in "
        "{ inherit (a) system; n = builtins.length a.modules; "
        "host = toString (builtins.elemAt a.modules 1); }"
    )
    assert args["system"] == "x86_64-linux"
    assert args["n"] == 2
    assert args["host"].endswith("/nix/hosts/example.nix")


def test_many_hosts_pair():
    """The two-host example (README "Many hosts"): each host is the flake's module, the placeholder
    hardware and its own file."""
    pair = out(
        "builtins.mapAttrs (_: c: { inherit (c.nixosSystemArgs) system; "
        "modules = map toString (builtins.tail c.nixosSystemArgs.modules); }) "
        "{ inherit (o.nixosConfigurations) monitor app1; }"
    )
    for name in ("monitor", "app1"):
        assert pair[name]["system"] == "x86_64-linux"
        hardware, host = pair[name]["modules"]
        assert hardware.endswith("/nix/hosts/placeholder-hardware.nix")
        assert host.endswith(f"/nix/hosts/{name}.nix")


def test_overlay_exposes_the_package():
    name = out(
        'let fake = import ./tests/flake/fake-nixpkgs.nix "26.05"; '
        "pkgs = fake.legacyPackages.x86_64-linux; in "
        "(o.overlays.default pkgs pkgs).warpwatch.name"
    )
    assert name == "warpwatch-0.1.0"


def test_dev_shell_has_the_test_tools():
    shell = out(
        "let s = o.devShells.x86_64-linux.default; in "
        "{ packages = map (p: p.name) s.packages; python = (builtins.elemAt s.packages "
        "(builtins.length s.packages - 1)).modules; }"
    )
    names = {n.split("-1-from")[0].split("-3.14.0")[0].split("-0.28.1")[0].split("-1.9.1")[0] for n in shell["packages"]}
    for tool in ("cargo", "rustc", "clippy", "rustfmt", "prometheus", "prometheus-cli", "docker-compose", "docker-client",
                 "yamllint", "shellcheck", "acl", "systemd", "jq", "nix", "nixfmt", "wrk", "util-linux",
                 "alertmanager", "node_exporter"):
        assert tool in names, tool
    assert shell["python"] == ["pytest", "pyyaml"]
