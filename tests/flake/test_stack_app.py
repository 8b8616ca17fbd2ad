"""`nix run .#stack` (nix/stack-app.sh), run for real with a controlled PATH: without docker, with
the real docker CLI and no daemon, and with a recording fake `docker` and docker-compose whose `up`
validates the written project with the real docker-compose. tests/live runs its `up` against a
real engine."""

import os
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import require_tool, write_files
from tests.flake.helpers import STACK_APP, declaration, eval_specs, tool_dir

# What the script itself calls (coreutils, grep, bash), without docker.
BASE_TOOLS = [
    "bash", "cat", "chmod", "cp", "grep", "id", "mkdir", "mktemp", "mv", "od", "setfacl", "tail", "tr", "env",
    "stat", "getfacl", "setpriv", "test",
]

FAKE_DOCKER = r"""#!/usr/bin/env bash
# Records every call; behaviour chosen by FAKE_* variables.
set -euo pipefail
printf '%s\n' "$*" >>"$FAKE_LOG"
case "${1:-}" in
  info)
    if [ "${2:-}" = --format ]; then
      [ -n "${FAKE_ROOTLESS:-}" ] && echo "[name=seccomp,profile=builtin name=rootless name=cgroupns]"
      echo "[name=seccomp,profile=builtin]"
    fi
    exit 0
    ;;
  image)
    shopt -s nullglob
    loaded=("$FAKE_DIR"/loaded-*)
    cat >"$FAKE_DIR/loaded-${#loaded[@]}"
    ;;
  version)
    # The engine's API version (20.10 speaks 1.41; Engine 25 is the first with 1.44).
    echo "${FAKE_API_VERSION:-1.41}"
    ;;
  inspect)
    shift 2  # --format TEMPLATE
    for id in "$@"; do echo "${id#id-} ${FAKE_HEALTH:-healthy}"; done
    ;;
  *) echo "fake docker: unexpected $*" >&2; exit 99 ;;
esac
"""

# The compose the app is given (WARPWATCH_STACK_DOCKER_COMPOSE): reports itself as nixpkgs' 5.x.
FAKE_COMPOSE = r"""#!/usr/bin/env bash
set -euo pipefail
printf 'compose %s\n' "$*" >>"$FAKE_LOG"
[ "${1:-}" = version ] && { echo "Docker Compose version 5.0.1"; exit 0; }
project= dir= files=()
while [ $# -gt 0 ]; do
  case "$1" in
    --project-name) project=$2; shift 2 ;;
    --project-directory) dir=$2; shift 2 ;;
    --file) files+=("$2"); shift 2 ;;
    *) break ;;
  esac
done
case "${1:-}" in
  up)
    # The written project must be a valid compose project, secrets included (the real compose
    # here is v1, which knows no start_interval: the first file only).
    for file in "${files[@]}"; do [ -f "$file" ] || { echo "fake compose: no $file" >&2; exit 98; }; done
    "$REAL_DOCKER_COMPOSE" --project-name "$project" --project-directory "$dir" --file "${files[0]}" config --quiet
    exit "${FAKE_UP_RC:-0}"
    ;;
  ps)
    if [ "${2:-}" = -q ]; then echo id-warpwatch; echo id-grafana; fi
    ;;
esac
"""

STREAM = """#!/usr/bin/env bash
printf 'tarball of %s\\n' {name}
"""


# The project's compose file with the healthchecks' start_interval (what the flake passes).
START_INTERVAL_FILE = "docker-compose.start-interval.yml"
# The uid the script must let read the secrets (WARPWATCH_STACK_SECRET_READER_UID; that the flake
# passes Grafana's is checked in test_outputs.py). Any non-root uid will do here.
READER_UID = 4242
# What the flake passes as WARPWATCH_STACK_URLS; `up` must print it.
STACK_URLS = "warpwatch: http://127.0.0.1:18080/\ngrafana: http://127.0.0.1:13000/"


def assert_private_but_readable_by(path: Path, uid: int):
    """Owner read/write, no access for group or others, and one ACL entry: `uid` may read."""
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode & 0o700 == 0o600 and mode & 0o007 == 0, oct(mode)
    acl = subprocess.run(
        [require_tool("getfacl"), "--omit-header", "--numeric", str(path)], capture_output=True, text=True, check=True
    ).stdout.split()
    named = [entry for entry in acl if entry.startswith("user:") and entry.split(":")[1]]
    assert named == [f"user:{uid}:r--"], acl
    assert "group::---" in acl and "other::---" in acl, acl


