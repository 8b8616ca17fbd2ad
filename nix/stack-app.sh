#!/usr/bin/env bash
# `nix run .#stack -- up|down|ps|logs [ARGS...]`: the compose stack on the local Docker daemon.
#
# The flake sets (nix/stack-app.nix):
#   WARPWATCH_STACK_PROJECT  compose project name
#   WARPWATCH_STACK_COMPOSE  directory with docker-compose.yml and every file it mounts
#   WARPWATCH_STACK_IMAGES   one "<image ref> <stream script>" per line (dockerTools.streamLayeredImage)
#   WARPWATCH_STACK_URLS     lines printed once the stack is healthy
#   WARPWATCH_STACK_ALERTS_NOTICE  printed after them when no alert receiver is declared (may be empty)
#   WARPWATCH_STACK_SECRET_READER_UID  Grafana's container uid (nix/stack/declaration.nix)
#   WARPWATCH_STACK_ALERTMANAGER_UID  Alertmanager's container uid (nix/stack/declaration.nix)
#   WARPWATCH_STACK_ALERTMANAGER_SECRETS  one "<receiver>.<field> <file>" per declared receiver
#                               secret file (may be empty)
#   WARPWATCH_STACK_DOCKER_COMPOSE  the pinned docker-compose (nixpkgs) that runs the project
#   WARPWATCH_STACK_UP_TIMEOUT  seconds `up` waits for every service to turn healthy
#   WARPWATCH_STACK_START_INTERVAL_FILE  compose file (in the project) with the healthchecks'
#                               start_interval, used only on Docker Engine 25 and newer
set -euo pipefail

prog="warpwatch stack"
die() {
  printf '%s: %s\n' "$prog" "$*" >&2
  exit 1
}
usage() {
  cat <<EOF
usage: nix run .#stack -- COMMAND [ARGS...]

  up      load the images into Docker, write the compose project, start it and wait until
          every service is healthy (extra ARGS go to 'docker-compose up -d')
  down    stop and remove the containers (volumes are kept; add -v to drop them)
  ps      list the containers
  logs    show the logs (e.g. logs -f grafana)

State (compose project, Grafana secrets): \${XDG_STATE_HOME:-\$HOME/.local/state}/warpwatch/stack
EOF
}

for var in WARPWATCH_STACK_PROJECT WARPWATCH_STACK_COMPOSE WARPWATCH_STACK_IMAGES \
  WARPWATCH_STACK_SECRET_READER_UID WARPWATCH_STACK_DOCKER_COMPOSE WARPWATCH_STACK_UP_TIMEOUT \
  WARPWATCH_STACK_START_INTERVAL_FILE; do
  [ -n "${!var:-}" ] || die "$var is not set: run this through 'nix run .#stack', which sets it"
done

command=${1:-}
case "$command" in
  up | down | ps | logs) shift ;;
  -h | --help | help)
    usage
    exit 0
    ;;
  "")
    usage >&2
    exit 2
    ;;
  *)
    printf '%s: unknown command %q\n\n' "$prog" "$command" >&2
    usage >&2
    exit 2
    ;;
esac

state_dir="${XDG_STATE_HOME:-$HOME/.local/state}/warpwatch/stack"
secrets_dir="$state_dir/secrets"

# The docker CLI and docker-compose come with the app (nix/stack-app.nix); only the daemon is the
# user's. Any compose that speaks the classic CLI works: nixpkgs' 5.x, Compose v2, 1.29.
check_docker() {
  command -v docker >/dev/null 2>&1 ||
    die "docker was not found on PATH. Run this through 'nix run .#stack', which brings the docker CLI, or install Docker Engine (https://docs.docker.com/engine/install/)."
  [ -x "$WARPWATCH_STACK_DOCKER_COMPOSE" ] ||
    die "docker-compose is not executable at $WARPWATCH_STACK_DOCKER_COMPOSE (WARPWATCH_STACK_DOCKER_COMPOSE): run this through 'nix run .#stack', which sets it"
  local err
  if ! err=$(docker info 2>&1 >/dev/null); then
    err=$(printf '%s\n' "$err" | grep -v '^[[:space:]]*$' | tail -n 1 || true)
    die "cannot reach the Docker daemon ('docker info' failed: ${err:-no output}). Start it (e.g. 'sudo systemctl start docker'), or check DOCKER_HOST and that your user may use the Docker socket (the 'docker' group)."
  fi
}

