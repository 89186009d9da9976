#!/usr/bin/env bash
# Stacks of programs nobody here wrote: each workload present on this machine (xz, bzip2, python3,
# node, sqlite3, sort, git (grep, repack), openssl (rsa2048, sha512, ecdsap256, aes-256-gcm), a Go
# program built by Debian's golang-go, a Java program on the JVM with its perf map written at exit,
# and a Rust program cargo builds with its release profile; rg instead when ripgrep is installed) runs for SECONDS under `emberprof record --unwind auto`,
# `--unwind dwarf`, `--unwind fp`, and `perf record --call-graph dwarf` (folded by
# `perf script | inferno-collapse-perf` when inferno's CLI is installed, else by a small Python
# collapse of `perf script`). One table: per workload and mode, the samples, the share of stacks
# with user frames that are complete (outermost user frame `_start`, `__libc_start_main*`,
# `__libc_start_call_main`, `clone*`, `start_thread`, or an unnamed frame directly under
# `__libc_start_main*`: a stripped binary's `_start`), the share of user frames without a name, and
# the post-processing time (end of sampling to output: emberprof's own figure from its summary line;
# for perf, `perf script` and the collapse, cut off after 600 s). "Complete" says where a stack
# ends, not whether frames in between were skipped (a frame-pointer walk over frameless code).
#
# usage: sudo benches/real-world.sh [SECONDS] [HZ]   (defaults: 3, 999)
#        ONLY='openssl|Go' sudo -E benches/real-world.sh   (only the workloads whose name matches)
# needs: root, `cargo build --release`, perf (Debian: linux-perf), python3. Installs nothing:
# a workload whose program is missing is listed as skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-3}
hz=${2:-999}
root=$PWD
bin=$root/target/release
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

[ -x "$bin/emberprof" ] || { echo "build first: cargo build --release" >&2; exit 1; }
command -v perf >/dev/null || { echo "needs perf: apt-get install linux-perf" >&2; exit 1; }
command -v python3 >/dev/null || { echo "needs python3" >&2; exit 1; }
collapse=$(command -v inferno-collapse-perf || true)
[ -n "$collapse" ] || [ ! -x target/bench-tools/bin/inferno-collapse-perf ] ||
  collapse=$root/target/bench-tools/bin/inferno-collapse-perf

# --- inputs ------------------------------------------------------------------------------------
# 32 MB of text that compresses, sorts and searches like real text: words from a small vocabulary.
python3 - "$work/text" <<'EOF'
import random, sys
random.seed(7)
words = [''.join(random.choice('abcdefghijklmnopqrstuvwxyz') for _ in range(random.randint(2, 10)))
         for _ in range(5000)]
with open(sys.argv[1], 'w') as out:
    size = 0
    while size < 32 << 20:
        line = ' '.join(random.choice(words) for _ in range(random.randint(3, 14))) + '\n'
        out.write(line)
        size += len(line)
EOF

cat >"$work/cpu.py" <<'EOF'
import collections, sys, time
def words(path):
    with open(path) as f:
        for line in f:
            yield from line.split()
def wordcount(path):
    return collections.Counter(words(path)).most_common(10)
end = time.time() + float(sys.argv[2])
while time.time() < end:
    wordcount(sys.argv[1])
EOF

cat >"$work/cpu.js" <<'EOF'
function strwork(n) { const m = new Map(); for (let i = 0; i < n; i++) { const k = 'k' + (i * 7919 % 1000); m.set(k, (m.get(k) || 0) + i); } return m.size; }
function sortwork(n) { const a = []; for (let i = 0; i < n; i++) a.push((i * 2654435761) % 1000003); a.sort((x, y) => x - y); return a[0]; }
const end = Date.now() + Number(process.argv[2]) * 1000; let s = 0;
while (Date.now() < end) { s += strwork(200000) + sortwork(200000); }
if (s < 0) console.log(s);
EOF