@pytest.fixture(scope="module")
def compose_project():
    """The real rendered compose project (what packages.compose contains), as {path: text}."""
    return eval_specs("specs.api.compose.project")


class Env:
    def __init__(self, tmp: Path, project: dict):
        self.tmp = tmp
        self.compose_dir = write_files(tmp / "store-compose", project, mode=0o444)  # read-only like the store
        self.fake_dir = tmp / "fake"
        self.fake_dir.mkdir()
        self.log = self.fake_dir / "calls.log"
        self.state_home = tmp / "state"
        self.streams = []
        for name in ("warpwatch", "prometheus"):
            script = tmp / f"stream-{name}"
            script.write_text(STREAM.format(name=name))
            script.chmod(0o755)
            self.streams.append((f"warpwatch/{name}:1.0", script))
        self.sysbin = tool_dir(tmp, BASE_TOOLS)
        self.docker_bin = tmp / "dockerbin"
        self.docker_bin.mkdir()
        self.compose = tmp / "compose-bin" / "docker-compose"
        self.compose.parent.mkdir()
        self.compose.write_text(FAKE_COMPOSE)
        self.compose.chmod(0o755)

    @property
    def state_dir(self) -> Path:
        return self.state_home / "warpwatch" / "stack"

    def install_fake_docker(self):
        docker = self.docker_bin / "docker"
        docker.write_text(FAKE_DOCKER)
        docker.chmod(0o755)

    def run(self, *args, path_dirs=None, extra_env=None):
        path_dirs = path_dirs if path_dirs is not None else [self.docker_bin, self.sysbin]
        env = {
            "PATH": os.pathsep.join(str(p) for p in path_dirs),
            "HOME": str(self.tmp / "home"),
            "XDG_STATE_HOME": str(self.state_home),
            "WARPWATCH_STACK_PROJECT": "warpwatch",
            "WARPWATCH_STACK_COMPOSE": str(self.compose_dir),
            "WARPWATCH_STACK_IMAGES": "\n".join(f"{ref} {script}" for ref, script in self.streams),
            "WARPWATCH_STACK_URLS": STACK_URLS,
            "WARPWATCH_STACK_SECRET_READER_UID": str(READER_UID),
            "WARPWATCH_STACK_DOCKER_COMPOSE": str(self.compose),
            "WARPWATCH_STACK_UP_TIMEOUT": "5",
            "WARPWATCH_STACK_START_INTERVAL_FILE": START_INTERVAL_FILE,
            "REAL_DOCKER_COMPOSE": require_tool("docker-compose"),
            "FAKE_LOG": str(self.log),
            "FAKE_DIR": str(self.fake_dir),
        }
        env.update(extra_env or {})
        return subprocess.run(
            ["bash", str(STACK_APP), *args], env=env, capture_output=True, text=True, timeout=120
        )

    def calls(self):
        return self.log.read_text().splitlines() if self.log.exists() else []


@pytest.fixture
def env(tmp_path, compose_project):
    return Env(tmp_path, compose_project)


def test_docker_missing(env):
    proc = env.run("up", path_dirs=[env.sysbin])
    assert proc.returncode == 1
    assert "docker was not found on PATH" in proc.stderr
    assert "https://docs.docker.com/engine/install/" in proc.stderr
    assert not env.state_dir.exists(), "nothing may be written before the checks pass"


def test_compose_binary_missing_is_named(env):
    env.install_fake_docker()
    proc = env.run("up", extra_env={"WARPWATCH_STACK_DOCKER_COMPOSE": str(env.tmp / "no-such-compose")})
    assert proc.returncode == 1
    assert f"docker-compose is not executable at {env.tmp / 'no-such-compose'}" in proc.stderr
    assert not env.state_dir.exists()


def test_any_compose_version_is_accepted(env):
    # Issue 8, defect 5: a `^v?2\.` gate refused nixpkgs' docker-compose 5.x. The app runs the
    # compose it is given, whatever its version, and never asks `docker compose`.
    env.install_fake_docker()
    proc = env.run("up")
    assert proc.returncode == 0, proc.stderr
    assert not [c for c in env.calls() if c.startswith("compose ") and "version" in c.split()]
    assert not [c for c in env.calls() if c.startswith("compose") and not c.startswith("compose --project-name")]