# Docker Engine 25 (API 1.44) and newer probe every start_interval during a start period, so a
# service turns healthy when it is ready instead of one whole interval after its start. Older
# engines (20.10) and docker-compose v1 refuse the key, so it lives in a compose file of its own
# that only such an engine gets.
engine_has_start_interval() {
  local api
  api=$(docker version --format '{{.Server.APIVersion}}' 2>/dev/null) || return 1
  [[ $api =~ ^([0-9]+)\.([0-9]+)$ ]] || return 1
  ((BASH_REMATCH[1] > 1 || (BASH_REMATCH[1] == 1 && BASH_REMATCH[2] >= 44)))
}

compose_run() {
  local files=(--file "$state_dir/docker-compose.yml")
  # A project written before the file existed is run without it.
  if [ -n "$start_interval" ] && [ -f "$state_dir/$WARPWATCH_STACK_START_INTERVAL_FILE" ]; then
    files+=(--file "$state_dir/$WARPWATCH_STACK_START_INTERVAL_FILE")
  fi
  "$WARPWATCH_STACK_DOCKER_COMPOSE" --project-name "$WARPWATCH_STACK_PROJECT" \
    --project-directory "$state_dir" "${files[@]}" "$@"
}

# The project files come from the Nix store (read-only); copies are rewritten on every `up` so the
# running stack always matches the flake. The containers' non-root users must read them: 0644/0755.
write_project() {
  mkdir -p "$state_dir"
  (
    umask 022
    cp -RL --no-preserve=mode,ownership "$WARPWATCH_STACK_COMPOSE"/. "$state_dir"/
  )
}

# A random secret, written atomically with mode 0600 if the file does not exist yet.
# Returns 0 when it created the file.
new_secret() {
  local file=$1 bytes=$2 tmp
  [ -s "$file" ] && return 1
  tmp=$(mktemp "$file.XXXXXX")
  od -An -tx1 -N"$bytes" /dev/urandom | tr -d ' \n' >"$tmp"
  chmod 0600 "$tmp"
  mv "$tmp" "$file"
}

write_secrets() {
  (
    umask 077
    mkdir -p "$secrets_dir"
  )
  chmod 0700 "$secrets_dir"
  new_secret "$secrets_dir/grafana-secret-key" 32 || true
  if new_secret "$secrets_dir/grafana-admin-password" 16; then
    printf 'Grafana admin password (user admin), shown only this once: %s\n' \
      "$(cat "$secrets_dir/grafana-admin-password")"
    printf '  stored in %s (mode 0600)\n' "$secrets_dir/grafana-admin-password"
  fi
  grant_secret_reader
}

# Compose mounts file secrets as bind mounts that keep their host owner and mode, so Grafana's
# non-root uid could not read a 0600 file of ours. A POSIX ACL lets that one uid read them; for
# everyone else they stay 0600. Rootless Docker runs container uid N as host uid (subuid start + N - 1).
# Args (both optional, Grafana's by default): the container uid and whose it is.
secret_reader_host_uid() {
  local uid=${1:-$WARPWATCH_STACK_SECRET_READER_UID} who=${2:-Grafana} user name start rest options
  # Captured first: `| grep -q` would race under pipefail (docker killed by SIGPIPE).
  options=$(docker info --format '{{.SecurityOptions}}' 2>/dev/null || true)
  if [[ $options == *rootless* ]]; then
    user=$(id -un)
    while IFS=: read -r name start rest; do
      if [ "$name" = "$user" ]; then
        printf '%s\n' "$((start + uid - 1))"
        return 0
      fi
    done <"${WARPWATCH_STACK_SUBUID_FILE:-/etc/subuid}"
    die "rootless Docker, but /etc/subuid has no range for $user: cannot tell which host uid $who runs as"
  fi
  printf '%s\n' "$uid"
}