cat >"$work/cpu.sql" <<'EOF'
CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, v INTEGER);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 400000)
INSERT INTO t SELECT i, printf('key%07d', (i * 7919) % 100003), i % 977 FROM n;
CREATE INDEX t_k ON t(k);
SELECT k, sum(v) FROM t GROUP BY k ORDER BY 2 DESC LIMIT 5;
SELECT count(*) FROM t a JOIN t b ON a.k = b.k WHERE a.v < b.v;
EOF

# The Rust program: cargo's release profile as users leave it (no forced frame pointers), plus
# `debug = 1` for names, as profiling guides recommend.
rust_tool=()
if command -v rg >/dev/null; then
  rust_tool=(rg -c 'e[a-z]+r [a-z]+s' "$work/text")
  rust_name=rg
elif command -v cargo >/dev/null; then
  mkdir -p "$work/wordfreq/src"
  cat >"$work/wordfreq/Cargo.toml" <<'EOF'
[package]
name = "wordfreq"
version = "0.1.0"
edition = "2021"

[profile.release]
debug = 1
EOF
  cat >"$work/wordfreq/src/main.rs" <<'EOF'
use std::collections::HashMap;
use std::time::{Duration, Instant};

fn count(text: &str) -> Vec<(&str, usize)> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for word in text.split_whitespace() {
        *counts.entry(word).or_default() += 1;
    }
    let mut sorted: Vec<(&str, usize)> = counts.into_iter().collect();
    sorted.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    sorted
}

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: wordfreq FILE SECONDS");
    let seconds: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let text = std::fs::read_to_string(path).expect("read");
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    let mut total = 0;
    while Instant::now() < end {
        total += count(&text).len();
    }
    println!("{total}");
}
EOF
  if (cd "$work/wordfreq" && cargo build --release --offline --quiet 2>"$work/wordfreq.log"); then
    rust_tool=("$work/wordfreq/target/release/wordfreq" "$work/text" 1000)
    rust_name="Rust (wordfreq)"
  fi
fi

# Go as `go build` makes it: compressed DWARF, crypto/sha256's assembly using RBP as a register.
if command -v go >/dev/null; then
  mkdir -p "$work/gowork"
  cat >"$work/gowork/main.go" <<'EOF'
package main

import (
	"crypto/sha256"
	"os"
	"sort"
	"strconv"
	"time"
)

func hashAll(data []byte) byte {
	var last byte
	for i := 0; i < 64; i++ {
		sum := sha256.Sum256(data)
		last ^= sum[0]
	}
	return last
}

func sortWork(n int) int {
	a := make([]int, n)
	for i := range a {
		a[i] = (i * 2654435761) % 1000003
	}
	sort.Ints(a)
	return a[0]
}

func main() {
	seconds, _ := strconv.ParseFloat(os.Args[1], 64)
	data := make([]byte, 16384)
	end := time.Now().Add(time.Duration(seconds * float64(time.Second)))
	var s int
	for time.Now().Before(end) {
		s += int(hashAll(data)) + sortWork(100000)
	}
	if s < 0 {
		println(s)
	}
}
EOF
  (cd "$work/gowork" && GOCACHE=$work/gocache GO111MODULE=off go build -o gowork main.go) ||
    echo "skipped Go: go build failed" >&2
fi

# A JVM whose JIT frames are named from the perf map it writes only as it exits.
if command -v javac >/dev/null && command -v java >/dev/null; then
  mkdir -p "$work/java"
  cat >"$work/java/Work.java" <<'EOF'
import java.util.*;
public class Work {
    static int strWork(int n) { Map<String, Integer> m = new HashMap<>(); for (int i = 0; i < n; i++) { String k = "k" + (i * 7919 % 1000); m.merge(k, i, Integer::sum); } return m.size(); }
    static int sortWork(int n) { int[] a = new int[n]; for (int i = 0; i < n; i++) a[i] = (int) ((i * 2654435761L) % 1000003); Arrays.sort(a); return a[0]; }
    public static void main(String[] args) {
        long end = System.nanoTime() + (long) (Double.parseDouble(args[0]) * 1e9); long s = 0;
        while (System.nanoTime() < end) s += strWork(200000) + sortWork(200000);
        if (s < 0) System.out.println(s);
    }
}
EOF
  javac -d "$work/java" "$work/java/Work.java" || echo "skipped the JVM: javac failed" >&2
