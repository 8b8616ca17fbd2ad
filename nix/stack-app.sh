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
#   WARPWATCH_STACK_RECEIVER_UID  the receiver's container uid (server with receiver.enable)
#   WARPWATCH_STACK_RECEIVER_FILES  one "receiver.<field> <file>" per TLS file it reads (may be empty)
#
# `nix run .#agent` runs this same script for an agent's project, with also:
#   WARPWATCH_STACK_ROLE=agent
#   WARPWATCH_AGENT_HOST_PLACEHOLDER, WARPWATCH_AGENT_SERVER_PLACEHOLDER,
#   WARPWATCH_AGENT_TLS_DIR_PLACEHOLDER  what the rendered project holds where `up`'s --host,
#                               --server and --tls-dir go (nix/stack/image-specs.nix)
#   WARPWATCH_AGENT_HOST_PATTERN, WARPWATCH_AGENT_SERVER_PATTERN  the declaration's rules for a
#                               host name and a server address (nix/stack/lib.nix), as EREs
#   WARPWATCH_AGENT_TLS_READERS  one "<who> <container uid>" per collector reading the TLS files
set -euo pipefail

role=${WARPWATCH_STACK_ROLE:-server}
case "$role" in
  server) prog="warpwatch stack" app="stack" ;;
  agent) prog="warpwatch agent" app="agent" ;;
  *)
    printf 'warpwatch stack: WARPWATCH_STACK_ROLE must be server or agent (got %q)\n' "$role" >&2
    exit 1
    ;;
