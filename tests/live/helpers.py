"""The compose stack on a real Docker engine (the private dockerd of tests/dockerd.py).

Images are laid out exactly as nix/stack/image-specs.nix says — name:tag, user, entry point, env,
working directory, healthcheck, labels, directories with owner and mode, /bin/warpwatch in every
image — assembled here as `docker load` archives (never pulled). What runs inside:

- warpwatch: the release build of this repository (WARPWATCH_BIN);
- prometheus: Debian's real Prometheus binary (with the shared libraries `ldd` lists);
- alertmanager, node-exporter: Debian's real prometheus-alertmanager and prometheus-node-exporter
  binaries, the same way (issue 17);
- receiver: Debian's real nginx binary, the same way; the collector runs the prometheus image
  (issue 18);
- loki, promtail, alloy, grafana: the contract-checking stand-in of tests/live/standin.rs.

The stack is started the way a user starts it, by the stack app (nix/stack-app.sh `up`), with
Debian's docker-compose 1.29 as its compose binary (Debian ships no Compose v2).
"""

import contextlib
import datetime
import re
import hashlib
import io
import json
import os
import subprocess
import tarfile
import time
import urllib.parse
from pathlib import Path

import pytest

from tests.conftest import ROOT, http_get, nix_eval, nix_value, require_tool
from tests.dockerd import CACHE_ROOT

STACK_APP = ROOT / "nix" / "stack-app.sh"
STANDIN_SERVICES = {"loki", "promtail", "alloy", "grafana"}
# Built archives, reused while their inputs are unchanged (images are never pulled).
IMAGE_CACHE = CACHE_ROOT.parent / "warpwatch-test-images"
PASSWORD_LINE = re.compile(r"Grafana admin password \(user admin\), shown only this once: (\S+)")
FIXED_MTIME = 1


def store_path(name: str, version: str) -> str:
    return f"/nix/store/{'0' * 32}-{name}-{version}"


def evaluate(overrides: str, versions: dict[str, str] | None = None, role: str = "server") -> dict:
    """nix/stack/image-specs.nix with the declared image tags as package versions (so the images carry
    the declaration's name:tag) unless `versions` gives the real one, and what the flake hands the
    stack app (`role` "agent": what it hands `nix run .#agent`)."""
    tags = nix_eval("builtins.mapAttrs (_: s: s.image.tag) (import ./nix/stack { }).stack.services")
    tags |= versions or {}
    packages = {name: {"version": tag, "path": store_path(name, tag)} for name, tag in tags.items()}
    return nix_eval(
        f'let specs = import ./nix/stack/image-specs.nix {{ packages = {nix_value(packages)}; overrides = {overrides}; role = "{role}"; }}; in '
        "{ inherit (specs) images composeServices composeImages urls upTimeoutSeconds alertsNotice stack agentPlaceholders patterns; "
        "project = specs.api.compose.project; startIntervalFile = specs.api.compose.startIntervalFile; }"
    )


def shared_libraries(binary: Path) -> list[Path]:
    """The absolute paths `ldd` resolves for a dynamically linked binary (empty if static)."""
    proc = subprocess.run([require_tool("ldd"), str(binary)], capture_output=True, text=True)
    libs = []
    for line in proc.stdout.splitlines():
        words = line.replace("=>", " ").split()
        libs += [Path(w) for w in words if w.startswith("/")]
    return libs


class Rootfs:
    """A layer tarball built in memory: every entry with explicit owner, mode and mtime."""

    def __init__(self):
        self.buffer = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buffer, mode="w", format=tarfile.GNU_FORMAT)
        self.seen: set[str] = set()

    def directory(self, path: str, owner: int = 0, mode: int = 0o755):
        parts = path.strip("/").split("/")
        for i in range(1, len(parts)):
            self._dir("/".join(parts[:i]), 0, 0o755)
        self._dir("/".join(parts), owner, mode)

    def _dir(self, name: str, owner: int, mode: int):
        if name in self.seen:
            return
        self.seen.add(name)
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.uid, info.gid, info.mtime = tarfile.DIRTYPE, mode, owner, owner, FIXED_MTIME
        self.tar.addfile(info)

    def file(self, path: str, data: bytes, mode: int = 0o644):
        self.directory(str(Path(path).parent))
        info = tarfile.TarInfo(path.lstrip("/"))
        info.size, info.mode, info.mtime = len(data), mode, FIXED_MTIME
        self.seen.add(info.name)
        self.tar.addfile(info, io.BytesIO(data))

    def program(self, path: str, binary: Path):
        self.file(path, binary.read_bytes(), 0o755)
        for lib in shared_libraries(binary):
            if lib.as_posix().lstrip("/") not in self.seen:
                self.file(lib.as_posix(), lib.resolve().read_bytes(), 0o755)

    def close(self) -> bytes:
        self.tar.close()
        return self.buffer.getvalue()


