//! CPython 3.13's `_Py_DebugOffsets`: the first bytes of `_PyRuntime`, where the interpreter
//! publishes the offsets of every field an out-of-process reader needs (cookie `xdebugpy`, then
//! `PY_VERSION_HEX`, then sizes and offsets as `uint64_t`s).
//!
//! The process wrote them, so they are hostile input: each struct size is capped and each offset
//! must leave its whole field inside its struct, or the process gets no Python frames (a
//! [`NotPython::BadDebugOffsets`]). What the block does not publish (bit positions of a string's
//! state, the shim frame's owner value, the line table format) comes from the 3.13 table, whose
//! values the `dwarf_check` tests tie to the real build.

use super::layout::{self, Layout};
use super::memory::Memory;
use super::NotPython;

/// `_Py_DebugOffsets.cookie`.
pub const COOKIE: &[u8; 8] = b"xdebugpy";

/// Bytes of the 3.13 `_Py_DebugOffsets` block (`sizeof` in 3.13.0; later 3.13 releases keep it,
/// 3.14 grows it and is refused by its version).
pub const SIZE: usize = 584;

/// Largest struct size believed: `_PyRuntimeState` is 283,320 bytes and `PyInterpreterState` 194,968
/// in 3.13.0; a few times that leaves room for other builds, and stops an offset from sending a
/// reader megabytes away.
pub const MAX_STRUCT_SIZE: u64 = 4 << 20;

/// Byte offsets of the fields used, inside the block (3.13.0 `ptype /o struct _Py_DebugOffsets`,
/// checked by `dwarf_check`).
pub(crate) mod at {
    pub const VERSION: usize = 8;
    pub const FREE_THREADED: usize = 16;
    pub const RUNTIME_SIZE: usize = 24;
    pub const RUNTIME_INTERPRETERS_HEAD: usize = 40;
    pub const INTERP_SIZE: usize = 48;
    pub const INTERP_NEXT: usize = 64;
    pub const INTERP_THREADS_HEAD: usize = 72;
    pub const TSTATE_SIZE: usize = 152;
    pub const TSTATE_NEXT: usize = 168;
    pub const TSTATE_INTERP: usize = 176;
    pub const TSTATE_CURRENT_FRAME: usize = 184;
    pub const TSTATE_THREAD_ID: usize = 192;
    pub const TSTATE_NATIVE_THREAD_ID: usize = 200;
    pub const FRAME_SIZE: usize = 224;
    pub const FRAME_PREVIOUS: usize = 232;
    pub const FRAME_EXECUTABLE: usize = 240;
    pub const FRAME_INSTR_PTR: usize = 248;
    pub const FRAME_OWNER: usize = 264;
    pub const CODE_SIZE: usize = 272;
    pub const CODE_FILENAME: usize = 280;
    pub const CODE_NAME: usize = 288;
    pub const CODE_QUALNAME: usize = 296;
    pub const CODE_LINETABLE: usize = 304;
    pub const CODE_FIRSTLINENO: usize = 312;
    pub const CODE_CODE_ADAPTIVE: usize = 344;
    pub const OBJECT_SIZE: usize = 352;
    pub const OBJECT_TYPE: usize = 360;
    pub const BYTES_SIZE: usize = 512;
    pub const BYTES_OB_SIZE: usize = 520;
    pub const BYTES_OB_SVAL: usize = 528;
    pub const UNICODE_SIZE: usize = 536;
    pub const UNICODE_STATE: usize = 544;
    pub const UNICODE_LENGTH: usize = 552;
    pub const UNICODE_ASCIIOBJECT_SIZE: usize = 560;
}

/// `PY_VERSION_HEX` as (major, minor).
pub fn hex_version(hex: u64) -> (u8, u8) {
    ((hex >> 24) as u8, (hex >> 16) as u8)
}

/// Whether the 8 bytes at `runtime_address` are the `_Py_DebugOffsets` cookie.
pub fn has_cookie(memory: &dyn Memory, runtime_address: u64) -> bool {
    let mut cookie = [0; 8];
    memory.read(runtime_address, &mut cookie) && &cookie == COOKIE
}

/// Reads and checks the `_Py_DebugOffsets` at `runtime_address`, into a layout.
pub fn read(memory: &dyn Memory, runtime_address: u64, module: &str) -> Result<Layout, NotPython> {
    let mut block = [0u8; SIZE];
    if !memory.read(runtime_address, &mut block) {
        return Err(NotPython::Unreadable {
            module: module.to_owned(),
            what: "_Py_DebugOffsets",
        });
    }
    parse(&block)
}

