"""CI installs exactly what `scripts/test --packages` prints (.ci/run), so every Debian package a
test names when its tool is missing must be in that list: otherwise CI passes only on machines
where somebody installed the package by hand."""

import subprocess

from tests.conftest import APT_PACKAGE, ROOT

# Essential on every Debian system: never missing, never installed by name.
ESSENTIAL = {"coreutils", "libc-bin"}


def ci_packages() -> set[str]:
    out = subprocess.run(
        [str(ROOT / "scripts" / "test"), "--packages"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    return set(out.split())


def test_ci_installs_the_package_of_every_tool_a_test_requires():
    needed = set(APT_PACKAGE.values()) - ESSENTIAL
    missing = needed - ci_packages()
    assert not missing, f"add the tools of {sorted(missing)} to scripts/test's provider list, so .ci/run installs them"


def test_the_package_list_is_debian_names_only():
    # The providers that are not Debian packages (rustup for cargo) must not reach apt-get.
    for package in ci_packages():
        assert package.replace("-", "").replace(".", "").replace("+", "").isalnum(), package
