#!/usr/bin/env bash
# Installs Debian's nginx for the cluster test (tests/cluster.rs) and `scripts/cluster.sh`,
# and prints the path of the nginx binary on the last line of stdout. A second call is
# instant. Only the binary is used: the package's own service is never started by us (and
# is stopped if the package started it).
#
#   scripts/nginx.sh
#
# It uses apt-get, so the first call needs root and the package mirror; nothing is
# downloaded at test time.
# Exit status: 0 installed or present; 1 anything else (the message says what).
set -euo pipefail

log() { echo "nginx.sh: $*" >&2; }

binary() { command -v nginx 2>/dev/null || ls /usr/sbin/nginx 2>/dev/null; }

if b=$(binary); then
  echo "$b"
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  log "nginx is missing and this is not root: apt-get install nginx-light (or nginx)"
  exit 1
fi
log "installing nginx with apt-get (once)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
# The package's post-install may start the system service; tests never use it.
apt-get install -y -qq --no-install-recommends nginx >&2
if command -v service >/dev/null 2>&1; then service nginx stop >/dev/null 2>&1 || true; fi
b=$(binary) || { log "nginx not found after the install"; exit 1; }
echo "$b"