/// Checks and converts a `_Py_DebugOffsets` block (see the module documentation).
pub fn parse(block: &[u8; SIZE]) -> Result<Layout, NotPython> {
    let word = |at: usize| u64::from_le_bytes(block[at..at + 8].try_into().expect("8 bytes"));
    let version = hex_version(word(at::VERSION));
    let bad = |reason: String| NotPython::BadDebugOffsets { version, reason };
    if &block[..8] != COOKIE {
        return Err(bad("no xdebugpy cookie".into()));
    }
    if version != (3, 13) {
        // Another minor version lays the block out differently: its offsets would be misread.
        return Err(NotPython::UnsupportedVersion { version });
    }
    if word(at::FREE_THREADED) != 0 {
        return Err(NotPython::FreeThreaded { version });
    }
    // A member of `size_at`'s struct, `bytes` wide, at the offset stored at `at`.
    let member = |size_at: usize, at: usize, bytes: u64| -> Result<u32, NotPython> {
        let size = word(size_at);
        let offset = word(at);
        if size > MAX_STRUCT_SIZE {
            return Err(bad(format!(
                "a struct of {size} bytes (field at {size_at})"
            )));
        }
        match offset.checked_add(bytes) {
            Some(end) if end <= size => Ok(offset as u32),
            _ => Err(bad(format!(
                "offset {offset} (field at {at}) leaves a {bytes}-byte member outside its {size}-byte struct"
            ))),
        }
    };
    let table = layout::table((3, 13)).expect("3.13 has a table");
    let ascii_size = member(at::UNICODE_SIZE, at::UNICODE_ASCIIOBJECT_SIZE, 0)?;
    // The block does not say where a string's state word lies relative to its data; it must be
    // inside the ASCII header, and that header must be the one the table knows (3.12+ has no
    // `wstr`), since the compact header is derived from it.
    let unicode_state = member(at::UNICODE_SIZE, at::UNICODE_STATE, 4)?;
    let unicode_length = member(at::UNICODE_SIZE, at::UNICODE_LENGTH, 8)?;
    if ascii_size != table.unicode_ascii_data
        || unicode_state + 4 > ascii_size
        || unicode_length + 8 > ascii_size
    {
        return Err(bad(format!(
            "a {ascii_size}-byte string header with state at {unicode_state} and length at {unicode_length}"
        )));
    }
    Ok(Layout {
        runtime_interpreters_head: member(at::RUNTIME_SIZE, at::RUNTIME_INTERPRETERS_HEAD, 8)?,
        interp_next: member(at::INTERP_SIZE, at::INTERP_NEXT, 8)?,
        interp_threads_head: member(at::INTERP_SIZE, at::INTERP_THREADS_HEAD, 8)?,
        tstate_next: member(at::TSTATE_SIZE, at::TSTATE_NEXT, 8)?,
        tstate_interp: member(at::TSTATE_SIZE, at::TSTATE_INTERP, 8)?,
        tstate_thread_id: member(at::TSTATE_SIZE, at::TSTATE_THREAD_ID, 8)?,
        tstate_native_thread_id: member(at::TSTATE_SIZE, at::TSTATE_NATIVE_THREAD_ID, 8)?,
        tstate_frame: member(at::TSTATE_SIZE, at::TSTATE_CURRENT_FRAME, 8)?,
        frame_previous: member(at::FRAME_SIZE, at::FRAME_PREVIOUS, 8)?,
        frame_code: member(at::FRAME_SIZE, at::FRAME_EXECUTABLE, 8)?,
        frame_instr: member(at::FRAME_SIZE, at::FRAME_INSTR_PTR, 8)?,
        frame_owner: member(at::FRAME_SIZE, at::FRAME_OWNER, 1)?,
        object_type: member(at::OBJECT_SIZE, at::OBJECT_TYPE, 8)?,
        code_name: member(at::CODE_SIZE, at::CODE_NAME, 8)?,
        code_qualname: member(at::CODE_SIZE, at::CODE_QUALNAME, 8)?,
        code_filename: member(at::CODE_SIZE, at::CODE_FILENAME, 8)?,
        code_firstlineno: member(at::CODE_SIZE, at::CODE_FIRSTLINENO, 4)?,
        code_linetable: member(at::CODE_SIZE, at::CODE_LINETABLE, 8)?,
        // The bytecode follows the header: it may end the struct (a flexible array member).
        code_code_adaptive: member(at::CODE_SIZE, at::CODE_CODE_ADAPTIVE, 0)?,
        bytes_size: member(at::BYTES_SIZE, at::BYTES_OB_SIZE, 8)?,
        bytes_data: member(at::BYTES_SIZE, at::BYTES_OB_SVAL, 0)?,
        unicode_length,
        unicode_state,
        unicode_ascii_data: ascii_size,
        // `PyCompactUnicodeObject` is the ASCII header plus `utf8_length` and `utf8` (3.12+).
        unicode_compact_data: ascii_size + 16,
        ..table
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The block 3.13.0 publishes, built from the 3.13 table (the same values `gdb` prints for
    /// `_PyRuntime.debug_offsets` of pyenv's 3.13.0).
    pub(crate) fn block_313() -> [u8; SIZE] {
        let mut block = [0u8; SIZE];
        let mut put =
            |at: usize, value: u64| block[at..at + 8].copy_from_slice(&value.to_le_bytes());
        put(at::VERSION, 0x030d_00f0);
        for (at, value) in [
            (at::RUNTIME_SIZE, 283_320),
            (at::RUNTIME_INTERPRETERS_HEAD, 632),
            (at::INTERP_SIZE, 194_968),
            (at::INTERP_NEXT, 7264),
            (at::INTERP_THREADS_HEAD, 7344),
            (at::TSTATE_SIZE, 304),
            (at::TSTATE_NEXT, 8),
            (at::TSTATE_INTERP, 16),
            (at::TSTATE_CURRENT_FRAME, 72),
            (at::TSTATE_THREAD_ID, 152),
            (at::TSTATE_NATIVE_THREAD_ID, 160),
            (at::FRAME_SIZE, 80),
            (at::FRAME_PREVIOUS, 8),
            (at::FRAME_EXECUTABLE, 0),
            (at::FRAME_INSTR_PTR, 56),
            (at::FRAME_OWNER, 70),
            (at::CODE_SIZE, 208),
            (at::CODE_FILENAME, 112),
            (at::CODE_NAME, 120),
            (at::CODE_QUALNAME, 128),
            (at::CODE_LINETABLE, 136),
            (at::CODE_FIRSTLINENO, 68),
            (at::CODE_CODE_ADAPTIVE, 200),
            (at::OBJECT_SIZE, 16),
            (at::OBJECT_TYPE, 8),
            (at::BYTES_SIZE, 40),
            (at::BYTES_OB_SIZE, 16),
            (at::BYTES_OB_SVAL, 32),
            (at::UNICODE_SIZE, 64),
            (at::UNICODE_STATE, 32),
            (at::UNICODE_LENGTH, 16),
            (at::UNICODE_ASCIIOBJECT_SIZE, 40),
        ] {
            put(at, value);
        }
        block[..8].copy_from_slice(COOKIE);
        block
    }

    /// The 3.13.0 block gives exactly the 3.13 table.
    #[test]
    fn python_debug_offsets_of_313_match_the_table() {
        assert_eq!(
            parse(&block_313()),
            Ok(layout::table((3, 13)).expect("3.13"))
        );
    }

    /// Defence: no cookie, another version, a free-threaded build → refused.
    #[test]
    fn python_debug_offsets_refuse_foreign_blocks() {
        let mut block = block_313();
        block[0] = b'X';
        assert!(matches!(
            parse(&block),
            Err(NotPython::BadDebugOffsets { .. })
        ));
        let mut block = block_313();
        block[at::VERSION..at::VERSION + 8].copy_from_slice(&0x030e_00f0u64.to_le_bytes());
        assert_eq!(
            parse(&block),
            Err(NotPython::UnsupportedVersion { version: (3, 14) })
        );
        let mut block = block_313();
        block[at::FREE_THREADED] = 1;
        assert_eq!(
            parse(&block),
            Err(NotPython::FreeThreaded { version: (3, 13) })
        );
    }

    /// Defence: every size and offset is bounded — an absurd struct size, an offset past its
    /// struct or one that overflows when the member's width is added → refused, whichever field.
    #[test]
    fn python_debug_offsets_bound_every_value() {
        let fields = [
            at::RUNTIME_SIZE,
            at::RUNTIME_INTERPRETERS_HEAD,
            at::INTERP_THREADS_HEAD,
            at::TSTATE_NEXT,
            at::TSTATE_CURRENT_FRAME,
            at::FRAME_PREVIOUS,
            at::FRAME_OWNER,
            at::CODE_NAME,
            at::CODE_CODE_ADAPTIVE,
            at::BYTES_OB_SVAL,
            at::UNICODE_STATE,
            at::UNICODE_ASCIIOBJECT_SIZE,
        ];
        for field in fields {
            for value in [u64::MAX, u64::MAX - 3, MAX_STRUCT_SIZE + 1, 1 << 40] {
                let mut block = block_313();
                block[field..field + 8].copy_from_slice(&value.to_le_bytes());
                assert!(
                    matches!(parse(&block), Err(NotPython::BadDebugOffsets { .. })),
                    "field at {field} = {value:#x} was accepted"
                );
            }
        }
    }
}