esac
die() {
  printf '%s: %s\n' "$prog" "$*" >&2
  exit 1
}
usage() {
  if [ "$role" = agent ]; then
    cat <<EOF
usage: nix run .#agent -- up --server HOST:PORT --tls-dir DIR [--host NAME] [ARGS...]
       nix run .#agent -- down|ps|logs [ARGS...]

  up      load the images into Docker, write the agent's compose project, start it and wait
          until every service is healthy (extra ARGS go to 'docker-compose up -d')
            --server HOST:PORT  the monitoring server's receiver (its receiver.port)
            --tls-dir DIR       holds client.crt and client.key (this host's certificate and
                                key, signed by the CA the server trusts) and ca.crt (the CA of
                                the server's certificate)
            --host NAME         the host label of everything this agent sends (default: this
                                machine's short host name)
  down    stop and remove the containers (volumes are kept; add -v to drop them)
  ps      list the containers
  logs    show the logs (e.g. logs -f collector)

Every agent service runs on the host's network and listens on 127.0.0.1 only.
State (compose project): \${XDG_STATE_HOME:-\$HOME/.local/state}/warpwatch/agent
EOF
    return
  fi
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
  [ -n "${!var:-}" ] || die "$var is not set: run this through 'nix run .#$app', which sets it"
done
if [ "$role" = agent ]; then
  for var in WARPWATCH_AGENT_HOST_PLACEHOLDER WARPWATCH_AGENT_SERVER_PLACEHOLDER \
    WARPWATCH_AGENT_TLS_DIR_PLACEHOLDER WARPWATCH_AGENT_HOST_PATTERN WARPWATCH_AGENT_SERVER_PATTERN \
    WARPWATCH_AGENT_TLS_READERS; do
    [ -n "${!var:-}" ] || die "$var is not set: run this through 'nix run .#agent', which sets it"
  done
fi

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

state_dir="${XDG_STATE_HOME:-$HOME/.local/state}/warpwatch/$app"
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
    # Rootless Docker's container root is the user who runs it.
    if [ "$uid" = 0 ]; then
      id -u
      return 0
    fi
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

# Files of the user's that a container reads through a bind mount (compose secrets keep the
# host's owner, mode and ACL): a file its uid cannot read makes the service crash-loop with only a
# container log line to say why, so `up` checks them before it starts anything.
# Only the file's own permissions count: the bind mount skips its directories, so `test -r PATH`
# as that uid would refuse a file in a private directory. As root the kernel decides, asked about
# the file opened by root (with no capability, as the container has none: that matters for uid 0);
# otherwise owner, mode and ACL are read in the kernel's order, and where the answer turns on the
# container's gid (rootless Docker maps it to an unknown subgid) it is a warning, not an error.
# Args: container uid, who runs as it, what the file is (printed), what to do when it is missing,
# what to do when it is not a regular file, the file.
check_readable() {
  local uid=$1 who=$2 what=$3 if_missing=$4 if_not_file=$5 file=$6
  local host_uid gid owner group mode acl verdict entry tag qual perm owner_perm named_perm other_perm
  local group_hit group_r groups_r groups_all_r fix
  host_uid=$(secret_reader_host_uid "$uid" "$who")
  # Rootful Docker runs it as uid:gid N:N with no other group (compose `user`, the image's /etc/group).
  gid=
  [ "$host_uid" = "$uid" ] && gid=$uid
  if [ ! -e "$file" ]; then
    if [ "$(id -u)" != 0 ] && [ ! -x "${file%/*}/" ]; then
      printf '%s: warning: cannot check %s: you may not enter %s. If %s does not turn healthy, see its log: nix run .#%s -- logs\n' \
        "$prog" "$what" "${file%/*}/" "$who" "$app" >&2
      return 0
    fi
    die "$what does not exist. $if_missing"
  fi
  [ -f "$file" ] ||
    die "$what is not a regular file (it is a $(stat -L -c %F -- "$file")): $if_not_file"
  owner=$(stat -L -c %u -- "$file")
  group=$(stat -L -c %g -- "$file")
  mode=$(stat -L -c %a -- "$file")
  fix="setfacl -m u:$host_uid:r $(printf '%q' "$file")"
  verdict=unknown
  if [ "$(id -u)" = 0 ] && [ -n "$gid" ] && command -v setpriv >/dev/null 2>&1; then
    verdict=no
    if { setpriv --reuid="$uid" --regid="$gid" --clear-groups --bounding-set=-all test -r /dev/fd/3; } 3<"$file"; then
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
      die "$who cannot read $what: it runs as uid $host_uid on this machine, the file is owner $owner, group $group, mode $mode. Let that uid read it and no one else (as the file's owner or root): $fix -- or make it world-readable: chmod 0644 $(printf '%q' "$file")"
      ;;
    unknown)
      printf '%s: warning: cannot tell whether %s (uid %s on this machine) may read %s (owner %s, group %s, mode %s): it depends on its group. If it does not turn healthy, let it read the file: %s\n' \
        "$prog" "$who" "$host_uid" "$what" "$owner" "$group" "$mode" "$fix" >&2
      ;;
  esac
}

# The receivers' secret files (alerts.receivers.*.*File), read by Alertmanager.
check_alertmanager_secrets() {
  [ -n "${WARPWATCH_STACK_ALERTMANAGER_SECRETS:-}" ] || return 0
  local field file
  [ -n "${WARPWATCH_STACK_ALERTMANAGER_UID:-}" ] ||
    die "WARPWATCH_STACK_ALERTMANAGER_UID is not set: run this through 'nix run .#stack', which sets it"
  while read -r field file; do
    [ -n "$field" ] || continue
    check_readable "$WARPWATCH_STACK_ALERTMANAGER_UID" Alertmanager "alerts.receivers.$field ($file)" \
      "Write the secret into it (the URL or password alone), or set alerts.receivers.$field to the file that holds it." \
      "set alerts.receivers.$field to the file that holds the secret." "$file"
  done <<<"$WARPWATCH_STACK_ALERTMANAGER_SECRETS"
}

# A server's receiver (nginx) reads its certificate, key and client CA (receiver.*File).
check_receiver_files() {
  [ -n "${WARPWATCH_STACK_RECEIVER_FILES:-}" ] || return 0
  local field file
  [ -n "${WARPWATCH_STACK_RECEIVER_UID:-}" ] ||
    die "WARPWATCH_STACK_RECEIVER_UID is not set: run this through 'nix run .#stack', which sets it"
  while read -r field file; do
    [ -n "$field" ] || continue
    check_readable "$WARPWATCH_STACK_RECEIVER_UID" "The receiver (nginx)" "$field ($file)" \
      "Put the PEM file there, or set $field to the file that holds it." \
      "set $field to the PEM file." "$file"
  done <<<"$WARPWATCH_STACK_RECEIVER_FILES"
}

# --- the agent: `up --server HOST:PORT --tls-dir DIR [--host NAME]` ------------------------------
agent_server='' agent_tls_dir='' agent_host=''
agent_tls_files=(client.crt client.key ca.crt)

# Takes up's own flags out of "$@"; the rest (agent_args) goes to 'docker-compose up -d'.
parse_agent_flags() {
  agent_args=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --server | --tls-dir | --host)
        [ $# -ge 2 ] || die "$1 needs a value (see 'nix run .#agent -- --help')"
        case "$1" in
          --server) agent_server=$2 ;;
          --tls-dir) agent_tls_dir=$2 ;;
          --host) agent_host=$2 ;;
        esac
        shift 2
        ;;
      --server=* | --tls-dir=* | --host=*)
        set -- "${1%%=*}" "${1#*=}" "${@:2}"
        ;;
      *)
        agent_args+=("$1")
        shift
        ;;
    esac
  done
}

