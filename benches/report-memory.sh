#!/usr/bin/env bash
# Memory and time of `emberprof report` on large folded input (issue 19, item 9): three generated
# inputs of SIZE MiB (default 64), each rendered to folded stacks and to an SVG, under GNU time
# (peak RSS, wall and user time), with the peak as a multiple of the input's size.
#
#   distinct  every frame distinct, 16 long frames (~47 bytes) per line: C++-like names
#   short     every frame distinct, 32 short frames (8 bytes) per line: the worst case per byte
#   repeated  500 distinct stacks of 16 frames (out of 2,000 names), repeated to SIZE
#
# usage: benches/report-memory.sh [SIZE_MIB]
#        BIN=/path/to/emberprof benches/report-memory.sh ...   another build (a "before" binary)
# needs: `cargo build --release`, python3, GNU time.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-64}
bin=${BIN:-target/release/emberprof}
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 - "$work" "$size_mib" <<'EOF'
import random, sys
work, size = sys.argv[1], int(sys.argv[2]) << 20
rng = random.Random(1)

def write(name, line_of):
    with open(f"{work}/{name}.folded", "w") as f:
        written, i = 0, 0
        while written < size:
            line = line_of(i)
            f.write(line)
            written += len(line)
            i += 1

write("distinct", lambda i: ";".join(
    ["app"] + ["namespace::module::function_%09d_%08x" % (16 * i + d, rng.getrandbits(32))
               for d in range(16)]) + " %d\n" % (1 + i % 7))
write("short", lambda i: ";".join(["app"] + ["f%07x" % (32 * i + d) for d in range(32)])
      + " %d\n" % (1 + i % 7))
names = ["namespace::module::function_%05d" % i for i in range(2000)]
stacks = [";".join(["app"] + [rng.choice(names) for _ in range(16)]) for _ in range(500)]
write("repeated", lambda i: stacks[i % 500] + " %d\n" % (1 + i % 7))
EOF

printf '| input | output | peak RSS | × input | wall | user |\n|---|---|---|---|---|---|\n'
for input in distinct short repeated; do
  bytes=$(stat -c %s "$work/$input.folded")
  for format in folded svg; do
    /usr/bin/time -f "%M %e %U" -o "$work/time" \
      "$bin" report "$work/$input.folded" -o "$work/out.$format" 2>"$work/err" \
      || { cat "$work/err" >&2; exit 1; }
    read -r rss wall user <"$work/time"
    printf '| %s | %s | %d MiB | %.1f | %s s | %s s |\n' "$input" "$format" $((rss / 1024)) \
      "$(echo "scale=2; $rss * 1024 / $bytes" | bc)" "$wall" "$user"
  done
done
