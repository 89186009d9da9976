//! `--unwind auto` on code without CFI inside a module that has CFI elsewhere (issue 18, item 4):
//! V8's builtins sit in node's `.text` without FDEs, so a frame-pointer walk through a builtin that
//! is the leaf (`Builtins_StringAdd_CheckNone`) loses its JS caller. Such code must count as
//! unknown, so its stacks are copied and unwound: the JS function is then in about the share of
//! samples `--unwind dwarf` gives.

use std::path::Path;

use crate::support::*;

/// `auto`'s share of samples under the JS function, at least this fraction of `dwarf`'s.
const MIN_OF_DWARF: f64 = 0.85;

/// Concatenates strings in a hot JS function for a fixed amount of the process's own CPU time (the
/// machine is shared: not wall time).
const SCRIPT: &str = r#"
function objWork(n) {
  let s = "";
  for (let i = 0; i < n; i++) {
    s = s + i;
    if (s.length > 4096) s = "";
  }
  return s.length;
}
const start = process.cpuUsage();
let sink = 0;
for (;;) {
  const used = process.cpuUsage(start);
  if (used.user + used.system > 3000000) break;
  sink += objWork(100000);
}
console.log(sink);
"#;

/// Records the script under `unwind`; returns (samples under `objWork`, all samples) of node.
fn record(dir: &Path, unwind: &str) -> (u64, u64) {
    let folded = dir.join(format!("{unwind}.folded"));
    let output = emberprof()
        .current_dir(dir)
        .args([
            "record",
            "-F",
            "499",
            "--unwind",
            unwind,
            "-o",
            folded.to_str().expect("UTF-8 temp path"),
            "--",
            "node",
            "--perf-basic-prof",
            "concat.js",
        ])
        .output()
        .expect("run emberprof (node must be installed: `apt-get install nodejs`)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "emberprof --unwind {unwind} failed with {}:\n{stderr}",
        output.status
    );
    let text = std::fs::read_to_string(&folded).expect("read the folded output");
    let stacks: Vec<_> = parse_folded(&text)
        .into_iter()
        .filter(|s| s.frames[0] == "node")
        .collect();
    let all = total(&stacks, |_| true);
    assert!(
        all >= 300,
        "only {all} samples of node under --unwind {unwind}; emberprof said:\n{stderr}"
    );
    let under = total(&stacks, |s| s.frames.iter().any(|f| f.contains("objWork")));
    (under, all)
}

#[test]
fn auto_keeps_the_js_caller_of_builtins_without_cfi() {
    let _guard = kernel_test();
    let dir = scratch();
    std::fs::write(dir.path().join("concat.js"), SCRIPT).expect("write concat.js");
    let (dwarf_under, dwarf_all) = record(dir.path(), "dwarf");
    let (auto_under, auto_all) = record(dir.path(), "auto");
    let dwarf_share = dwarf_under as f64 / dwarf_all as f64;
    let auto_share = auto_under as f64 / auto_all as f64;
    assert!(
        dwarf_share > 0.3,
        "--unwind dwarf: only {dwarf_under} of {dwarf_all} samples under objWork; is the script's \
         hot loop still JIT-compiled?"
    );
    assert!(
        auto_share >= dwarf_share * MIN_OF_DWARF,
        "--unwind auto: {auto_under} of {auto_all} samples ({:.1} %) under objWork, against \
         {dwarf_under} of {dwarf_all} ({:.1} %) under --unwind dwarf",
        auto_share * 100.0,
        dwarf_share * 100.0
    );
}
