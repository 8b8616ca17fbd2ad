"""The image specifications the flake hands to dockerTools (nix/stack/image-specs.nix), evaluated offline
with stand-in package versions, checked against the declaration and the rendered compose file."""

import re
import subprocess

import pytest
import yaml

from tests import spec
from tests.conftest import nix_eval, nix_eval_error
from tests.flake.helpers import FAKE_VERSIONS, declaration, eval_specs, specs_expr

SERVICES = [*spec.SERVICES, "alloy"]
DOCKER_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
NS = 1_000_000_000


@pytest.fixture(scope="module")
def decl():
    return declaration()


@pytest.fixture(scope="module")
def images():
    return eval_specs("specs.images")


@pytest.fixture(scope="module", params=["promtail", "alloy"])
def shipper_case(request):
    """For each log shipper: (image specs, compose document parsed from the rendered YAML)."""
    overrides = f'{{ logShipper = "{request.param}"; }}'
    result = eval_specs(
        '{ inherit (specs) images composeServices; yaml = specs.api.compose.project."docker-compose.yml"; }',
        overrides,
    )
    return request.param, result["images"], result["composeServices"], yaml.safe_load(result["yaml"])


def test_one_image_per_service(images):
    assert sorted(images) == sorted(SERVICES)


def test_compose_runs_exactly_the_built_images(shipper_case):
    shipper, images, compose_services, compose = shipper_case
    assert shipper in compose["services"]
    assert sorted(compose_services) == sorted(compose["services"])
    for name, service in compose["services"].items():
        assert service["image"] == images[name]["ref"] == f"{images[name]['name']}:{images[name]['tag']}"


def test_tags_are_the_package_versions_made_docker_safe(images):
    for name, image in images.items():
        assert DOCKER_TAG.fullmatch(image["tag"]), image["tag"]
        assert image["config"]["Labels"]["org.opencontainers.image.version"] == image["tag"]
    assert images["prometheus"]["tag"] == FAKE_VERSIONS["prometheus"]
    assert images["promtail"]["tag"] == FAKE_VERSIONS["promtail"]
    # "12.4.0+security-01": "+" is not valid in a tag.
    assert images["grafana"]["tag"] == "12.4.0-security-01"


@pytest.mark.parametrize(
    "version,tag",
    [("1.2.3", "1.2.3"), ("2.0+git.abc/def", "2.0-git.abc-def"), (".hidden", "v.hidden"), ("x" * 200, "x" * 128)],
)
def test_tag_sanitiser(version, tag):
    result = eval_specs(f'specs.toTag "{version}"')
    assert result == tag
    assert DOCKER_TAG.fullmatch(result)


def test_names_are_the_declared_image_names(images, decl):
    for name, image in images.items():
        assert image["name"] == decl["services"][name]["image"]["name"]


# The shippers read dockerd's root-owned json-file logs: uid 0, every capability dropped.
LOG_READERS = {"promtail", "alloy"}


def test_non_root_user_from_the_declaration(images, decl):
    for name, image in images.items():
        uid = decl["services"][name]["uid"]
        assert image["config"]["User"] == f"{uid}:{uid}"
        if name in LOG_READERS:
            assert uid == 0, name
            assert image["passwd"] == [] and image["group"] == [], "fakeNss already names root"
        else:
            assert uid >= 1000, name
            (line,) = image["passwd"]
            assert line.split(":")[2:4] == [str(uid), str(uid)]


def test_healthcheck_probes_the_required_endpoint_in_nanoseconds(images, decl):
    for name, image in images.items():
        check = image["config"]["Healthcheck"]
        assert check["Test"] == [
            "CMD",
            "/bin/warpwatch",
            "probe",
            f"http://127.0.0.1:{spec.PORTS[name]}{spec.HEALTH_PATHS[name]}",
        ]
        assert check["Interval"] == spec.HEALTHCHECK_INTERVAL_S * NS
        assert check["Timeout"] == spec.HEALTHCHECK_TIMEOUT_S * NS
        assert check["Retries"] == spec.HEALTHCHECK_RETRIES
        # The start period is not in the issue: the declared one, per service.
        assert check["StartPeriod"] == decl["services"][name]["startPeriodSeconds"] * NS
        for field in ("Interval", "Timeout", "StartPeriod"):
            assert isinstance(check[field], int) and check[field] >= 1_000_000  # Docker's 1 ms floor