# Files a Debian binary reads besides its libraries: Debian's Alertmanager loads its default
# notification templates from /usr/share (the upstream and nixpkgs binaries embed them).
DEBIAN_DATA = {"alertmanager": ["/usr/share/prometheus/alertmanager/default.tmpl", "/usr/share/prometheus/alertmanager/email.tmpl"]}


def layer_for(name: str, image: dict, binaries: dict[str, Path]) -> bytes:
    root = Rootfs()
    for path in DEBIAN_DATA.get(name, []):
        root.file(path, Path(path).read_bytes())
    for directory in image["directories"]:
        root.directory(directory["path"], int(directory["owner"]), int(directory["mode"], 8))
    # What fakeNss provides, plus the spec's own lines.
    passwd = ["root:x:0:0:root user:/var/empty:/bin/sh", "nobody:x:65534:65534:nobody:/var/empty:/bin/sh", *image["passwd"]]
    group = ["root:x:0:", "nobody:x:65534:", *image["group"]]
    root.file("/etc/passwd", ("\n".join(passwd) + "\n").encode())
    root.file("/etc/group", ("\n".join(group) + "\n").encode())
    entrypoint = image["config"]["Entrypoint"][0]
    assert entrypoint.startswith("/bin/"), f"{name}: the spec's entry point {entrypoint} is not under /bin"
    for content in image["contents"]:
        # The service's own binary where the spec's entry point names it (the node exporter's keeps
        # its upstream name, node_exporter); the others (the probe) under their package name.
        root.program(entrypoint if content == name else f"/bin/{content}", binaries[content])
    return root.close()


def docker_archive(name: str, image: dict, layer: bytes) -> bytes:
    """A `docker load` archive (manifest.json, config, one layer) for one image spec."""
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": image["created"],
            "config": image["config"],
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": image["created"], "created_by": f"tests/live: {name} as nix/stack/image-specs.nix lays it out"}],
        },
        sort_keys=True,
    ).encode()
    image_id = hashlib.sha256(config).hexdigest()
    manifest = json.dumps([{"Config": f"{image_id}.json", "RepoTags": [image["ref"]], "Layers": ["layer.tar"]}]).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for member, data in (("manifest.json", manifest), (f"{image_id}.json", config), ("layer.tar", layer)):
            info = tarfile.TarInfo(member)
            info.size, info.mtime = len(data), FIXED_MTIME
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_archives(specs: dict, binaries: dict[str, Path]) -> dict[str, Path]:
    """{service: archive path}, rebuilt only when an input (spec, binary, library) changed."""
    IMAGE_CACHE.mkdir(parents=True, exist_ok=True)
    archives = {}
    for name in specs["composeImages"]:
        image = specs["images"][name]
        inputs = [json.dumps(image, sort_keys=True)] + [file_digest(Path(p)) for p in DEBIAN_DATA.get(name, [])]
        for content in image["contents"]:
            inputs += [file_digest(binaries[content])] + [file_digest(lib) for lib in shared_libraries(binaries[content])]
        key = hashlib.sha256("\n".join(inputs).encode()).hexdigest()[:24]
        path = IMAGE_CACHE / f"{name}-{key}.tar"
        if not path.exists():
            for stale in IMAGE_CACHE.glob(f"{name}-*.tar"):
                stale.unlink()
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(docker_archive(name, image, layer_for(name, image, binaries)))
            tmp.rename(path)
        archives[name] = path
    return archives


def build_standin() -> Path:
    subprocess.run(
        ["cargo", "build", "--release", "--locked", "--example", "standin"], cwd=ROOT, check=True, capture_output=True
    )
    return ROOT / "target" / "release" / "examples" / "standin"


