#!/usr/bin/env bash
# Install everything mlrig needs on a Debian 12 machine, idempotently:
# Debian packages, the .venv with mlrig and its dev tools, a Docker engine, a base image.
# Re-running it is fast and changes nothing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

APT_PACKAGES=(docker.io docker-registry mmdebstrap postgresql git ca-certificates nginx chromium)
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3

say() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    say "missing Debian packages: ${missing[*]} — run this script as root (or install them)"; exit 4
  fi
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d keeps apt from trying to start services: mlrig starts what it needs itself
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

stamp=.venv/.mlrig-installed
if [[ ! -x .venv/bin/python ]]; then
  say "creating .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv .venv
fi
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
  say "installing mlrig and its dependencies into .venv (first time: ~2 min)"
  .venv/bin/python -m pip install -q --upgrade pip setuptools wheel
  # mlrig is one namespace in two folders (cli/, infra/), so setuptools' editable install
  # maps it with an import hook and prints an "Editable installation." notice about it:
  # that one notice is expected and hidden; any other build warning still shows
  PYTHONWARNINGS="ignore:Editable installation:UserWarning" \
    .venv/bin/python -m pip install -q -e ".[dev]"
  touch "$stamp"
fi

# a Docker engine (sandbox-safe dockerd when none answers) and the offline base image
.venv/bin/mlrig setup engine
