#!/usr/bin/env bash
# `nix run .` : the service with per-user defaults, for a fresh machine.
#   - visits persist in ${XDG_STATE_HOME:-$HOME/.local/state}/warpwatch (WARPWATCH_DATA_DIR wins);
#   - it listens on loopback only (WARPWATCH_DEFAULT_ADDR, set by the flake from the declaration's
#     port); WARPWATCH_ADDR, or PORT alone, or --addr choose otherwise.
# Every argument goes to warpwatch unchanged (e.g. `nix run . -- --addr 0.0.0.0:8080`).
set -euo pipefail

: "${WARPWATCH_DEFAULT_ADDR:?WARPWATCH_DEFAULT_ADDR is not set: run this through nix run, which sets it}"

if [ -z "${WARPWATCH_DATA_DIR:-}" ]; then
  WARPWATCH_DATA_DIR="${XDG_STATE_HOME:-$HOME/.local/state}/warpwatch"
fi
mkdir -p "$WARPWATCH_DATA_DIR"
export WARPWATCH_DATA_DIR

if [ -z "${WARPWATCH_ADDR:-}" ]; then
  if [ -n "${PORT:-}" ]; then
    WARPWATCH_ADDR="${WARPWATCH_DEFAULT_ADDR%:*}:$PORT"
  else
    WARPWATCH_ADDR="$WARPWATCH_DEFAULT_ADDR"
  fi
fi
export WARPWATCH_ADDR

exec warpwatch "$@"
