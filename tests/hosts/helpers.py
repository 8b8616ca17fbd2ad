"""Helpers for the many-hosts tests: certificates made with the real openssl, and the stack's
renderings for a server and its agents, and a network namespace joined to the test's side by a
veth pair (a second "host" on this machine)."""

import datetime
import ipaddress
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.conftest import nix_eval, nix_value, require_tool
from tests.dockerd import host_networks
from tests.stack.helpers import stack_expr


def openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run([require_tool("openssl"), *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"openssl {' '.join(args)}:\n{proc.stderr}"


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed CA: (certificate, key)."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-days", "2", "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert),
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    return cert, key


def issue(directory: Path, ca: tuple[Path, Path], name: str, usage: str, sans: list[str]) -> tuple[Path, Path]:
    """A leaf certificate signed by `ca` for `usage` ("serverAuth" or "clientAuth")."""
    cert, key, csr = directory / f"{name}.crt", directory / f"{name}.key", directory / f"{name}.csr"
    ext = directory / f"{name}.ext"
    alt = ",".join(f"IP:{s}" if s.replace(".", "").isdigit() else f"DNS:{s}" for s in sans)
    ext.write_text(f"basicConstraints=CA:FALSE\nextendedKeyUsage={usage}\n" + (f"subjectAltName={alt}\n" if alt else ""))
    openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(csr), cwd=directory,
    )  # fmt: skip
    openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
        "-days", "2", "-extfile", str(ext), "-out", str(cert), cwd=directory,
    )  # fmt: skip
    return cert, key


def revoke(directory: Path, ca: tuple[Path, Path], certificates: list[Path], expired: bool = False) -> Path:
    """The CA's CRL (PEM) revoking `certificates`, made as README "Many hosts" tells the user:
    `openssl ca -revoke` for each into the CA's database (`directory`, created on first use),
    then `openssl ca -gencrl`: valid for a day, or `expired` (its nextUpdate an hour ago)."""
    database = directory / "index.txt"
    config = directory / "ca.cnf"
    if not config.exists():
        directory.mkdir(parents=True, exist_ok=True)
        database.touch()
        (directory / "crlnumber").write_text("01\n")
        config.write_text(
            "[ca]\ndefault_ca = the_ca\n[the_ca]\n"
            f"database = {database}\ncrlnumber = {directory / 'crlnumber'}\n"
            f"certificate = {ca[0]}\nprivate_key = {ca[1]}\ndefault_md = sha256\ndefault_crl_days = 1\n"
        )
    for certificate in certificates:
        openssl("ca", "-config", str(config), "-revoke", str(certificate), cwd=directory)
    crl = directory / "ca.crl"
    window = []
    if expired:
        now = datetime.datetime.now(datetime.timezone.utc)
        last, until = (f"{now - datetime.timedelta(hours=hours):%Y%m%d%H%M%SZ}" for hours in (2, 1))
        window = ["-crl_lastupdate", last, "-crl_nextupdate", until]
    openssl("ca", "-config", str(config), "-gencrl", *window, "-out", str(crl), cwd=directory)
    return crl


