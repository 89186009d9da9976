#!/usr/bin/env bash
# The README's install command, checked end to end as a user runs it: `cargo install --locked --path
# profiler --root DIR` from this clone (a release build in a target directory of its own, as cargo
# install does, so it shares nothing with target/), then the installed binary alone, run from an
# empty directory with nothing but PATH in its environment, records the burn example and must give
# its `main..burn_a` stacks: it finds nothing by relative path (the BPF object is embedded). Also
# prints the build's wall time and the binary's size, and checks `generate man` renders.
#
# This is not in `cargo test` because the release build takes minutes (2-3 on the 2-vCPU development
# VM); tests/it/generate.rs checks the same binary-alone run on the test build.
#
# usage: sudo benches/install-check.sh          (DEBUG=1: `cargo install --debug`, faster to build;
#        INSTALL_TARGET_DIR=DIR: build there and keep it, so a second run reuses the build)
# needs: root (the recording uses BPF), the build packages of the README (gcc too), man-db, bc.
set -euo pipefail
cd "$(dirname "$0")/.."
clone=$PWD

work=$(mktemp -d /tmp/emberprof-install.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir "$work/elsewhere"

profile_flag=()
[ "${DEBUG:-0}" = 1 ] && profile_flag=(--debug)

# The workload: the burn example, built here with gcc (one of the README's build packages) into the
# scratch directory, so nothing the recording touches is inside the clone.
gcc -O2 -g -fno-omit-frame-pointer -I "$clone/examples/c" "$clone/examples/c/burn.c" -o "$work/burn"

start=$(date +%s.%N)
CARGO_TARGET_DIR="${INSTALL_TARGET_DIR:-$work/target}" cargo install --locked --path profiler --root "$work/root" \
  "${profile_flag[@]}" --quiet
end=$(date +%s.%N)
installed=$work/root/bin/emberprof
echo "install: $(echo "$end - $start" | bc) s to build and install, binary $(stat -c %s "$installed") bytes"

cd "$work/elsewhere"
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$installed" record -F 499 -o burn.folded -- "$work/burn" 1
grep -q ';main;.*;burn_a' burn.folded || {
  echo "install-check: no main..burn_a stack in the installed binary's output:" >&2
  cat burn.folded >&2
  exit 1
}
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$installed" generate man | MANWIDTH=100 man -l - >/dev/null
echo "install-check: ok (the installed binary recorded burn from $work/elsewhere and printed its man page)"
