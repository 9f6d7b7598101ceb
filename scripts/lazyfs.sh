#!/usr/bin/env bash
# Builds LazyFS once and prints the path of its binary on the last line of stdout.
# LazyFS is a FUSE file system that keeps writes in its own cache until the program fsyncs
# them, and drops them on `lazyfs::clear-cache`: a power cut on demand. tests/power_cut.rs
# calls this script; a second call is instant.
#
#   scripts/lazyfs.sh
#
# Sources and the real build: ../shared/tools/lazyfs/build.sh, relative to the repo root
# (it installs g++, cmake, libfuse3-dev, fuse3, libtoml11-dev and libspdlog-dev with apt-get,
# so the first call needs root and the network).
# Cache: $GODOWN_LAZYFS_DIR if set, else $CARGO_TARGET_DIR/lazyfs, else <repo>/target/lazyfs
# (outside the sources; `cargo clean` removes it). The build's output goes to build.log there.
# Exit status: 0 built or cached; 3 no /dev/fuse; 1 anything else (the message says what).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_SH="$REPO/../shared/tools/lazyfs/build.sh"
CACHE=${GODOWN_LAZYFS_DIR:-${CARGO_TARGET_DIR:-$REPO/target}/lazyfs}
# Where build.sh puts the binary inside its OUT_DIR.
BIN="$CACHE/src/lazyfs/build/lazyfs"

log() { echo "lazyfs.sh: $*" >&2; }

ready() { [[ -x "$BIN" ]] && command -v fusermount3 >/dev/null 2>&1; }

if ready; then
  echo "$BIN"
  exit 0
fi

[[ -f "$BUILD_SH" ]] || { log "LazyFS sources not found: $BUILD_SH is missing"; exit 1; }
[[ -e /dev/fuse ]] || { log "no /dev/fuse on this machine: LazyFS cannot mount"; exit 3; }
if [[ $(id -u) -ne 0 ]]; then
  log "warning: not root: apt-get (for missing packages) and mounting will likely fail"
fi

# One build at a time (two test binaries, two shells): the second waits, then finds it built.
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
if command -v flock >/dev/null 2>&1; then
  flock 9
fi
if ready; then
  echo "$BIN"
  exit 0
fi

BUILD_LOG="$CACHE/build.log"
log "building LazyFS into $CACHE (first time only: installs Debian packages if missing; about a minute)"
start=$(date +%s)
if ! bash "$BUILD_SH" "$CACHE" >"$BUILD_LOG" 2>&1; then
  log "the build failed; the end of $BUILD_LOG:"
  tail -n 30 "$BUILD_LOG" >&2
  exit 1
fi
built=$(tail -n 1 "$BUILD_LOG")
if [[ "$built" != "$BIN" || ! -x "$BIN" ]]; then
  log "build.sh printed '$built', expected the executable $BIN; see $BUILD_LOG"
  exit 1
fi
command -v fusermount3 >/dev/null 2>&1 ||
  log "warning: fusermount3 not found (Debian package fuse3): unmounting will use umount -l"
log "built in $(( $(date +%s) - start )) s"
echo "$BIN"
