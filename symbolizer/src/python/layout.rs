//! Where CPython keeps what an out-of-process reader needs: the offsets of a few struct members, per
//! minor version.
//!
//! The BPF walker reads the thread and frame fields; userspace reads the code object and string
//! fields. Every value here is checked against the DWARF of the pyenv builds by the `dwarf_check`
//! tests, so a wrong offset fails the build's tests rather than users' profiles. 3.13 carries its own
//! offsets in `_Py_DebugOffsets` (see `debug_offsets`); its table here is the fallback checked against
//! the same DWARF and compared with what a live 3.13 process publishes.
//!
//! This module holds only data: it must not read memory or files.

/// The value of a [`Layout`] field that the version does not have.
pub const ABSENT: u32 = u32::MAX;

/// How a thread's Python frames are chained, as [`Layout::frame_model`].
pub mod frame_model {
    /// 3.8–3.10: `tstate->frame` is a `PyFrameObject*`, chained by `f_back`; each native
    /// `_PyEval_EvalFrameDefault` call runs exactly one of them.
    pub const FRAME_OBJECT: u32 = 1;
    /// 3.11–3.12: `tstate->cframe->current_frame` is a `_PyInterpreterFrame*`, chained by `previous`;
    /// one native call runs several (3.11: up to a frame with `is_entry`; 3.12: up to a shim frame
    /// owned by the C stack).
    pub const CFRAME: u32 = 2;
    /// 3.13: `tstate->current_frame` is the `_PyInterpreterFrame*` itself; otherwise as 3.12.
    pub const CURRENT_FRAME: u32 = 3;
}

/// How [`Layout::code_linetable`] encodes lines, as [`Layout::line_table`].
pub mod line_table {
    /// 3.8–3.9 `co_lnotab`: (byte offset delta u8, line delta i8) pairs.
    pub const LNOTAB: u32 = 1;
    /// 3.10 `co_linetable`: (byte length u8, line delta i8 or -128 for none) pairs.
    pub const LINETABLE_310: u32 = 2;
    /// 3.11+ `co_linetable`: the location table (PEP 657), in code units.
    pub const LOCATIONS: u32 = 3;
}

