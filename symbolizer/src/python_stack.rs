//! A sample's Python frames on their way from capture to the profile: as the BPF walker took them
//! (code object addresses and instructions, which mean something only inside their process while
//! it lives) and as the process's Python runtime names them (see `runtimes`). The profile puts the
//! named frames in place of the native interpreter frames that ran them.

use crate::frame::Frame;

/// One Python frame as the walker saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RawPythonFrame {
    /// Address of the code object in the process.
    pub code: u64,
    /// `f_lasti` (3.8-3.10) or the address of the instruction (3.11+).
    pub instruction: u64,
    /// The code object's check when the frame was sampled (see `python::code_check`), 0 if none
    /// was taken.
    pub check: u64,
    /// The first frame its native interpreter call (`_PyEval_EvalFrameDefault`) ran.
    pub entry: bool,
}

/// A sample's Python frames, innermost first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct RawPythonStack {
    pub frames: Vec<RawPythonFrame>,
    /// The outermost frames are missing (deeper than the walker's bound, or a read failed).
    pub truncated: bool,
}

/// One named Python frame: its qualified name, file and line (a `[python?]` frame when its code
/// object could not be read).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PythonStackFrame {
    pub frame: Frame,
    /// See [`RawPythonFrame::entry`].
    pub entry: bool,
}

/// A sample's Python frames, named, innermost first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PythonStack {
    pub frames: Vec<PythonStackFrame>,
    /// See [`RawPythonStack::truncated`].
    pub truncated: bool,
}

impl PythonStack {
    /// Whether a frame's code object could not be read or did not check out (`[python?]`).
    pub fn has_unknown_frames(&self) -> bool {
        self.frames
            .iter()
            .any(|frame| &*frame.frame.name == crate::python::UNKNOWN_NAME)
    }

    /// The frames split by native interpreter call, innermost call first; each group's frames
    /// innermost first. A group ends at an entry frame; frames after the last entry (a truncated
    /// stack, or a runtime that marks no entries) form a last group.
    pub fn by_native_call(&self) -> Vec<&[PythonStackFrame]> {
        let mut groups = Vec::new();
        let mut start = 0;
        for (index, frame) in self.frames.iter().enumerate() {
            if frame.entry {
                groups.push(&self.frames[start..=index]);
                start = index + 1;
            }
        }
        if start < self.frames.len() {
            groups.push(&self.frames[start..]);
        }
        groups
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameKind;

    fn stack(frames: &[(&str, bool)]) -> PythonStack {
        PythonStack {
            frames: frames
                .iter()
                .map(|&(name, entry)| PythonStackFrame {
                    frame: Frame::new(name, FrameKind::User),
                    entry,
                })
                .collect(),
            truncated: false,
        }
    }

    fn names(groups: Vec<&[PythonStackFrame]>) -> Vec<Vec<&str>> {
        groups
            .iter()
            .map(|g| g.iter().map(|f| f.frame.name.as_ref()).collect())
            .collect()
    }

    /// 3.11+: one native call runs several frames; groups end at entry frames, and frames past the
    /// last entry (a truncated stack) form a group of their own.
    #[test]
    fn groups_end_at_entry_frames() {
        let s = stack(&[
            ("key", true),
            ("inner", false),
            ("outer", false),
            ("<module>", true),
        ]);
        assert_eq!(
            names(s.by_native_call()),
            [vec!["key"], vec!["inner", "outer", "<module>"]]
        );
        let cut = stack(&[("f", false), ("f", true), ("f", false), ("f", false)]);
        assert_eq!(
            names(cut.by_native_call()),
            [vec!["f", "f"], vec!["f", "f"]]
        );
        assert!(stack(&[]).by_native_call().is_empty());
    }
}
