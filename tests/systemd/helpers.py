"""A Debian bookworm container booting systemd as PID 1 on the tests' private dockerd, with the
units of the offline NixOS mapping installed the way NixOS installs them.

- The image: `debootstrap --variant=minbase` of Debian's packages, `docker import`ed as a local
  tag named after its recipe; built only when the engine lacks it (never pulled).
- Run without --privileged (this dockerd lacks CAP_SYS_RESOURCE to hand out): the capabilities
  systemd needs are added one by one, seccomp unconfined (systemd installs its own filters),
  the host cgroup namespace with /sys/fs/cgroup read-write (systemd delegates below its own
  cgroup), tmpfs /run and /run/lock, and no network but loopback, unless a test puts several
  machines on a private network of its own (`network`, with DNS `aliases`).
- /nix/store is a read-only bind mount of a directory standing for it: the mapping's store paths
  exist there, the warpwatch one holding the real binary (bind-mounted too), the others holding
  links to the Debian programs of the package they stand for (coreutils' ln and cat, systemd's
  systemctl, ...), so a unit finds at its store path what NixOS would put there.
"""

import hashlib
import json
import re
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.dockerd import CACHE_ROOT, Dockerd
from tests.nixos.helpers import FAKE, SYSTEM_FAKE, mapping
from tests.nixos.units import Store, render_system, wants_links

SUITE = "bookworm"
PACKAGES = ("systemd", "systemd-sysv", "dbus", "procps", "util-linux", "curl")
# What `docker import` records; the container is told it runs in a container (systemd reads it).
IMAGE_CHANGES = ('CMD ["/sbin/init"]', "ENV container=docker")
RECIPE = {"suite": SUITE, "variant": "minbase", "include": PACKAGES, "changes": IMAGE_CHANGES}
IMAGE = f"warpwatch-test/systemd:{SUITE}-{hashlib.sha256(json.dumps(RECIPE).encode()).hexdigest()[:12]}"
DEBOOTSTRAP_TIMEOUT_S = 900

# Beyond Docker's default set, what PID 1 of a host has and the units' sandboxing uses:
# SYS_ADMIN for the mounts and namespaces of every sandboxing directive (PrivateTmp,
# ProtectSystem, PrivateUsers, ...); SYS_PTRACE because with ProtectProc=invisible the service's
# /proc hides every process it may not ptrace, including its own parent writing its user
# namespace's uid_map (PrivateUsers=), which then fails with 217/USER "No such file or directory"
# (systemd issue #29656). CAP_SYS_RESOURCE is not ours to give: this dockerd lacks it.
CAPABILITIES = ("SYS_ADMIN", "SYS_PTRACE")