/// Byte offsets of the members an out-of-process reader of one CPython minor version needs (x86-64),
/// [`ABSENT`] where the version has no such member. Plain `u32`s so the BPF side can mirror it as a C
/// struct field by field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// One of [`frame_model`].
    pub frame_model: u32,
    /// `_PyRuntimeState.interpreters.head` (`PyInterpreterState*`, the newest interpreter; usually
    /// the only one, the main interpreter).
    pub runtime_interpreters_head: u32,
    /// `_PyRuntimeState.gilstate.autoTSSkey` (3.8–3.11) / `.autoTSSkey` (3.12+): a `Py_tss_t`
    /// (`int _is_initialized; pthread_key_t _key;`), for a walker that finds the thread state
    /// through the thread's TLS instead of the thread list.
    pub runtime_tss_key: u32,
    /// `PyInterpreterState.next`: the next (older) interpreter. `interpreters.head` is the newest;
    /// the main interpreter is the last of the list, after any subinterpreters (mod_wsgi runs
    /// applications in subinterpreters), so a walker looking for a thread follows this too.
    pub interp_next: u32,
    /// `PyInterpreterState.tstate_head` (3.8–3.10) / `.threads.head` (3.11+): first `PyThreadState*`.
    pub interp_threads_head: u32,
    /// `PyThreadState.next`.
    pub tstate_next: u32,
    /// `PyThreadState.interp`: points back to the interpreter; `find_runtime` checks it to tell a
    /// layout that does not fit the build (a patched or debug build) before trusting it.
    pub tstate_interp: u32,
    /// `PyThreadState.thread_id`: `pthread_self()` of the thread (an `unsigned long`), which is the
    /// thread's `fs` base on x86-64 glibc and musl.
    pub tstate_thread_id: u32,
    /// `PyThreadState.native_thread_id` (3.11+): the kernel thread id (an `unsigned long`).
    pub tstate_native_thread_id: u32,
    /// The thread state's frame pointer field: `frame` (`PyFrameObject*`, 3.8–3.10), `cframe`
    /// (`_PyCFrame*`, 3.11–3.12) or `current_frame` (`_PyInterpreterFrame*`, 3.13).
    pub tstate_frame: u32,
    /// `_PyCFrame.current_frame` (3.11–3.12).
    pub cframe_current_frame: u32,
    /// `f_back` (3.8–3.10) / `_PyInterpreterFrame.previous` (3.11+).
    pub frame_previous: u32,
    /// `f_code` (3.8–3.12) / `f_executable` (3.13, any object: check its type is code).
    pub frame_code: u32,
    /// `f_lasti` (3.8–3.10, an `int`) / `prev_instr` (3.11–3.12) / `instr_ptr` (3.13) (pointers).
    pub frame_instr: u32,
    /// Bytes to read at [`Layout::frame_instr`]: 4 (`int f_lasti`) or 8 (a pointer).
    pub frame_instr_size: u32,
    /// `_PyInterpreterFrame.is_entry` (3.11 only, a `bool`): the first Python frame a native
    /// `_PyEval_EvalFrameDefault` call ran (walking outwards, the last one of that native frame).
    pub frame_is_entry: u32,
    /// `_PyInterpreterFrame.owner` (3.11+, a `char`).
    pub frame_owner: u32,
    /// The [`Layout::frame_owner`] value of the shim frame each native `_PyEval_EvalFrameDefault`
    /// call pushes below the Python frames it runs (3.12+: `FRAME_OWNED_BY_CSTACK` = 3). The shim
    /// is not a Python frame: skip it; it ends the Python frames of one native call.
    pub owner_cstack: u32,
    /// `PyObject.ob_type`.
    pub object_type: u32,
    /// `PyCodeObject.co_name` (`PyUnicodeObject*`).
    pub code_name: u32,
    /// `PyCodeObject.co_qualname` (3.11+).
    pub code_qualname: u32,
    /// `PyCodeObject.co_filename`.
    pub code_filename: u32,
    /// `PyCodeObject.co_firstlineno` (an `int`).
    pub code_firstlineno: u32,
    /// `co_lnotab` (3.8–3.9) / `co_linetable` (3.10+), a `PyBytesObject*` in [`Layout::line_table`]
    /// format.
    pub code_linetable: u32,
    /// One of [`line_table`].
    pub line_table: u32,
    /// `PyCodeObject.co_code_adaptive` (3.11+): the bytecode, inline in the code object; the
    /// instruction pointers of 3.11+ frames point into it.
    pub code_code_adaptive: u32,
    /// `PyBytesObject.ob_base.ob_size` (a `Py_ssize_t`).
    pub bytes_size: u32,
    /// `PyBytesObject.ob_sval`: the bytes, inline.
    pub bytes_data: u32,
    /// `PyASCIIObject.length` (a `Py_ssize_t`, in code points).
    pub unicode_length: u32,
    /// `PyASCIIObject.state` (a 32-bit bit field word).
    pub unicode_state: u32,
    /// `sizeof(PyASCIIObject)`: where a compact ASCII string's bytes start.
    pub unicode_ascii_data: u32,
    /// `sizeof(PyCompactUnicodeObject)`: where a compact non-ASCII string's code points start.
    pub unicode_compact_data: u32,
    /// Bit of `state.kind` (3 bits: 1, 2 or 4 bytes per code point).
    pub unicode_kind_shift: u32,
    /// Bit of `state.compact`.
    pub unicode_compact_bit: u32,
    /// Bit of `state.ascii`.
    pub unicode_ascii_bit: u32,
}