def test_daemon_down_with_the_real_docker_cli(env):
    # The real docker CLI; the daemon socket points nowhere.
    (env.docker_bin / "docker").symlink_to(Path(require_tool("docker")))
    proc = env.run(
        "up",
        extra_env={
            "DOCKER_CONFIG": str(env.tmp / "docker-config"),
            "DOCKER_HOST": f"unix://{env.tmp}/no-such-docker.sock",
        },
    )
    assert proc.returncode == 1, proc.stderr
    assert "cannot reach the Docker daemon" in proc.stderr
    assert "no-such-docker.sock" in proc.stderr, "the daemon's own error must be shown"
    assert "systemctl start docker" in proc.stderr
    assert not env.state_dir.exists()


def test_up_writes_project_generates_secrets_once_loads_images_and_waits(env, compose_project):
    env.install_fake_docker()
    first = env.run("up")
    assert first.returncode == 0, first.stderr

    # The project is a writable copy of the store's.
    for rel, text in compose_project.items():
        copy = env.state_dir / rel
        assert copy.read_text() == text
        assert not copy.is_symlink()
        assert stat.S_IMODE(copy.stat().st_mode) == 0o644

    secrets = env.state_dir / "secrets"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    password = (secrets / "grafana-admin-password").read_text()
    key = (secrets / "grafana-secret-key").read_text()
    for f in ("grafana-admin-password", "grafana-secret-key"):
        assert_private_but_readable_by(secrets / f, READER_UID)
    assert len(password) >= 32 and len(key) >= 64 and password not in key
    assert sorted(p.name for p in secrets.iterdir()) == ["grafana-admin-password", "grafana-secret-key"]
    assert first.stdout.count(password) == 1
    assert password not in first.stderr

    # Every image streamed into `docker image load`, then compose up -d on the state dir, then
    # the wait for every container's health.
    loaded = sorted(p.read_text() for p in env.fake_dir.glob("loaded-*"))
    assert loaded == ["tarball of prometheus\n", "tarball of warpwatch\n"]
    calls = env.calls()
    up = [c for c in calls if c.startswith("compose ") and " up " in f"{c} "]
    assert up == [
        f"compose --project-name warpwatch --project-directory {env.state_dir} "
        f"--file {env.state_dir}/docker-compose.yml up -d"
    ]
    assert calls.index("info") < calls.index(up[0])
    inspect = [c for c in calls if c.startswith("inspect ")]
    assert inspect and calls.index(up[0]) < calls.index(inspect[0])
    assert inspect[0].endswith(" id-warpwatch id-grafana")
    for line in STACK_URLS.splitlines():
        assert line.split(": ", 1)[1] in first.stdout, line

    # Second run: same secrets, password not printed again.
    second = env.run("up")
    assert second.returncode == 0, second.stderr
    assert (secrets / "grafana-admin-password").read_text() == password
    assert (secrets / "grafana-secret-key").read_text() == key
    assert password not in second.stdout
    assert "shown only this once" not in second.stdout


def test_secret_files_keep_their_content_when_the_project_changes(env):
    env.install_fake_docker()
    secrets = env.state_dir / "secrets"
    secrets.mkdir(parents=True)
    (secrets / "grafana-admin-password").write_text("chosen-by-the-user")
    proc = env.run("up")
    assert proc.returncode == 0, proc.stderr
    assert (secrets / "grafana-admin-password").read_text() == "chosen-by-the-user"
    assert "password" not in proc.stdout.lower()
    assert_private_but_readable_by(secrets / "grafana-secret-key", READER_UID)


def test_up_failure_is_reported(env):
    env.install_fake_docker()
    proc = env.run("up", extra_env={"FAKE_UP_RC": "1"})
    assert proc.returncode == 1
    assert "'docker-compose up' failed" in proc.stderr


def test_unhealthy_services_are_named_and_point_to_ps_and_logs(env):
    env.install_fake_docker()
    proc = env.run("up", extra_env={"FAKE_HEALTH": "starting", "WARPWATCH_STACK_UP_TIMEOUT": "2"})
    assert proc.returncode == 1
    assert "not healthy after 2s" in proc.stderr
    assert "\n  warpwatch starting\n  grafana starting\n" in proc.stderr
    assert "did not become healthy" in proc.stderr
    assert "nix run .#stack -- logs" in proc.stderr