# The Debian package of the image whose programs stand for each package NixOS puts on a unit's
# PATH or runs its scripts with.
DEBIAN_PACKAGE = {
    "coreutils": "coreutils",
    "findutils": "findutils",
    "gnugrep": "grep",
    "gnused": "sed",
    "systemd": "systemd",
    "bash": "bash",
}
BOOT_TIMEOUT_S = 60


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (deb822 .sources or a sources.list line)."""
    candidates = []
    for path in sorted(Path("/etc/apt").glob("sources.list.d/*.sources")):
        for stanza in path.read_text().split("\n\n"):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if uris and suites and SUITE in suites.group(1).split():
                candidates.append(uris.group(1))
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt").glob("sources.list.d/*.list"))]:
        if path.is_file():
            candidates += re.findall(rf"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+{SUITE}\s", path.read_text(), re.M)
    if not candidates:
        pytest.fail(f"no Debian {SUITE} mirror in /etc/apt/sources.list*: debootstrap needs one", pytrace=False)
    return candidates[0]


def systemd_image(engine: Dockerd) -> str:
    """The image tag, built (about a minute) and imported when this engine does not have it."""
    if engine.has_image(IMAGE):
        return IMAGE
    debootstrap = require_tool("debootstrap")
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE_ROOT, prefix="rootfs-") as build:
        rootfs = Path(build) / "root"
        proc = subprocess.run(
            [debootstrap, "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, rootfs, debian_mirror()],
            capture_output=True,
            text=True,
            timeout=DEBOOTSTRAP_TIMEOUT_S,
        )
        if proc.returncode != 0:
            pytest.fail(f"debootstrap of the systemd image failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}", pytrace=False)
        tar_path = Path(build) / "rootfs.tar"
        with tarfile.open(tar_path, "w") as tar:
            tar.add(rootfs, arcname=".")
        engine.import_image(tar_path, IMAGE, changes=IMAGE_CHANGES)
    return IMAGE


def package_programs(engine: Dockerd, image: str, packages) -> dict[str, list[str]]:
    """{Debian package: its programs in /usr/bin, /usr/sbin, /bin, /sbin}, read from the image."""
    lists = " ".join(f"/var/lib/dpkg/info/{p}.list" for p in packages)
    out = engine.run(["run", "--rm", "--pull", "never", "--network", "none", image, "sh", "-c", f"grep -H . {lists}"]).stdout
    programs = {p: [] for p in packages}
    for line in out.splitlines():
        list_file, path = line.split(":", 1)
        if re.fullmatch(r"/(usr/)?s?bin/[^/]+", path):
            programs[Path(list_file).stem].append(path)
    return programs


class Machine:
    """The running container: `sh(cmd)` runs a shell command in it, `install(result)` puts a
    mapping result's units and /etc files in place."""

    def __init__(self, engine: Dockerd, work: Path, warpwatch_bin: Path, diagnostics=(), network="none", aliases=()):
        self.engine = engine
        self.diagnostics = diagnostics  # shell commands whose output explains a timed-out wait
        self.image = systemd_image(engine)
        self.name = f"ww-systemd-{work.name}"[:60]
        self.store = Store(work / "store")
        self.store.directory.chmod(0o755)  # DynamicUser services must traverse it
        self.work = work
        programs = package_programs(engine, self.image, set(DEBIAN_PACKAGE.values()))
        for name, deb in DEBIAN_PACKAGE.items():
            bin_dir = self.store.directory / Path(SYSTEM_FAKE[name]).name / "bin"
            bin_dir.mkdir(parents=True, exist_ok=True)
            for program in programs[deb]:
                link = bin_dir / Path(program).name
                if not link.is_symlink():
                    link.symlink_to(program)
        warpwatch_dir = self.store.directory / Path(FAKE["warpwatch"]).name / "bin"
        warpwatch_dir.mkdir(parents=True, exist_ok=True)
        (warpwatch_dir / "warpwatch").touch()  # the mount point of the real binary
        args = ["create", "--pull", "never", "--name", self.name, "--hostname", "warpwatch-test",
                "--network", network, *(a for alias in aliases for a in ("--network-alias", alias)), "--stop-signal", "SIGRTMIN+3", "--stop-timeout", "60",
                "--security-opt", "seccomp=unconfined", "--cgroupns=host",
                "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--tmpfs", "/run", "--tmpfs", "/run/lock",
                "-v", f"{self.store.directory}:/nix/store:ro",
                "-v", f"{warpwatch_bin.resolve()}:{FAKE['warpwatch']}/bin/warpwatch:ro"]  # fmt: skip
        for cap in CAPABILITIES:
            args += ["--cap-add", cap]
        engine.run([*args, self.image])

    def render(self, result: dict) -> dict[str, str]:
        return render_system(result, self.store, SYSTEM_FAKE, SYSTEM_FAKE["bash"])

    def install(self, result: dict):
        """Write the units and /etc files of `result` into the container's /etc (links included),
        then reload systemd if it runs."""
        tree = Path(tempfile.mkdtemp(dir=self.work, prefix="etc-"))
        for rel, text in self.render(result).items():
            (tree / rel).parent.mkdir(parents=True, exist_ok=True)
            (tree / rel).write_text(text)
        for rel, target in wants_links(result).items():
            (tree / "systemd/system" / rel).parent.mkdir(parents=True, exist_ok=True)
            (tree / "systemd/system" / rel).symlink_to(target)
        self.engine.run(["cp", f"{tree}/.", f"{self.name}:/etc/"])
        if self.running():
            self.sh("systemctl daemon-reload")

    def running(self) -> bool:
        return self.engine.run(["inspect", "-f", "{{.State.Running}}", self.name]).stdout.strip() == "true"

    def boot(self):
        self.engine.run(["start", self.name])
        self.wait_booted()

    def reboot(self):
        self.engine.run(["restart", "-t", "60", self.name], timeout=120)
        self.wait_booted()

    def wait_booted(self):
        end = time.monotonic() + BOOT_TIMEOUT_S
        state = ""
        while time.monotonic() < end:
            state = self.sh("systemctl is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                break
            time.sleep(0.3)
        if state != "running":
            failed = self.sh("systemctl --failed --no-legend; journalctl -b --no-pager -n 40", check=False).stdout
            pytest.fail(f"systemd in {self.name} did not reach 'running' (state {state!r}):\n{failed}", pytrace=False)

    def sh(self, command: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        return self.engine.run(["exec", self.name, "sh", "-c", command], check=check, timeout=timeout)

    def put(self, path: str, text: str, mode: str):
        """Write a file into the running machine (also under a tmpfs such as /run, where
        `docker cp` cannot write), owned by root."""
        self.engine.run(
            ["exec", "-i", self.name, "sh", "-c", f"mkdir -p $(dirname {path}) && cat > {path} && chmod {mode} {path}"],
            input=text,
        )

    def show(self, unit: str, prop: str) -> str:
        return self.sh(f"systemctl show --property={prop} --value {unit}").stdout.strip()

    def wait(self, what: str, probe, deadline: float = 30):
        end = time.monotonic() + deadline
        last = None
        while time.monotonic() < end:
            last = probe()
            if last:
                return last
            time.sleep(0.2)
        explained = "\n".join(f"$ {c}\n{self.sh(c + ' 2>&1', check=False).stdout}" for c in self.diagnostics)
        pytest.fail(f"timed out after {deadline}s waiting for {what} (last: {last!r})\n{explained}", pytrace=False)


def service_mapping(overrides: dict | None = None) -> dict:
    """The `service` part of the mapping (the warpwatch unit, its healthcheck, its journal
    settings), with the mapping's stand-in store paths, priority wrappers resolved."""
    return mapping(overrides)["service"]
