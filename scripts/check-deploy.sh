#!/usr/bin/env bash
# Checks the operator files with the tools that can run here: `systemd-analyze verify` on the
# unit (with ExecStart pointed at a stand-in, the real binary not being installed) and
# hadolint on the Dockerfile (`.ci/deps.sh` installs it; CI=true: missing tools fail).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
missing=()
if command -v systemd-analyze >/dev/null; then
  sed 's#^ExecStart=/usr/local/bin/flotilla#ExecStart=/bin/true#' \
    "$root/deploy/flotilla.service" > "$tmp/flotilla.service"
  out="$(systemd-analyze verify "$tmp/flotilla.service" 2>&1 || true)"
  if [ -n "$out" ]; then
    echo "$out"
    exit 1
  fi
  echo "systemd-analyze verify: ok"
else
  missing+=(systemd-analyze)
fi
hadolint="${FLOTILLA_HADOLINT_BIN:-$HOME/.cache/flotilla/hadolint-venv/bin/hadolint}"
[ -x "$hadolint" ] || hadolint="$(command -v hadolint || true)"
if [ -n "$hadolint" ]; then
  "$hadolint" --config "$root/.hadolint.yaml" "$root/Dockerfile"
  echo "hadolint: ok"
else
  missing+=(hadolint)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "not installed: ${missing[*]}"
  [ "${CI:-}" = "true" ] && exit 1
fi
exit 0