grant_secret_reader() {
  local uid
  uid=$(secret_reader_host_uid)
  setfacl -m "u:$uid:r" "$secrets_dir/grafana-admin-password" "$secrets_dir/grafana-secret-key" ||
    die "could not let Grafana (host uid $uid) read the secrets in $secrets_dir: setfacl failed. Put XDG_STATE_HOME on a filesystem with POSIX ACLs (ext4, xfs, btrfs, tmpfs)."
}

# The receivers' secret files are the user's (alerts.receivers.*.*File); compose mounts each with
# its host owner, mode and ACL, and a file Alertmanager's uid cannot read makes it crash-loop with
# only a container log line to say why, so `up` checks them before it starts anything.
# Only the file's own permissions count: the bind mount skips its directories, so `test -r PATH`
# as that uid would refuse a file in a private directory. As root the kernel decides, asked about
# the file opened by root; otherwise owner, mode and ACL are read in the kernel's order, and where
# the answer turns on the container's gid (rootless Docker maps it to an unknown subgid) it is a
# warning, not an error.
check_alertmanager_secrets() {
  [ -n "${WARPWATCH_STACK_ALERTMANAGER_SECRETS:-}" ] || return 0
  local uid=${WARPWATCH_STACK_ALERTMANAGER_UID:-} host_uid gid field file what owner group mode
  local acl verdict entry tag qual perm owner_perm named_perm other_perm group_hit group_r groups_r groups_all_r fix
  [ -n "$uid" ] ||
    die "WARPWATCH_STACK_ALERTMANAGER_UID is not set: run this through 'nix run .#stack', which sets it"
  host_uid=$(secret_reader_host_uid "$uid" Alertmanager)
  # Rootful Docker runs it as uid:gid N:N with no other group (compose `user`, the image's /etc/group).
  gid=
  [ "$host_uid" = "$uid" ] && gid=$uid
  while read -r field file; do
    [ -n "$field" ] || continue
    what="alerts.receivers.$field ($file)"
    if [ ! -e "$file" ]; then
      if [ "$(id -u)" != 0 ] && [ ! -x "${file%/*}/" ]; then
        printf '%s: warning: cannot check %s: you may not enter %s. If Alertmanager does not turn healthy, see its log: nix run .#stack -- logs alertmanager\n' \
          "$prog" "$what" "${file%/*}/" >&2
        continue
      fi
      die "$what does not exist. Write the secret into it (the URL or password alone), or set alerts.receivers.$field to the file that holds it."
    fi
    [ -f "$file" ] ||
      die "$what is not a regular file (it is a $(stat -L -c %F -- "$file")): set alerts.receivers.$field to the file that holds the secret."
    owner=$(stat -L -c %u -- "$file")
    group=$(stat -L -c %g -- "$file")
    mode=$(stat -L -c %a -- "$file")
    fix="setfacl -m u:$host_uid:r $(printf '%q' "$file")"
    verdict=unknown
    if [ "$(id -u)" = 0 ] && [ -n "$gid" ] && command -v setpriv >/dev/null 2>&1; then
      verdict=no
      if { setpriv --reuid="$uid" --regid="$gid" --clear-groups test -r /dev/fd/3; } 3<"$file"; then
        verdict=yes
      fi
    elif acl=$(getfacl --absolute-names --omit-header --numeric -- "$file" 2>/dev/null); then
      owner_perm='' named_perm='' other_perm='' group_hit='' group_r='' groups_r='' groups_all_r=1
      while IFS= read -r entry; do
        IFS=: read -r tag qual perm <<<"${entry%%[[:space:]]*}"
        # A named entry or a group class entry limited by the mask: getfacl prints what is left.
        [[ $entry == *'#effective:'* ]] && perm=${entry##*#effective:}
        case "$tag:$qual" in
          user:) owner_perm=$perm ;;
          "user:$host_uid") named_perm=$perm ;;
          group:*)
            [ -n "$qual" ] || qual=$group
            if [[ $perm == r* ]]; then groups_r=1; else groups_all_r=''; fi
            if [ "$qual" = "$gid" ]; then
              group_hit=1
              [[ $perm == r* ]] && group_r=1
            fi
            ;;
          other:) other_perm=$perm ;;
        esac
      done <<<"$acl"
      if [ "$owner" = "$host_uid" ]; then
        [[ $owner_perm == r* ]] && verdict=yes || verdict=no
      elif [ -n "$named_perm" ]; then
        [[ $named_perm == r* ]] && verdict=yes || verdict=no
      elif [ -n "$group_hit" ]; then
        [ -n "$group_r" ] && verdict=yes || verdict=no
      elif [ -n "$gid" ] || { [ -n "$groups_all_r" ] && [[ $other_perm == r* ]]; }; then
        [[ $other_perm == r* ]] && verdict=yes || verdict=no
      elif [ -z "$groups_r" ] && [[ $other_perm != r* ]]; then
        verdict=no
      fi
    fi
    case "$verdict" in
      no)
        die "Alertmanager cannot read $what: it runs as uid $host_uid on this machine, the file is owner $owner, group $group, mode $mode. Let that uid read it and no one else (as the file's owner or root): $fix -- or make it world-readable: chmod 0644 $(printf '%q' "$file")"
        ;;
      unknown)
        printf '%s: warning: cannot tell whether Alertmanager (uid %s on this machine) may read %s (owner %s, group %s, mode %s): it depends on its group. If it does not turn healthy, let it read the file: %s\n' \
          "$prog" "$host_uid" "$what" "$owner" "$group" "$mode" "$fix" >&2
        ;;
    esac
  done <<<"$WARPWATCH_STACK_ALERTMANAGER_SECRETS"
}