class Stack:
    """The running project: docker and docker-compose against the private engine."""

    def __init__(self, engine, specs: dict, tmp: Path, archives: dict[str, Path], compose: str):
        self.engine = engine
        self.specs = specs
        self.tmp = tmp
        self.archives = archives
        self.compose_bin = compose
        stack = specs["stack"]
        self.agent = stack["role"] == "agent"
        # As nix/stack-app.nix names them: an agent's project and state are its own.
        self.project = stack["project"] + ("-agent" if self.agent else "")
        self.state_dir = tmp / "state" / "warpwatch" / ("agent" if self.agent else "stack")
        streams = tmp / "streams"
        streams.mkdir(exist_ok=True)
        lines = []
        for name, archive in archives.items():
            script = streams / name
            # What dockerTools.streamLayeredImage is to the real app: a program printing the tar.
            script.write_text(f"#!/bin/sh\nexec cat '{archive}'\n")
            script.chmod(0o755)
            lines.append(f"{specs['images'][name]['ref']} {script}")
        self.app_env = {
            **engine.env,
            "XDG_STATE_HOME": str(tmp / "state"),
            "WARPWATCH_STACK_PROJECT": self.project,
            "WARPWATCH_STACK_COMPOSE": str(self.write_store_copy()),
            "WARPWATCH_STACK_IMAGES": "\n".join(lines),
            "WARPWATCH_STACK_URLS": specs["urls"],
            "WARPWATCH_STACK_ALERTS_NOTICE": specs["alertsNotice"],
            "WARPWATCH_STACK_SECRET_READER_UID": str(specs["stack"]["services"]["grafana"]["uid"]),
            "WARPWATCH_STACK_DOCKER_COMPOSE": compose,
            "WARPWATCH_STACK_UP_TIMEOUT": str(specs["upTimeoutSeconds"]),
            "WARPWATCH_STACK_START_INTERVAL_FILE": specs["startIntervalFile"],
        }
        # What nix/stack-app.nix adds: the receiver's TLS files, and for an agent its placeholders,
        # the declaration's rules for its flags and the uids that read its TLS files.
        if "receiver" in specs["composeServices"]:
            receiver = stack["receiver"]
            self.app_env["WARPWATCH_STACK_RECEIVER_UID"] = str(stack["services"]["receiver"]["uid"])
            self.app_env["WARPWATCH_STACK_RECEIVER_FILES"] = "\n".join(
                f"receiver.{field} {receiver[field]}" for field in ("certFile", "keyFile", "clientCaFile")
            )
        if self.agent:
            placeholders = specs["agentPlaceholders"]
            self.app_env |= {
                "WARPWATCH_STACK_ROLE": "agent",
                "WARPWATCH_AGENT_HOST_PLACEHOLDER": placeholders["host"],
                "WARPWATCH_AGENT_SERVER_PLACEHOLDER": placeholders["serverAddress"],
                "WARPWATCH_AGENT_TLS_DIR_PLACEHOLDER": placeholders["tlsDir"],
                "WARPWATCH_AGENT_HOST_PATTERN": specs["patterns"]["hostName"],
                "WARPWATCH_AGENT_SERVER_PATTERN": specs["patterns"]["serverAddress"],
                "WARPWATCH_AGENT_TLS_READERS": "\n".join(
                    f"{name} {stack['services'][name]['uid']}" for name in ("collector", stack["logShipper"])
                ),
            }

    def write_store_copy(self) -> Path:
        store = self.tmp / "store-compose"
        for rel, text in self.specs["project"].items():
            path = store / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            path.chmod(0o444)
        return store

    def app(self, *args: str, timeout: float = 400) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", str(STACK_APP), *args], env=self.app_env, capture_output=True, text=True, timeout=timeout
        )

    def compose(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [self.compose_bin, "--project-name", self.project, "--project-directory", str(self.state_dir),
             "--file", str(self.state_dir / "docker-compose.yml"), *args],
            env=self.engine.env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if proc.returncode != 0:
            pytest.fail(f"docker-compose {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}", pytrace=False)
        return proc

    def container(self, service: str) -> str:
        ids = self.compose("ps", "-q", service).stdout.split()
        assert len(ids) == 1, f"{service}: containers {ids}"
        return ids[0]

    def inspect(self, service: str) -> dict:
        return json.loads(self.engine.run(["inspect", self.container(service)]).stdout)[0]

    def ip(self, service: str) -> str:
        networks = self.inspect(service)["NetworkSettings"]["Networks"]
        return networks[f"{self.project}_internal"]["IPAddress"]

    def port(self, service: str) -> int:
        return self.specs["stack"]["services"][service]["port"]

    def url(self, service: str, path: str) -> str:
        """Published services on 127.0.0.1, the others at their container address on the
        project's own network (reachable from the host that runs the engine)."""
        stack = self.specs["stack"]
        host = stack["bindAddress"] if stack["services"][service]["published"] else self.ip(service)
        return f"http://{host}:{self.port(service)}{path}"

    def query(self, promql: str) -> list:
        """An instant query against the real Prometheus, through its HTTP API."""
        url = self.url("prometheus", "/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        status, body = http_get(url, timeout=10)
        answer = json.loads(body)
        assert status == 200 and answer["status"] == "success", answer
        return answer["data"]["result"]

    def logs(self, service: str, tail: int = 40) -> str:
        proc = self.engine.run(["logs", "--tail", str(tail), self.container(service)], check=False)
        return proc.stdout + proc.stderr

    def diagnostics(self) -> str:
        out = [self.compose("ps").stdout]
        for name in self.specs["composeServices"]:
            with_health = self.inspect(name)["State"].get("Health", {})
            out.append(f"--- {name}: {with_health.get('Status')} {json.dumps(with_health.get('Log', [])[-2:])}")
            out.append(self.logs(name, 15))
        return "\n".join(out)


def volume_dir(stack: Stack, service: str) -> Path:
    """Where the engine keeps a service's state volume (the test runs as root, like dockerd)."""
    name = f"{stack.project}_{service}-data"
    return Path(stack.engine.run(["volume", "inspect", "--format", "{{.Mountpoint}}", name]).stdout.strip())


def docker_time(text: str) -> float:
    """Docker's RFC 3339 timestamps carry nanoseconds; seconds since the epoch."""
    main, _, frac = text.rstrip("Z").partition(".")
    base = datetime.datetime.fromisoformat(main).replace(tzinfo=datetime.timezone.utc).timestamp()
    return base + (float("0." + frac) if frac else 0.0)


def time_to_healthy(stack: Stack) -> dict[str, float]:
    """Seconds from the first container start of the project to each service's first passing
    probe, read from Docker's own records (independent of how long `up` took to load images)."""
    states = {name: stack.inspect(name)["State"] for name in stack.specs["composeServices"]}
    first_start = min(docker_time(state["StartedAt"]) for state in states.values())
    healthy = {}
    for name, state in states.items():
        passed = [entry for entry in state["Health"]["Log"] if entry["ExitCode"] == 0]
        assert passed, f"{name} never passed a probe: {state['Health']}"
        healthy[name] = round(docker_time(passed[0]["End"]) - first_start, 1)
    return healthy


def debian_compose() -> str:
    """Debian's docker-compose 1.29: the compose binary the app is pointed at (Debian ships no
    Compose v2; the app takes whichever compose WARPWATCH_STACK_DOCKER_COMPOSE names)."""
    return require_tool("docker-compose")


def prometheus_binary() -> Path:
    return Path(os.path.realpath(require_tool("prometheus")))


def debian_binaries() -> dict[str, Path]:
    """The real programs the images run, by service (issue 17 adds Alertmanager and the node
    exporter, from Debian's prometheus-alertmanager and prometheus-node-exporter)."""
    return {
        "prometheus": prometheus_binary(),
        "alertmanager": Path(os.path.realpath(require_tool("prometheus-alertmanager"))),
        "node-exporter": Path(os.path.realpath(require_tool("prometheus-node-exporter"))),
        "receiver": Path(os.path.realpath(require_tool("nginx"))),
    }


def debian_prometheus_version() -> str:
    """The version of Debian's Prometheus, as its package would report it ("2.42.0+ds"): the
    collector's image tag, from which the compose file picks the agent-mode flag 2.x takes."""
    proc = subprocess.run([str(prometheus_binary()), "--version"], capture_output=True, text=True, timeout=30)
    match = re.search(r"version (\S+)", proc.stdout + proc.stderr)
    assert match, proc.stdout + proc.stderr
    return match.group(1)


def prepared_stack(
    engine, warpwatch_bin: Path, tmp: Path, overrides: str = "", versions: dict | None = None, role: str = "server"
) -> "Stack":
    """The project of the declaration + `overrides` (a Nix attribute set body; `role` "agent": the
    agent app's) with its images built, ready for the app's `up` on `engine`."""
    tmp.mkdir(parents=True, exist_ok=True)
    # dockerd's data root is the engine's own: the shipper reads the json-file logs there.
    specs = evaluate(f'{{ containerLogs.hostDir = "{engine.data_root}/containers"; {overrides} }}', versions, role)
    standin = build_standin()
    binaries = {"warpwatch": warpwatch_bin, **debian_binaries()}
    binaries |= {name: standin for name in STANDIN_SERVICES}
    started = time.monotonic()
    archives = build_archives(specs, binaries)
    stack = Stack(engine, specs, tmp, archives, debian_compose())
    stack.images_seconds = time.monotonic() - started
    return stack


@contextlib.contextmanager
def running_stack(
    engine, warpwatch_bin: Path, tmp: Path, overrides: str = "", versions: dict | None = None,
    role: str = "server", up_args: tuple[str, ...] = (),
):  # fmt: skip
    """The stack brought up by the stack app's `up` (`role` "agent": the agent app's, with
    `up_args`) on `engine`, taken down with its volumes at the end."""
    stack = prepared_stack(engine, warpwatch_bin, tmp, overrides, versions, role)
    started = time.monotonic()
    up = stack.app("up", *up_args)
    print(f"\nlive {role} ({stack.specs['stack']['logShipper']}): images {stack.images_seconds:.1f}s, `up` {time.monotonic() - started:.1f}s")
    if up.returncode != 0:
        pytest.fail(f"stack app `up` failed ({up.returncode}):\n{up.stderr}\n{stack.diagnostics()}", pytrace=False)
    stack.first_up = up
    try:
        yield stack
    finally:
        stack.compose("down", "-v", "--timeout", "10")
