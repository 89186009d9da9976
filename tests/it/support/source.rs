//! Where things are in the examples' sources, so tests can assert exact source lines.

/// Line of `source` (under `examples/`, 1-based) holding `marker`, which must occur exactly once.
pub fn source_line(source: &str, marker: &str) -> usize {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(source);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let lines: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, line)| line.contains(marker))
        .map(|(index, _)| index + 1)
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "{marker:?} in {}: lines {lines:?}",
        path.display()
    );
    lines[0]
}
