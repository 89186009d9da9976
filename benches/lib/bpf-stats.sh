# Sourced by the benches that read the kernel's own count of BPF run time (compare.sh, off-cpu.sh):
# makes the scratch directory $work and turns kernel.bpf_stats_enabled on for the run; on exit,
# however the bench ends, kills its background jobs, puts the setting back as it was and removes
# $work.
work=$(mktemp -d)
stats_before=$(cat /proc/sys/kernel/bpf_stats_enabled)
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  echo "$stats_before" >/proc/sys/kernel/bpf_stats_enabled
  rm -rf "$work"
}
trap cleanup EXIT
echo 1 >/proc/sys/kernel/bpf_stats_enabled