def test_down_ps_logs_need_an_existing_project(env):
    env.install_fake_docker()
    for command in ("down", "ps", "logs"):
        proc = env.run(command)
        assert proc.returncode == 1
        assert "nix run .#stack -- up" in proc.stderr
    assert not any(c.startswith("compose --project-name") for c in env.calls())


def test_down_ps_logs_pass_arguments_to_compose(env):
    env.install_fake_docker()
    assert env.run("up").returncode == 0
    for args in (["ps"], ["logs", "--tail", "5", "grafana"], ["down", "-v"]):
        proc = env.run(*args)
        assert proc.returncode == 0, proc.stderr
        expected = (
            f"compose --project-name warpwatch --project-directory {env.state_dir} "
            f"--file {env.state_dir}/docker-compose.yml {' '.join(args)}"
        )
        assert env.calls()[-1] == expected


@pytest.mark.parametrize("args,code", [([], 2), (["restart"], 2), (["--help"], 0)])
def test_usage(env, args, code):
    proc = env.run(*args)
    assert proc.returncode == code
    out = proc.stdout if code == 0 else proc.stderr
    assert "usage: nix run .#stack -- COMMAND" in out
    if args == ["restart"]:
        assert "unknown command restart" in proc.stderr


def test_refuses_to_run_outside_the_flake(env):
    proc = env.run("up", extra_env={"WARPWATCH_STACK_COMPOSE": ""})
    assert proc.returncode == 1
    assert "WARPWATCH_STACK_COMPOSE is not set" in proc.stderr


def test_rootless_docker_grants_the_subuid_that_grafana_maps_to(env, tmp_path):
    env.install_fake_docker()
    user = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    subuid = tmp_path / "subuid"
    subuid.write_text(f"someone-else:100000:65536\n{user}:200000:65536\n")
    proc = env.run("up", extra_env={"FAKE_ROOTLESS": "1", "WARPWATCH_STACK_SUBUID_FILE": str(subuid)})
    assert proc.returncode == 0, proc.stderr
    assert_private_but_readable_by(env.state_dir / "secrets" / "grafana-admin-password", 200000 + READER_UID - 1)


def test_rootless_docker_without_a_subuid_range_is_a_clear_error(env, tmp_path):
    env.install_fake_docker()
    subuid = tmp_path / "subuid"
    subuid.write_text("someone-else:100000:65536\n")
    proc = env.run("up", extra_env={"FAKE_ROOTLESS": "1", "WARPWATCH_STACK_SUBUID_FILE": str(subuid)})
    assert proc.returncode == 1
    assert "/etc/subuid has no range for" in proc.stderr


# --- issue 20, item 4: start_interval where the engine has it ---------------------------------


@pytest.mark.parametrize(
    ("api", "with_start_interval"),
    [("1.41", False), ("1.43", False), ("1.44", True), ("1.51", True), ("2.0", True), ("", False)],
)
def test_start_interval_file_is_used_from_engine_25_on(env, api, with_start_interval):
    # Docker 20.10 (API 1.41, the CI engine) and docker-compose v1 refuse start_interval; Engine
    # 25 (API 1.44) probes that often during the start period. An unknown version: without.
    env.install_fake_docker()
    proc = env.run("up", extra_env={"FAKE_API_VERSION": api})
    assert proc.returncode == 0, proc.stderr
    (up,) = [c for c in env.calls() if c.startswith("compose ") and " up " in f"{c} "]
    files = f"--file {env.state_dir}/docker-compose.yml"
    if with_start_interval:
        files += f" --file {env.state_dir}/{START_INTERVAL_FILE}"
    assert up == f"compose --project-name warpwatch --project-directory {env.state_dir} {files} up -d"
    ps = env.run("ps", extra_env={"FAKE_API_VERSION": api})
    assert ps.returncode == 0, ps.stderr
    assert env.calls()[-1].endswith(f"{files} ps")


def test_the_start_interval_file_sets_only_start_interval_for_every_service(compose_project):
    base = yaml.safe_load(compose_project["docker-compose.yml"])["services"]
    extra = yaml.safe_load(compose_project[START_INTERVAL_FILE])["services"]
    assert extra.keys() == base.keys()
    for name, service in extra.items():
        assert service == {"healthcheck": {"start_interval": service["healthcheck"]["start_interval"]}}, name
        assert "start_interval" not in base[name]["healthcheck"], name
    declared = declaration()["healthcheck"]["startIntervalSeconds"]
    assert {s["healthcheck"]["start_interval"] for s in extra.values()} == {f"{declared}s"}