def make_pki(directory: Path, server_names: list[str], agents: list[str]) -> dict:
    """The user's CA, the server's certificate, a client certificate per agent, and a second CA
    with a client certificate of its own (the stranger the receiver must refuse)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = make_ca(directory, "ca")
    other_ca = make_ca(directory, "other-ca")
    return {
        "ca": ca,
        "server": issue(directory, ca, "server", "serverAuth", server_names),
        "clients": {name: issue(directory, ca, name, "clientAuth", []) for name in agents},
        "other_ca": other_ca,
        "stranger": issue(directory, other_ca, "stranger", "clientAuth", []),
    }


def agent_overrides(name: str, server: str, tls_dir: str = "/etc/warpwatch/tls", **extra) -> dict:
    overrides = {
        "role": "agent",
        "hosts": {"name": name},
        "agent": {
            "serverAddress": server,
            "certFile": f"{tls_dir}/client.crt",
            "keyFile": f"{tls_dir}/client.key",
            "caFile": f"{tls_dir}/ca.crt",
        },
    }
    overrides.update(extra)
    return overrides


def server_overrides(expected: list[str] | None, tls_dir: str = "/etc/warpwatch/tls", **extra) -> dict:
    overrides = {
        "receiver": {
            "enable": True,
            "certFile": f"{tls_dir}/server.crt",
            "keyFile": f"{tls_dir}/server.key",
            "clientCaFile": f"{tls_dir}/client-ca.crt",
        },
    }
    if expected is not None:
        overrides["hosts"] = {"expected": expected}
    for key, value in extra.items():
        overrides[key] = {**overrides.get(key, {}), **value} if isinstance(value, dict) else value
    return overrides


def confined(args: list[str], writable: list[Path]) -> list[str]:
    """`args` run the way the compose file runs a service's container: in a mount namespace of
    its own whose root is read-only but for `writable` (bind mounts of themselves), with every
    capability dropped and no_new_privs set (util-linux's unshare and setpriv)."""
    binds = "".join(f'mount --bind "{p}" "{p}" && ' for p in writable)
    script = f'{binds}mount -o remount,bind,ro / && exec "$@"'
    setpriv = [require_tool("setpriv"), "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all"]
    return [require_tool("unshare"), "--mount", "--propagation", "private", "sh", "-c", script, "sh", *setpriv, *args]


def render(body: str, overrides: dict):
    """Evaluate `body` with `s` bound to the stack under these overrides."""
    return nix_eval(stack_expr(body, nix_value(overrides)))


def render_yaml_text(config: str, overrides: dict, args: str = "") -> str:
    return render(f"s.toYAML (s.configs.{config} {{ {args} }})", overrides)


def ip(*args: str) -> None:
    proc = subprocess.run([require_tool("ip"), *args], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, f"ip {' '.join(args)}: {proc.stderr}"


def free_link() -> tuple[str, str]:
    """Two addresses of a /30 in 10.213.0.0/16 that no host route or address overlaps (the veth
    link between the test's side and the agent's namespace); a /30 another run holds is taken too."""
    taken = host_networks()
    for link in ipaddress.ip_network("10.213.0.0/16").subnets(new_prefix=30):
        if not any(net.overlaps(link) for net in taken):
            first, second = list(link.hosts())
            return str(first), str(second)
    pytest.fail("no free /30 in 10.213.0.0/16 for the veth link: free a route there", pytrace=False)


class Namespace:
    """A network namespace with loopback up and one end of a veth pair; the other end, on the
    test's side, carries the server's address."""

    def __init__(self):
        tag = uuid.uuid4().hex[:6]
        self.name, self.host_if, self.agent_if = f"wwh-{tag}", f"wwh{tag}s", f"wwh{tag}a"
        self.server_ip, self.agent_ip = free_link()

    def __enter__(self):
        ip("netns", "add", self.name)
        ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.agent_if)
        ip("link", "set", self.agent_if, "netns", self.name)
        ip("addr", "add", f"{self.server_ip}/30", "dev", self.host_if)
        ip("link", "set", self.host_if, "up")
        self.exec_ip("link", "set", "lo", "up")
        self.exec_ip("addr", "add", f"{self.agent_ip}/30", "dev", self.agent_if)
        self.exec_ip("link", "set", self.agent_if, "up")
        return self

    def exec_ip(self, *args):
        ip("netns", "exec", self.name, "ip", *args)

    def popen(self, args, log: Path | None, env=None):
        """`args` in the namespace, its output appended to `log` (or a pipe if None)."""
        return subprocess.Popen(
            [require_tool("ip"), "netns", "exec", self.name, *args],
            stdout=log.open("ab") if log else subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip

    def __exit__(self, *exc):
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
