#!/usr/bin/env bash
# Installs Schemathesis (a property-based API tester from PyPI that reads an OpenAPI
# document and generates requests from it) once, into a virtualenv under target/, and
# prints the path of its command on the last line of stdout. tests/openapi.rs calls it;
# a second call is instant.
#
#   scripts/schemathesis.sh
#
# Needs python3 with venv (installed with apt-get when missing and run as root) and PyPI.
# Cache: $CARGO_TARGET_DIR/tools/schemathesis, else <repo>/target/tools/schemathesis.
# Exit status: 0 installed or cached; 1 anything else (the message says what).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Pinned: a newer release may add checks, which is a change to make on purpose.
VERSION=4.32.5
VENV=${CARGO_TARGET_DIR:-$REPO/target}/tools/schemathesis
BIN="$VENV/bin/schemathesis"

log() { echo "schemathesis.sh: $*" >&2; }

if [[ -x "$BIN" ]] && "$BIN" --version 2>/dev/null | grep -q "$VERSION"; then
  echo "$BIN"
  exit 0
fi

mkdir -p "$(dirname "$VENV")"
# One install at a time: a second caller waits, then finds it installed.
exec 9>"$(dirname "$VENV")/.schemathesis.lock"
flock 9
if [[ -x "$BIN" ]] && "$BIN" --version 2>/dev/null | grep -q "$VERSION"; then
  echo "$BIN"
  exit 0
fi

if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    log "installing python3 and python3-venv with apt-get"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv) >&2
  else
    log "python3 with venv is missing (apt-get install python3-venv, as root)"
    exit 1
  fi
fi

rm -rf "$VENV"
python3 -m venv "$VENV" >&2
"$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$VERSION" >&2
"$BIN" --version >&2
echo "$BIN"