fi

# --- workloads: name, then the command (each bounded by `timeout`) -----------------------------
names=() commands=()
add() {
  local name=$1 program=$2
  shift 2
  if [ -n "${ONLY:-}" ] && ! [[ $name =~ $ONLY ]]; then
    return 0
  fi
  if command -v "$program" >/dev/null; then
    names+=("$name")
    commands+=("$(printf '%q ' "$@")")
  else
    echo "skipped $name: $program is not installed" >&2
  fi
}
add xz xz xz -6 -T1 -c "$work/text"
add bzip2 bzip2 bzip2 -9 -c "$work/text"
add python3 python3 python3 "$work/cpu.py" "$work/text" 1000
add node node node --perf-basic-prof "$work/cpu.js" 1000
add sqlite3 sqlite3 sh -c "while :; do sqlite3 :memory: <'$work/cpu.sql'; done"
add sort sort sh -c "while :; do LC_ALL=C sort -S 64M '$work/text'; done"
add git git sh -c "while :; do git -C '$root' grep -c -E '[a-z]+_[a-z]+\\(' \$(git -C '$root' rev-list --all); done"
add openssl openssl openssl speed -seconds "$seconds" rsa2048
# The SHA-512 and ECDSA assembly keeps its saved stack pointer in the red zone below rsp.
add "openssl sha512" openssl openssl speed -seconds "$seconds" sha512
add "openssl ecdsa" openssl openssl speed -seconds "$seconds" ecdsap256
# AES-GCM's assembly defines the CFA on rax, which its callee never saves: registers keep their value.
add "openssl gcm" openssl openssl speed -seconds "$seconds" -bytes 16384 -evp aes-256-gcm
[ -x "$work/gowork/gowork" ] && add "Go (sha256, sort)" "$work/gowork/gowork" "$work/gowork/gowork" "$seconds"
# The program ends itself just before `timeout` would: the JVM writes its perf map as it exits.
[ -f "$work/java/Work.class" ] && add "JVM (map at exit)" java java -XX:+UnlockDiagnosticVMOptions \
  -XX:+DumpPerfMapAtExit -cp "$work/java" Work "$(awk -v s="$seconds" 'BEGIN { print s - 0.3 }')"
# pack-objects' cmd_pack_objects frame is 15.8 KiB: bigger than the default copy above it.
if command -v git >/dev/null; then
  git clone -q --bare "$root" "$work/repack.git"
