#!/usr/bin/env bash
# Installs Debian's headless browser for the dashboard's browser test (tests/dashboard.rs)
# and prints the path of chromedriver on the last line of stdout. A second call is instant.
#
#   scripts/chromium.sh
#
# It uses apt-get (chromium and chromium-driver), so the first call needs root and the
# package mirror; nothing is downloaded at test time.
# Exit status: 0 installed or present; 1 anything else (the message says what).
set -euo pipefail

log() { echo "chromium.sh: $*" >&2; }

driver() { command -v chromedriver 2>/dev/null || ls /usr/bin/chromedriver 2>/dev/null; }

if d=$(driver) && command -v chromium >/dev/null 2>&1; then
  echo "$d"
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  log "chromium and chromium-driver are missing and this is not root: apt-get install chromium chromium-driver"
  exit 1
fi
log "installing chromium and chromium-driver with apt-get (once)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >&2
d=$(driver) || { log "chromedriver not found after the install"; exit 1; }
echo "$d"