# Everything the agent was given, checked before anything is written or started, with the
# declaration's own rules (nix/stack/lib.nix) for the host name and the server address.
check_agent_flags() {
  local name who uid
  [ -n "$agent_server" ] ||
    die "--server is missing: give the monitoring server's receiver as HOST:PORT, e.g. --server monitor.example.org:8443"
  [[ $agent_server =~ ^($WARPWATCH_AGENT_SERVER_PATTERN)$ ]] ||
    die "--server $(printf '%q' "$agent_server") is not HOST:PORT: give a DNS name, an IPv4 address or a bracketed IPv6 address, a colon and the receiver's port, e.g. --server monitor.example.org:8443"
  [ -n "$agent_tls_dir" ] ||
    die "--tls-dir is missing: give the directory that holds client.crt and client.key (this host's certificate and key) and ca.crt (the CA of the server's certificate), e.g. --tls-dir /etc/warpwatch/tls"
  [ -d "$agent_tls_dir" ] ||
    die "--tls-dir $(printf '%q' "$agent_tls_dir") is not a directory: give the directory that holds client.crt, client.key and ca.crt"
  agent_tls_dir=$(cd -- "$agent_tls_dir" && pwd -P)
  # The path goes into the compose file and is read by compose, which expands $.
  [[ $agent_tls_dir =~ ^/[A-Za-z0-9._/@+-]*$ ]] ||
    die "--tls-dir $(printf '%q' "$agent_tls_dir"): the path may hold only letters, digits and . _ / @ + -: move the files, or give a link to the directory from such a path"
  if [ -z "$agent_host" ]; then
    agent_host=$(uname -n)
    agent_host=${agent_host%%.*}
    agent_host=${agent_host,,}
    [[ $agent_host =~ ^($WARPWATCH_AGENT_HOST_PATTERN)$ ]] ||
      die "this machine's host name $(printf '%q' "$agent_host") is not a valid host label: give one with --host NAME (lower-case letters, digits, . - or _, starting with a letter or digit)"
  fi
  [[ $agent_host =~ ^($WARPWATCH_AGENT_HOST_PATTERN)$ ]] ||
    die "--host $(printf '%q' "$agent_host") is not a valid host name: use lower-case letters, digits, . - or _, starting with a letter or digit, e.g. --host app1"
  for name in "${agent_tls_files[@]}"; do
    while read -r who uid; do
      [ -n "$who" ] || continue
      check_readable "$uid" "The agent's $who" "$name in --tls-dir ($agent_tls_dir/$name)" \
        "Put $name there (client.crt and client.key: this host's certificate and key, signed by the CA the server trusts; ca.crt: the CA of the server's certificate), or give --tls-dir the directory that holds them." \
        "--tls-dir must hold $name as a file." "$agent_tls_dir/$name"
    done <<<"$WARPWATCH_AGENT_TLS_READERS"
  done
}

# The project was rendered with placeholders where the host's name, the server's address and the
# TLS directory go; each file of the copy gets the checked values (literal replacement).
fill_agent_project() {
  local file text
  shopt -s globstar nullglob
  for file in "$state_dir"/**/*.yml; do
    text=$(<"$file")
    text=${text//"$WARPWATCH_AGENT_SERVER_PLACEHOLDER"/"$agent_server"}
    text=${text//"$WARPWATCH_AGENT_HOST_PLACEHOLDER"/"$agent_host"}
    text=${text//"$WARPWATCH_AGENT_TLS_DIR_PLACEHOLDER"/"$agent_tls_dir"}
    printf '%s\n' "$text" >"$file"
  done
  shopt -u globstar nullglob
  if grep -rlF -e "$WARPWATCH_AGENT_SERVER_PLACEHOLDER" -e "$WARPWATCH_AGENT_HOST_PLACEHOLDER" \
    -e "$WARPWATCH_AGENT_TLS_DIR_PLACEHOLDER" "$state_dir" >/dev/null; then
    die "a placeholder is left in the project in $state_dir (a bug: please report it)"
  fi
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
    die "no $app project in $state_dir yet: start it first with 'nix run .#$app -- up'"
}

up_args=("$@")
if [ "$command" = up ] && [ "$role" = agent ]; then
  parse_agent_flags "$@"
  up_args=("${agent_args[@]}")
  check_agent_flags
fi
check_docker
start_interval=
if engine_has_start_interval; then start_interval=1; fi
case "$command" in
  up)
    check_alertmanager_secrets
    check_receiver_files
    write_project
    if [ "$role" = agent ]; then
      fill_agent_project
    else
      write_secrets
    fi
    load_images
    compose_run up -d "${up_args[@]}" || die "'docker-compose up' failed (see its message above)"
    wait_healthy ||
      die "the $app did not become healthy; see 'nix run .#$app -- ps' and 'nix run .#$app -- logs SERVICE'"
    printf '\nwarpwatch %s is up (project %s in %s):\n' "$app" "$WARPWATCH_STACK_PROJECT" "$state_dir"
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