def test_every_image_ships_the_probe_binary(images):
    for name, image in images.items():
        assert "warpwatch" in image["contents"], name
        assert name in image["contents"], name


def test_reproducible_timestamps(images):
    for image in images.values():
        assert image["created"] == image["mtime"] == "1970-01-01T00:00:01Z"


def test_exposed_port_and_entrypoint(images):
    for name, image in images.items():
        assert image["config"]["ExposedPorts"] == {f"{spec.PORTS[name]}/tcp": {}}
        entrypoint = image["config"]["Entrypoint"]
        # The node exporter's binary keeps its upstream name.
        assert entrypoint[0] == ("/bin/node_exporter" if name == "node-exporter" else f"/bin/{name}")
    # Grafana's package keeps conf/ and public/ under share/grafana of its store path.
    grafana = images["grafana"]["config"]["Entrypoint"]
    assert grafana[1:3] == ["server", "--homepath"]
    assert re.fullmatch(r"/nix/store/[0-9a-z]{32}-grafana-[^/]+/share/grafana", grafana[3])


def test_no_shell_in_any_image(images):
    for image in images.values():
        assert set(image["contents"]) <= set(SERVICES)  # service packages only: no bash, no busybox
        assert image["config"]["Healthcheck"]["Test"][0] == "CMD"  # exec form, no CMD-SHELL
        assert all(line.endswith(":/sbin/nologin") for line in image["passwd"])


def test_state_volumes_are_owned_by_the_user_compose_runs(shipper_case):
    # Docker seeds an empty named volume with the image directory's owner: the directory the
    # compose file mounts the volume on must exist in the image, owned by the uid the compose
    # file runs the container as (issue 8, defect 1: Promtail ran as 0 on a 10004-owned 0750 dir).
    _, images, _, compose = shipper_case
    for name, service in compose["services"].items():
        named_targets = [
            v.split(":")[1] for v in service.get("volumes", []) if not v.startswith(("/", "."))
        ]
        assert named_targets, f"{name} has no state volume"
        uid = service["user"].split(":")[0]
        assert images[name]["config"]["User"] == service["user"], name
        owned = {d["path"]: d for d in images[name]["directories"]}
        for target in named_targets:
            assert target in owned, f"{name}: volume target {target} missing from the image"
            assert owned[target]["owner"] == uid
            assert f"chown {uid}:{uid} .{target}" in images[name]["fakeRootCommands"]


def test_fake_root_commands_build_the_directories(images, tmp_path):
    # Run the generated commands in a scratch root, as dockerTools runs them in the image root.
    image = images["prometheus"]
    root = tmp_path / "root"
    root.mkdir()
    script = image["fakeRootCommands"].replace("chown ", ": chown ")  # ownership needs fakeroot
    subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=root, check=True)
    for d in image["directories"]:
        path = root / d["path"].lstrip("/")
        assert path.is_dir()
        assert oct(path.stat().st_mode & 0o7777) == oct(int(d["mode"], 8))


def test_overrides_reach_the_images():
    images = eval_specs("specs.images", "{ services.loki.port = 3101; healthcheck.intervalSeconds = 15; }")
    assert images["loki"]["config"]["ExposedPorts"] == {"3101/tcp": {}}
    assert images["loki"]["config"]["Healthcheck"]["Test"][-1].startswith("http://127.0.0.1:3101/")
    assert images["warpwatch"]["config"]["Healthcheck"]["Interval"] == 15 * NS


def test_invalid_override_fails_with_the_field_name():
    err = nix_eval_error(f"{specs_expr('{ services.loki.memoryMiB = -1; }')}.images.loki.config")
    assert "services.loki.memoryMiB" in err


def test_urls_list_the_published_services():
    lines = eval_specs("specs.urls").splitlines()
    assert sorted(lines) == sorted(f"{name}: http://{spec.LOOPBACK}:{spec.PORTS[name]}/" for name in spec.PUBLISHED)


def test_specs_are_pure_data():
    # Nothing in the specs needs nixpkgs: a bare nix-instantiate evaluates all of it.
    value = nix_eval(f"builtins.attrNames {specs_expr()}")
    assert {"api", "images", "composeServices", "urls"} <= set(value)