load_images() {
  local ref script
  while read -r ref script; do
    [ -n "$ref" ] || continue
    printf 'loading image %s\n' "$ref"
    "$script" | docker image load >/dev/null ||
      die "loading image $ref failed (from $script | docker image load)"
  done <<<"$WARPWATCH_STACK_IMAGES"
}

# Until every container of the project reports "healthy". `up --wait` would do it, but only in
# Compose v2+; this works with every compose and names the services that are not healthy.
wait_healthy() {
  local deadline=$((SECONDS + WARPWATCH_STACK_UP_TIMEOUT)) ids states pending line
  ids=$(compose_run ps -q) || die "'docker-compose ps' failed"
  [ -n "$ids" ] || die "no container of project $WARPWATCH_STACK_PROJECT is running after 'up'"
  while :; do
    # shellcheck disable=SC2086 # one word per container id
    states=$(docker inspect --format \
      '{{index .Config.Labels "com.docker.compose.service"}} {{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' \
      $ids) || die "'docker inspect' of the stack's containers failed"
    pending=$(printf '%s\n' "$states" | grep -v ' healthy$' || true)
    [ -z "$pending" ] && return 0
    if [ "$SECONDS" -ge "$deadline" ]; then
      printf '%s: not healthy after %ss:\n' "$prog" "$WARPWATCH_STACK_UP_TIMEOUT" >&2
      while IFS= read -r line; do printf '  %s\n' "$line" >&2; done <<<"$pending"
      return 1
    fi
    sleep 1
  done
}

require_project() {
  [ -f "$state_dir/docker-compose.yml" ] ||
    die "no stack project in $state_dir yet: start it first with 'nix run .#stack -- up'"
}

check_docker
start_interval=
if engine_has_start_interval; then start_interval=1; fi
case "$command" in
  up)
    check_alertmanager_secrets
    write_project
    write_secrets
    load_images
    compose_run up -d "$@" || die "'docker-compose up' failed (see its message above)"
    wait_healthy ||
      die "the stack did not become healthy; see 'nix run .#stack -- ps' and 'nix run .#stack -- logs SERVICE'"
    printf '\nwarpwatch stack is up (project %s in %s):\n' "$WARPWATCH_STACK_PROJECT" "$state_dir"
    printf '%s\n' "${WARPWATCH_STACK_URLS:-}"
    if [ -n "${WARPWATCH_STACK_ALERTS_NOTICE:-}" ]; then
      printf '\n%s: %s\n' "$prog" "$WARPWATCH_STACK_ALERTS_NOTICE"
    fi
    ;;
  down)
    require_project
    compose_run down "$@"
    ;;
  ps)
    require_project
    compose_run ps "$@"
    ;;
  logs)
    require_project
    compose_run logs "$@"
    ;;
esac
