"""The stack with Alloy as the log shipper (`logShipper = "alloy"`), run for real: the same
contract as Promtail's (issue 8, defect 1: Alloy's image also seeded its state directory for a
uid compose did not run it as). The Promtail stack's full checks are in test_compose.py."""

import pytest

from tests import spec
from tests.conftest import wait_for
from tests.live.helpers import running_stack, time_to_healthy, volume_dir

SERVICES = {*spec.SERVICES} - {"promtail"} | {"alloy"}


@pytest.fixture(scope="module")
def alloy_stack(dockerd, warpwatch_bin, tmp_path_factory):
    with running_stack(dockerd, warpwatch_bin, tmp_path_factory.mktemp("alloy"), 'logShipper = "alloy";') as stack:
        yield stack


def test_alloy_stack_healthy_within_one_interval_plus_5s(alloy_stack):
    healthy = time_to_healthy(alloy_stack)
    print(f"\ntime to healthy with alloy (s): {healthy}")
    assert set(healthy) == SERVICES
    assert max(healthy.values()) <= spec.HEALTHCHECK_INTERVAL_S + spec.TIME_TO_HEALTHY_SLACK_S, healthy


def test_alloy_writes_its_storage_as_its_runtime_user_and_is_scraped(alloy_stack):
    state = volume_dir(alloy_stack, "alloy") / "standin-state"
    assert state.read_text() == "alloy rewritten\n"
    uid = alloy_stack.specs["stack"]["services"]["alloy"]["uid"]
    assert state.stat().st_uid == uid
    assert alloy_stack.inspect("alloy")["Config"]["User"] == f"{uid}:{uid}"

    def scraped():
        return {r["metric"]["job"]: r["value"][1] for r in alloy_stack.query('up{job="alloy"}')} == {"alloy": "1"}

    wait_for("up{job=alloy} == 1", scraped, deadline=3 * alloy_stack.specs["stack"]["prometheus"]["scrapeIntervalSeconds"], interval=1)