fi
add "git repack" git sh -c "while :; do git -C '$work/repack.git' repack -adf -q; done"
if [ ${#rust_tool[@]} -gt 0 ]; then
  add "$rust_name" "${rust_tool[0]}" sh -c "while :; do $(printf '%q ' "${rust_tool[@]}"); done"
else
  echo "skipped the Rust tool: neither rg nor cargo is installed" >&2
fi

# --- analysis of one folded file ---------------------------------------------------------------
cat >"$work/analyze.py" <<'EOF'
import re, sys
# __libc_start_call_main (glibc 2.34+) calls main: the outermost frame perf's libdw unwinder and a
# frame-pointer walk reach, with nothing of the program's own missing above it.
# Go's goroutines start at runtime.goexit (runtime.main's caller), its threads at runtime.mstart (or rt0_go).
ENTRIES = re.compile(r'^(_start|__libc_start_main.*|__libc_start_call_main|clone3?|start_thread|thread_start|runtime\.goexit.*|runtime\.mstart|runtime\.rt0_go.*)$')
UNNAMED = re.compile(r'^(\[unknown\]|.*\+0x[0-9a-f]+)$')
samples = complete = with_user = frames = unnamed = 0
for line in open(sys.argv[1]):
    stack, _, count = line.rstrip('\n').rpartition(' ')
    if not count.isdigit():
        continue
    count = int(count)
    parts = stack.split(';')
    if parts[0] in ('timeout', 'sh', 'emberprof', 'perf-exec'):
        continue  # the wrappers, not the workload
    samples += count
    user = [f for f in parts[1:] if not f.endswith('_[k]')]
    user = [f[:-4] if f.endswith(('_[j]', '_[i]')) else f for f in user]
    if not user:
        continue
    with_user += count
    frames += count * len(user)
    unnamed += count * sum(1 for f in user if UNNAMED.match(f))
    outer = user[0]
    if ENTRIES.match(outer) or (UNNAMED.match(outer) and len(user) > 1
                                 and user[1].startswith('__libc_start_main')):
        complete += count
pct = lambda a, b: f'{100 * a / b:5.1f} %' if b else '    -  '
print(f'{samples:>8} {pct(complete, with_user)} {pct(unnamed, frames)}')
EOF

# perf script's text, folded root first without inferno: `comm;outer;...;leaf count`.
cat >"$work/collapse.py" <<'EOF'
import collections, re, sys
counts = collections.Counter()
comm, frames = None, []
def flush():
    if comm is not None:
        counts[';'.join([comm] + frames[::-1])] += 1
for line in sys.stdin:
    if not line.strip():
        flush(); comm, frames = None, []
    elif not line[0].isspace():
        comm = line.split()[0].replace(';', ':')
    else:
        fields = line.split(None, 1)
        rest = fields[1].strip() if len(fields) > 1 else '[unknown]'
        m = re.match(r'(.*?)(\+0x[0-9a-f]+)? \((.*)\)$', rest)
        name, dso = (m.group(1), m.group(3)) if m else (rest, '')
        if name == '[unknown]' and dso not in ('', '[unknown]'):
            name = dso.rsplit('/', 1)[-1] + '+0x' + fields[0]
        name = name.replace(';', ':')
        frames.append(name + ('_[k]' if dso.startswith('[kernel') else ''))
flush()
for stack, n in sorted(counts.items()):
    print(stack, n)
EOF

now() { date +%s.%N; }

# node writes its isolate-*-v8.log files into the working directory.
cd "$work"

printf '%-18s %-22s %8s %7s %7s %9s\n' workload mode samples complete unnamed "post (s)"
for i in "${!names[@]}"; do
  name=${names[$i]}
  eval "command=(${commands[$i]})"
  for mode in auto dwarf fp; do
    out=$work/e-$mode.folded
    summary=$("$bin/emberprof" record -F "$hz" --unwind "$mode" -o "$out" -- \
      timeout "$seconds" "${command[@]}" 2>&1 >/dev/null | grep 'output written' || true)
    post=$(sed -n 's/.*output written \([0-9.]*\) s after.*/\1/p' <<<"$summary")
    printf '%-18s %-22s %s %9s\n' "$name" "emberprof $mode" "$(python3 "$work/analyze.py" "$out")" "${post:--}"
  done
  perf record -q -F "$hz" --call-graph dwarf -o "$work/perf.data" -- \
    timeout "$seconds" "${command[@]}" >/dev/null 2>&1 || true
  start=$(now)
  if [ -n "$collapse" ]; then
    # Without the period field: inferno would weigh each sample by it (ns of cpu-clock), not count it.
    { timeout 600 perf script -F comm,pid,tid,time,event,ip,sym,dso -i "$work/perf.data" 2>/dev/null ||
      true; } | "$collapse" --all >"$work/perf.folded"
    how="perf dwarf+inferno"
  else
    { timeout 600 perf script -i "$work/perf.data" 2>/dev/null || true; } | python3 "$work/collapse.py" >"$work/perf.folded"
    how="perf dwarf+script"
  fi
  post=$(awk -v end="$(now)" -v start="$start" 'BEGIN { print end - start }')
  printf '%-18s %-22s %s %9.3f\n' "$name" "$how" "$(python3 "$work/analyze.py" "$work/perf.folded")" "$post"
done
printf '%s, %s, %s CPUs, Linux %s, %s s per run at %s Hz\n' "$(date -u +%Y-%m-%d)" \
  "$(perf --version)" "$(nproc)" "$(uname -r)" "$seconds" "$hz"