/// Members that are the same in every supported version.
const COMMON: Layout = Layout {
    frame_model: ABSENT,
    runtime_interpreters_head: ABSENT,
    runtime_tss_key: ABSENT,
    interp_next: 0,
    interp_threads_head: ABSENT,
    tstate_next: 8,
    tstate_interp: 16,
    tstate_thread_id: ABSENT,
    tstate_native_thread_id: ABSENT,
    tstate_frame: ABSENT,
    cframe_current_frame: ABSENT,
    frame_previous: ABSENT,
    frame_code: ABSENT,
    frame_instr: ABSENT,
    frame_instr_size: ABSENT,
    frame_is_entry: ABSENT,
    frame_owner: ABSENT,
    owner_cstack: ABSENT,
    object_type: 8,
    code_name: ABSENT,
    code_qualname: ABSENT,
    code_filename: ABSENT,
    code_firstlineno: ABSENT,
    code_linetable: ABSENT,
    line_table: ABSENT,
    code_code_adaptive: ABSENT,
    bytes_size: 16,
    bytes_data: 32,
    unicode_length: 16,
    unicode_state: 32,
    unicode_ascii_data: ABSENT,
    unicode_compact_data: ABSENT,
    unicode_kind_shift: 2,
    unicode_compact_bit: 5,
    unicode_ascii_bit: 6,
};

/// 3.8–3.10: frame objects, strings with a `wstr` cache.
const FRAME_OBJECTS: Layout = Layout {
    frame_model: frame_model::FRAME_OBJECT,
    runtime_interpreters_head: 32,
    interp_threads_head: 8,
    tstate_thread_id: 176,
    tstate_frame: 24,
    frame_previous: 24,
    frame_code: 32,
    frame_instr_size: 4,
    code_name: 112,
    code_filename: 104,
    code_firstlineno: 40,
    code_linetable: 120,
    unicode_ascii_data: 48,
    unicode_compact_data: 72,
    ..COMMON
};

const V3_8: Layout = Layout {
    runtime_tss_key: 1392,
    frame_instr: 104,
    line_table: line_table::LNOTAB,
    ..FRAME_OBJECTS
};

const V3_9: Layout = Layout {
    runtime_tss_key: 584,
    frame_instr: 104,
    line_table: line_table::LNOTAB,
    ..FRAME_OBJECTS
};

const V3_10: Layout = Layout {
    runtime_tss_key: 584,
    frame_instr: 96,
    line_table: line_table::LINETABLE_310,
    ..FRAME_OBJECTS
};

const V3_11: Layout = Layout {
    frame_model: frame_model::CFRAME,
    runtime_interpreters_head: 40,
    runtime_tss_key: 592,
    interp_threads_head: 16,
    tstate_thread_id: 152,
    tstate_native_thread_id: 160,
    tstate_frame: 56,
    cframe_current_frame: 8,
    frame_previous: 48,
    frame_code: 32,
    frame_instr: 56,
    frame_instr_size: 8,
    frame_is_entry: 68,
    frame_owner: 69,
    code_name: 120,
    code_qualname: 128,
    code_filename: 112,
    code_firstlineno: 72,
    code_linetable: 136,
    line_table: line_table::LOCATIONS,
    code_code_adaptive: 184,
    unicode_ascii_data: 48,
    unicode_compact_data: 72,
    ..COMMON
};

const V3_12: Layout = Layout {
    frame_model: frame_model::CFRAME,
    runtime_interpreters_head: 40,
    runtime_tss_key: 1544,
    interp_threads_head: 72,
    tstate_thread_id: 136,
    tstate_native_thread_id: 144,
    tstate_frame: 56,
    cframe_current_frame: 0,
    frame_previous: 8,
    frame_code: 0,
    frame_instr: 56,
    frame_instr_size: 8,
    frame_owner: 70,
    owner_cstack: 3,
    code_name: 120,
    code_qualname: 128,
    code_filename: 112,
    code_firstlineno: 68,
    code_linetable: 136,
    line_table: line_table::LOCATIONS,
    code_code_adaptive: 192,
    unicode_ascii_data: 40,
    unicode_compact_data: 56,
    ..COMMON
};