def test_up_says_once_that_no_alert_receiver_is_declared(env):
    # Issue 17: with no receiver, the stack runs and says so plainly, once per `up`.
    env.install_fake_docker()
    notice = eval_specs("specs.alertsNotice")
    assert "No alert receiver is declared" in notice and "alerts.receivers" in notice
    proc = env.run("up", extra_env={"WARPWATCH_STACK_ALERTS_NOTICE": notice})
    assert proc.returncode == 0, proc.stderr
    assert (proc.stdout + proc.stderr).count("No alert receiver is declared") == 1, proc.stdout


def test_up_is_quiet_about_alerts_once_a_receiver_is_declared(env):
    env.install_fake_docker()
    notice = eval_specs("specs.alertsNotice", '{ alerts.receivers.oncall.webhook.urlFile = "/run/keys/oncall-url"; }')
    assert notice == ""
    proc = env.run("up", extra_env={"WARPWATCH_STACK_ALERTS_NOTICE": notice})
    assert proc.returncode == 0, proc.stderr
    assert "receiver" not in proc.stdout + proc.stderr


# --- the receivers' secret files: readable by Alertmanager's uid, checked before anything starts --

# Alertmanager's container uid as the flake passes it (WARPWATCH_STACK_ALERTMANAGER_UID; that it
# is the declaration's is checked in test_outputs.py). Not root, not the tests' user.
ALERTMANAGER_UID = 10006
ROOTLESS_START = 200000  # the subuid range the rootless tests give the user


# How `up` decides: as root it asks the kernel (setpriv); without setpriv, or with rootless Docker
# (whose uid it cannot take), it reads owner, mode and ACL.
HOW = ["root-asks-the-kernel", "reads-mode-and-acl", "rootless-reads-mode-and-acl"]


def run_with_secret(env, file: Path, how: str = HOW[0]):
    rootless = how.startswith("rootless")
    if how != HOW[0]:
        (env.sysbin / "setpriv").unlink(missing_ok=True)
    extra = {
        "WARPWATCH_STACK_ALERTMANAGER_UID": str(ALERTMANAGER_UID),
        "WARPWATCH_STACK_ALERTMANAGER_SECRETS": f"oncall.webhook.urlFile {file}\nmail.email.authPasswordFile {file}",
    }
    if rootless:
        user = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
        subuid = env.tmp / "subuid"
        subuid.write_text(f"{user}:{ROOTLESS_START}:65536\n")
        extra |= {"FAKE_ROOTLESS": "1", "WARPWATCH_STACK_SUBUID_FILE": str(subuid)}
    return env.run("up", extra_env=extra)


def assert_refused_before_anything_starts(env, proc, *needles):
    assert proc.returncode == 1, proc.stdout + proc.stderr
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr)
    assert not [c for c in env.calls() if c.startswith("compose ") or c.startswith("image")], env.calls()
    assert not env.state_dir.exists(), "nothing may be written before the checks pass"


def secret_file(env, mode: int, acl_uid: int | None = None, mask: str | None = None, gid: int = 0) -> Path:
    # In a directory only root may enter: compose mounts the file itself, so only its own
    # permissions count, and the check must not refuse a readable file for its directory.
    directory = env.tmp / "keys"
    directory.mkdir(mode=0o700, exist_ok=True)
    file = directory / "on call url"
    file.write_text("https://hooks.example.org/T0KEN")
    os.chown(file, 0, gid)
    file.chmod(mode)
    if acl_uid is not None:
        subprocess.run([require_tool("setfacl"), "-m", f"u:{acl_uid}:r", str(file)], check=True)
    if mask is not None:
        subprocess.run([require_tool("setfacl"), "-m", f"m::{mask}", str(file)], check=True)
    return file


@pytest.fixture
def as_root():
    if os.geteuid() != 0:
        pytest.fail("these tests chown files to root and ask the kernel as root (setpriv): run pytest as root")


def test_a_missing_receiver_secret_file_stops_up(env, as_root):
    env.install_fake_docker()
    missing = env.tmp / "keys" / "oncall-url"
    proc = run_with_secret(env, missing)
    assert_refused_before_anything_starts(
        env, proc, f"alerts.receivers.oncall.webhook.urlFile ({missing}) does not exist"
    )


