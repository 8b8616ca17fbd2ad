# The healthcheck of one unit: a timer runs the probe every intervalSeconds; `retries` failures in
# a row (outside the start period, as in Docker) restart the unit. The counter lives in /run, so a
# reboot starts clean; every failure and restart is logged to the journal with a priority.
{
  stack,
  warpwatch,
  systemd,
  unitOf,
  urlOf,
  sandbox,
  ...
}:
name:
let
  inherit (import ../lib.nix) seconds;
  service = stack.services.${name};
  unit = unitOf name;
  hc = stack.healthcheck;
  unitName = "${stack.project}-health-${name}";
in
{
  systemd.services.${unitName} = {
    description = "Healthcheck of ${unit}";
    script = ''
      state="$RUNTIME_DIRECTORY/failures"
      if ! ${systemd}/bin/systemctl is-active --quiet ${unit}; then
        # Stopped on purpose or already being restarted by systemd: not ours to judge.
        echo 0 > "$state"
        exit 0
      fi
      entered=$(${systemd}/bin/systemctl show --property=ActiveEnterTimestampMonotonic --value ${unit})
      read -r uptime _ < /proc/uptime
      if [ $(( ''${uptime%.*} * 1000000 - entered )) -lt ${
        toString (service.startPeriodSeconds * 1000000)
      } ]; then
        exit 0
      fi
      if reason=$(${warpwatch}/bin/warpwatch probe --timeout ${toString hc.timeoutSeconds} ${urlOf name}${service.healthPath} 2>&1); then
        echo 0 > "$state"
        exit 0
      fi
      previous=$(cat "$state" 2>/dev/null || true)
      failures=$(( ''${previous:-0} + 1 ))
      echo "$failures" > "$state"
      echo "<4>${name} healthcheck failed ($failures/${toString hc.retries}): $reason"
      if [ "$failures" -ge ${toString hc.retries} ]; then
        echo 0 > "$state"
        echo "<3>${name} unhealthy after ${toString hc.retries} consecutive failed probes: restarting ${unit}"
        ${systemd}/bin/systemctl restart --no-block ${unit}
      fi
    '';
    # Root only to reach systemd's private socket for the restart; otherwise the sandbox,
    # with the failure counter in /run.
    serviceConfig = sandbox // {
      Type = "oneshot";
      RuntimeDirectory = "${stack.project}-health/${name}";
      RuntimeDirectoryPreserve = "yes";
      TimeoutStartSec = seconds (hc.timeoutSeconds + 5);
      RestrictAddressFamilies = [
        "AF_UNIX"
        "AF_INET"
        "AF_INET6"
      ];
    };
  };
  systemd.timers.${unitName} = {
    description = "Healthcheck of ${unit} every ${seconds hc.intervalSeconds}";
    wantedBy = [ "timers.target" ];
    timerConfig = {
      OnActiveSec = seconds hc.intervalSeconds;
      OnUnitActiveSec = seconds hc.intervalSeconds;
      AccuracySec = "1s";
    };
  };
}
