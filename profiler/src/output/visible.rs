//! What of folded stacks a flame graph can show. inferno builds a node for every frame of every line
//! (56 bytes each) before it leaves out the frames narrower than its minimum width; a large folded
//! input of distinct frames (millions of them, each a sliver of the graph) made that the largest
//! allocation of `report`. Lines are cut here below the first frame inferno would leave out, and the
//! cut lines that became the same are merged, so inferno gets only what it draws: the same frames,
//! each as wide (checked in the tests below). Only where the left-out slivers sit changes: a cut line
//! sorts before its parent's other children, so the slivers gather at the parent's left edge.

use super::fold::Folded;
use super::texts::index_u32;

/// Below this share of inferno's own threshold a frame is cut (a margin, so float rounding never
/// cuts a frame inferno would draw; a frame kept in excess is left out by inferno anyway).
const MARGIN: f64 = 0.99;

/// The lines of `folded` as inferno is to get them (`stack COUNT`, one per line), cut below the
/// frames narrower than `min_width` (inferno's `Options::min_width`: a percentage of the total).
pub fn visible_text(folded: &Folded, min_width: f64) -> String {
    let total: u64 = folded.ordered().map(|line| folded.count(line)).sum();
    // inferno's own expression, so that it is judged alike.
    let min_time = min_width / (100.0 / total as f64) * MARGIN;
    // Lines in the order of their text ids, where the lines through one frame (one prefix of ids)
    // are next to each other, so that its time is the sum of a run of lines; the order of their
    // texts does not keep them together (`a`, `a b`, `a;c`).
    let mut lines: Vec<u32> = folded.ordered().collect();
    lines.sort_unstable_by(|&a, &b| folded.texts_of(a).cmp(folded.texts_of(b)));
    let keep = kept_frames(folded, &lines, min_time);

    let mut text = String::new();
    let mut pending: Option<(&[u32], u64)> = None;
    for (&line, &kept) in lines.iter().zip(&keep) {
        let ids = folded.texts_of(line);
        // The root is always kept, drawn or not: the line's count is part of the total.
        let cut = &ids[..(kept as usize).clamp(1, ids.len())];
        let count = folded.count(line);
        match &mut pending {
            Some((same, sum)) if *same == cut => *sum += count,
            _ => {
                if let Some((ids, sum)) = pending.replace((cut, count)) {
                    folded.push_line_of(&mut text, ids, sum);
                }
            }
        }
    }
    if let Some((ids, sum)) = pending {
        folded.push_line_of(&mut text, ids, sum);
    }
    text
}

/// For each of `lines` (in id order), how many of its frames are at least `min_time` wide (the
/// time of a frame is the sum of the counts of the run of lines through it): the frames along a line
/// only narrow, so the first narrower one ends what may be drawn.
fn kept_frames(folded: &Folded, lines: &[u32], min_time: f64) -> Vec<u32> {
    let mut keep: Vec<u32> = lines
        .iter()
        .map(|&line| index_u32(folded.texts_of(line).len()))
        .collect();
    // The frames of the current line: where the run of lines through each began, and its time.
    let mut open: Vec<(usize, u64)> = Vec::new();
    let mut previous: &[u32] = &[];
    for position in 0..=lines.len() {
        let ids = match lines.get(position) {
            Some(&line) => folded.texts_of(line),
            None => &[],
        };
        let shared = previous.iter().zip(ids).take_while(|(a, b)| a == b).count();
        // Frames of the previous line this one does not go through are complete.
        while open.len() > shared {
            let (start, time) = open.pop().unwrap_or_default();
            if (time as f64) < min_time {
                let depth = index_u32(open.len());
                for kept in &mut keep[start..position] {
                    *kept = (*kept).min(depth);
                }
            }
        }
        let Some(&line) = lines.get(position) else {
            break;
        };
        open.resize(ids.len(), (position, 0));
        let count = folded.count(line);
        for (_, time) in &mut open {
            *time += count;
        }
        previous = ids;
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{fold, render_svg, FoldOptions, SvgOptions};

    fn folded_of(text: &str) -> Folded {
        let profile = crate::input::parse_profile(text.as_bytes(), "t.folded").expect("read");
        fold(&profile, &FoldOptions::default()).expect("fold")
    }

    /// The frames of an SVG: each one's title (name, samples, share), its row and its width.
    fn frames(lines: &str, min_width: Option<f64>) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        let options = SvgOptions {
            title: "t".to_owned(),
            min_width,
            ..SvgOptions::default()
        };
        render_svg(lines.lines(), &options, &mut out).expect("svg");
        let svg = String::from_utf8(out).expect("utf-8");
        let attribute = |rect: &str, name: &str| {
            let start = rect.find(&format!(" {name}=\"")).expect("attribute") + name.len() + 3;
            rect[start..].split('"').next().expect("value").to_owned()
        };
        let mut frames: Vec<_> = svg
            .split("<g><title>")
            .skip(1)
            .map(|frame| {
                let (title, rect) = frame.split_once("</title>").expect("title");
                (
                    title.to_owned(),
                    attribute(rect, "y"),
                    attribute(rect, "width"),
                )
            })
            .collect();
        frames.sort();
        frames
    }

    /// Narrow frames are cut with everything under them, the cut lines merge, and the counts of the
    /// root stay whole.
    #[test]
    fn narrow_frames_are_cut() {
        let mut text = String::from("main;hot;leaf 9000\n");
        for i in 0..100 {
            text += &format!("main;cold_{i};below 1\n");
        }
        let folded = folded_of(&text);
        // 1 % of 9,100: each cold frame is 0.011 %.
        assert_eq!(visible_text(&folded, 1.0), "main;hot;leaf 9000\nmain 100\n");
        assert_eq!(
            visible_text(&folded, 0.0).lines().count(),
            101,
            "min width 0 keeps every line"
        );
    }

    /// inferno draws the same frames, each as wide, from the cut lines as from all lines, for varied
    /// stacks, at its default width and at wider ones. (Frames whose texts sort apart from their
    /// lines, `a b` between `a` and `a;c`, are left out: inferno splits a frame around them by the
    /// order of whole lines, and a cut line sorts elsewhere.)
    #[test]
    fn cutting_does_not_change_the_svg() {
        const FRAMES: [&str; 6] = ["a", "ab", "b", "c_[k]", "d_[i]", "e"];
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut below = |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let mut input = String::new();
        for _ in 0..3000 {
            let depth = 1 + below(6);
            let stack: Vec<&str> = (0..depth)
                .map(|_| FRAMES[below(FRAMES.len() as u64) as usize])
                .collect();
            let count = if below(50) == 0 { 500 } else { 1 + below(3) };
            input += &format!("{} {count}\n", stack.join(";"));
        }
        let folded = folded_of(&input);
        for min_width in [None, Some(0.5), Some(2.0)] {
            let width = min_width.unwrap_or(inferno::flamegraph::Options::default().min_width);
            let cut = visible_text(&folded, width);
            assert!(cut.len() < folded.text().len());
            let (drawn, all) = (frames(&cut, min_width), frames(&folded.text(), min_width));
            assert!(drawn.len() > 20, "{drawn:?}");
            assert_eq!(drawn, all, "min width {width}");
        }
    }
}