def test_a_directory_as_receiver_secret_file_stops_up(env, as_root):
    env.install_fake_docker()
    directory = env.tmp / "keys"
    directory.mkdir()
    proc = run_with_secret(env, directory)
    assert_refused_before_anything_starts(
        env, proc, f"alerts.receivers.oncall.webhook.urlFile ({directory}) is not a regular file (it is a directory)"
    )


@pytest.mark.parametrize("how", HOW)
def test_a_secret_only_root_may_read_stops_up_with_the_setfacl_fix(env, as_root, how):
    env.install_fake_docker()
    file = secret_file(env, 0o600)
    uid = ROOTLESS_START + ALERTMANAGER_UID - 1 if how.startswith("rootless") else ALERTMANAGER_UID
    proc = run_with_secret(env, file, how)
    quoted = str(file).replace(" ", "\\ ")
    assert_refused_before_anything_starts(
        env,
        proc,
        f"Alertmanager cannot read alerts.receivers.oncall.webhook.urlFile ({file})",
        f"runs as uid {uid} on this machine, the file is owner 0, group 0, mode 600",
        f"setfacl -m u:{uid}:r {quoted}",
        f"chmod 0644 {quoted}",
    )


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("grant", ["acl", "mode-0644"])
def test_a_secret_alertmanager_may_read_lets_up_proceed_and_is_refused_once_private(env, as_root, how, grant):
    env.install_fake_docker()
    uid = ROOTLESS_START + ALERTMANAGER_UID - 1 if how.startswith("rootless") else ALERTMANAGER_UID
    file = secret_file(env, 0o600, acl_uid=uid) if grant == "acl" else secret_file(env, 0o644)
    proc = run_with_secret(env, file, how)
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr and "Alertmanager" not in proc.stderr, proc.stderr
    assert [c for c in env.calls() if c.startswith("compose ") and " up " in f"{c} "]

    # The same file without the grant: refused (the check tells the two apart).
    if grant == "acl":
        subprocess.run([require_tool("setfacl"), "-b", str(file)], check=True)
    file.chmod(0o600)
    calls = len(env.calls())
    again = run_with_secret(env, file, how)
    assert again.returncode == 1 and f"setfacl -m u:{uid}:r" in again.stderr, again.stderr
    assert not [c for c in env.calls()[calls:] if c.startswith("compose ")]


@pytest.mark.parametrize("how", HOW)
def test_an_acl_entry_the_mask_cancels_does_not_count(env, as_root, how):
    env.install_fake_docker()
    uid = ROOTLESS_START + ALERTMANAGER_UID - 1 if how.startswith("rootless") else ALERTMANAGER_UID
    file = secret_file(env, 0o600, acl_uid=uid, mask="---")
    proc = run_with_secret(env, file, how)
    assert_refused_before_anything_starts(env, proc, f"setfacl -m u:{uid}:r")


def test_rootless_a_group_readable_secret_is_a_warning_not_an_error(env, as_root):
    # Rootless Docker maps Alertmanager's gid to a subgid the app does not know: whether the
    # group bits apply cannot be told, so `up` says so and goes on.
    env.install_fake_docker()
    file = secret_file(env, 0o640)
    uid = ROOTLESS_START + ALERTMANAGER_UID - 1
    proc = run_with_secret(env, file, "rootless-reads-mode-and-acl")
    assert proc.returncode == 0, proc.stderr
    assert "warning: cannot tell whether Alertmanager" in proc.stderr
    assert f"setfacl -m u:{uid}:r" in proc.stderr


@pytest.mark.parametrize("how", HOW[:2])
def test_with_rootful_docker_the_group_bits_count_for_alertmanagers_gid(env, as_root, how):
    # Rootful Docker runs Alertmanager as uid:gid 10006:10006 with no other group.
    env.install_fake_docker()
    file = secret_file(env, 0o640, gid=ALERTMANAGER_UID)
    proc = run_with_secret(env, file, how)
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr, proc.stderr
    os.chown(file, 0, ALERTMANAGER_UID + 1)
    again = run_with_secret(env, file, how)
    assert again.returncode == 1 and f"setfacl -m u:{ALERTMANAGER_UID}:r" in again.stderr, again.stderr