/// 3.13 as built by pyenv (3.13.0). A live 3.13 process's own `_Py_DebugOffsets` take precedence.
const V3_13: Layout = Layout {
    frame_model: frame_model::CURRENT_FRAME,
    runtime_interpreters_head: 632,
    runtime_tss_key: 2160,
    interp_next: 7264,
    interp_threads_head: 7344,
    tstate_thread_id: 152,
    tstate_native_thread_id: 160,
    tstate_frame: 72,
    frame_previous: 8,
    frame_code: 0,
    frame_instr: 56,
    frame_instr_size: 8,
    frame_owner: 70,
    owner_cstack: 3,
    code_name: 120,
    code_qualname: 128,
    code_filename: 112,
    code_firstlineno: 68,
    code_linetable: 136,
    line_table: line_table::LOCATIONS,
    code_code_adaptive: 200,
    unicode_ascii_data: 40,
    unicode_compact_data: 56,
    ..COMMON
};

/// Oldest and newest minor versions of Python 3 with a layout.
pub const SUPPORTED: (u8, u8) = (8, 13);

/// The table layout of CPython `major.minor`, if supported.
pub fn table(version: (u8, u8)) -> Option<Layout> {
    match version {
        (3, 8) => Some(V3_8),
        (3, 9) => Some(V3_9),
        (3, 10) => Some(V3_10),
        (3, 11) => Some(V3_11),
        (3, 12) => Some(V3_12),
        (3, 13) => Some(V3_13),
        _ => None,
    }
}

impl Layout {
    /// Whether member offset `value` is present.
    pub fn has(value: u32) -> bool {
        value != ABSENT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Versions outside 3.8–3.13 have no table.
    #[test]
    fn python_tables_cover_exactly_the_supported_versions() {
        for minor in 0..20u8 {
            let supported = (SUPPORTED.0..=SUPPORTED.1).contains(&minor);
            assert_eq!(table((3, minor)).is_some(), supported, "3.{minor}");
        }
        assert!(table((2, 7)).is_none());
    }

    /// Each table says which frame model and line table it uses (no field left at its default).
    #[test]
    fn python_tables_are_complete_for_their_model() {
        for minor in SUPPORTED.0..=SUPPORTED.1 {
            let layout = table((3, minor)).expect("supported");
            for (name, value) in [
                ("frame_model", layout.frame_model),
                (
                    "runtime_interpreters_head",
                    layout.runtime_interpreters_head,
                ),
                ("interp_threads_head", layout.interp_threads_head),
                ("tstate_thread_id", layout.tstate_thread_id),
                ("tstate_frame", layout.tstate_frame),
                ("frame_previous", layout.frame_previous),
                ("frame_code", layout.frame_code),
                ("frame_instr", layout.frame_instr),
                ("code_name", layout.code_name),
                ("code_filename", layout.code_filename),
                ("code_firstlineno", layout.code_firstlineno),
                ("code_linetable", layout.code_linetable),
                ("line_table", layout.line_table),
                ("unicode_ascii_data", layout.unicode_ascii_data),
            ] {
                assert!(Layout::has(value), "3.{minor}: {name} missing");
            }
            let interpreter_frames = layout.frame_model != frame_model::FRAME_OBJECT;
            assert_eq!(
                Layout::has(layout.code_qualname),
                interpreter_frames,
                "3.{minor}"
            );
            assert_eq!(
                Layout::has(layout.code_code_adaptive),
                interpreter_frames,
                "3.{minor}"
            );
            assert_eq!(
                Layout::has(layout.cframe_current_frame),
                layout.frame_model == frame_model::CFRAME,
                "3.{minor}"
            );
        }
    }
}
