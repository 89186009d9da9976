//! Ties every [`super::layout`] table entry, and the `_Py_DebugOffsets` field positions, to the
//! DWARF of the pyenv builds (`~/.pyenv/versions/3.X.*/lib/libpython3.X.so`, built with debug
//! information): a wrong or missing offset fails here, naming the member, instead of giving users
//! wrong frames. A missing build fails with the command that installs it.
//!
//! Only a test reads DWARF this way: it resolves member paths (`pyruntimestate.interpreters.head`)
//! unit by unit and stops at the first unit that answers each, since every unit that defines a
//! struct defines it the same way.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;

use gimli::{AttributeValue, EndianSlice, LittleEndian};
use object::{Object, ObjectSection, ObjectSymbol};

use super::debug_offsets;
use super::layout::{self, Layout, ABSENT};

/// The pyenv build of 3.`minor`'s shared library, or a panic saying how to install it.
pub(crate) fn pyenv_libpython(minor: u8) -> PathBuf {
    pyenv_version_dir(minor).join(format!("lib/libpython3.{minor}.so"))
}

/// `$PYENV_ROOT/versions` (`~/.pyenv/versions` by default).
pub(crate) fn pyenv_versions() -> PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(home).join(".pyenv"))
        .join("versions")
}

/// The newest pyenv build of `version` (`3.12`, `2.7`) that has the shared library `library` in
/// its `lib/`, or a panic saying how to install it.
pub(crate) fn pyenv_build(version: &str, library: &str) -> PathBuf {
    let prefix = format!("{version}.");
    let versions = pyenv_versions();
    let mut found: Vec<PathBuf> = std::fs::read_dir(&versions)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .filter(|dir| dir.join("lib").join(library).exists())
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!(
            "no pyenv build of CPython {version} with {library} under {}: install it with \
             `env PYTHON_CONFIGURE_OPTS=--enable-shared pyenv install {version}`",
            versions.display()
        )
    })
}

/// `~/.pyenv/versions/3.minor.*`, or a panic saying how to install it.
pub(crate) fn pyenv_version_dir(minor: u8) -> PathBuf {
    pyenv_build(&format!("3.{minor}"), &format!("libpython3.{minor}.so"))
}

#[derive(Debug)]
enum Kind {
    Struct {
        size: Option<u64>,
        members: Vec<Member>,
    },
    /// A typedef, `const` or `volatile` of the type at this unit offset.
    Alias(Option<usize>),
    /// A base or pointer type of this many bytes.
    Scalar(Option<u64>),
}

#[derive(Debug)]
struct Member {
    name: String,
    offset: u64,
    bit_offset: Option<u64>,
    type_: Option<usize>,
}

/// The types of one compilation unit.
#[derive(Default)]
struct UnitTypes {
    kinds: HashMap<usize, Kind>,
    /// Struct tags and typedef names to the first definition.
    names: HashMap<String, usize>,
    enumerators: HashMap<String, i64>,
}

/// The answer of one unit to a question.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Value(u64),
    /// The unit defines the struct (or the enum) but it has no such member: absent in this build.
    Absent,
    /// This unit cannot tell.
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Question {
    /// Byte offset of a member path: `Type.member.member`.
    Offset(&'static str),
    /// Bit offset of a bit field inside its storage unit: `Type.member.bitfield`.
    Bit(&'static str),
    /// `sizeof(Type)`.
    Size(&'static str),
    /// `sizeof` a member: `Type.member`.
    MemberSize(&'static str),
    /// Value of an enumerator, given another enumerator of the same enum (absent if only that one is
    /// there).
    Enumerator(&'static str, &'static str),
}

impl UnitTypes {
    fn read(
        dwarf: &gimli::Dwarf<EndianSlice<'_, LittleEndian>>,
        unit: &gimli::Unit<EndianSlice<'_, LittleEndian>>,
    ) -> Self {
        let mut types = UnitTypes::default();
        let mut entries = unit.entries();
        // (depth, struct offset) of the enclosing entries.
        let mut stack: Vec<(isize, Option<usize>)> = Vec::new();
        while let Ok(Some(entry)) = entries.next_dfs() {
            let depth = entry.depth();
            while stack.last().is_some_and(|&(d, _)| d >= depth) {
                stack.pop();
            }
            let offset = entry.offset().0;
            let name = entry
                .attr_value(gimli::DW_AT_name)
                .and_then(|v| dwarf.attr_string(unit, v).ok())
                .map(|s| s.to_string_lossy().into_owned());
            let type_ = match entry.attr_value(gimli::DW_AT_type) {
                Some(AttributeValue::UnitRef(r)) => Some(r.0),
                _ => None,
            };
            let udata = |at| entry.attr(at).and_then(|a| a.udata_value());
            let mut this_struct = None;
            match entry.tag() {
                gimli::DW_TAG_structure_type | gimli::DW_TAG_union_type => {
                    let declaration = entry.attr(gimli::DW_AT_declaration).is_some();
                    if !declaration {
                        types.kinds.insert(
                            offset,
                            Kind::Struct {
                                size: udata(gimli::DW_AT_byte_size),
                                members: Vec::new(),
                            },
                        );
                        if let Some(name) = name {
                            types.names.entry(name).or_insert(offset);
                        }
                        this_struct = Some(offset);
                    }
                }
                gimli::DW_TAG_typedef => {
                    types.kinds.insert(offset, Kind::Alias(type_));
                    if let Some(name) = name {
                        types.names.entry(name).or_insert(offset);
                    }
                }
                gimli::DW_TAG_const_type | gimli::DW_TAG_volatile_type => {
                    types.kinds.insert(offset, Kind::Alias(type_));
                }
                gimli::DW_TAG_base_type | gimli::DW_TAG_pointer_type => {
                    types
                        .kinds
                        .insert(offset, Kind::Scalar(udata(gimli::DW_AT_byte_size)));
                }
                gimli::DW_TAG_member => {
                    if let Some(&(_, Some(parent))) = stack.last() {
                        if let Some(Kind::Struct { members, .. }) = types.kinds.get_mut(&parent) {
                            members.push(Member {
                                name: name.unwrap_or_default(),
                                offset: udata(gimli::DW_AT_data_member_location).unwrap_or(0),
                                bit_offset: udata(gimli::DW_AT_data_bit_offset),
                                type_,
                            });
                        }
                    }
                }
                gimli::DW_TAG_enumerator => {
                    if let (Some(name), Some(value)) = (
                        name,
                        entry.attr(gimli::DW_AT_const_value).and_then(|a| {
                            a.sdata_value()
                                .or_else(|| a.udata_value().map(|v| v as i64))
                        }),
                    ) {
                        types.enumerators.entry(name).or_insert(value);
                    }
                }
                _ => {}
            }
            if entry.has_children() {
                stack.push((depth, this_struct));
            }
        }
        types
    }

    /// The struct a type offset names, through typedefs and qualifiers.
    fn strukt(&self, offset: usize) -> Option<(Option<u64>, &[Member])> {
        match self.resolve(offset)? {
            Kind::Struct { size, members } => Some((*size, members)),
            _ => None,
        }
    }

    /// The type a type offset names, through typedefs and qualifiers.
    fn resolve(&self, mut offset: usize) -> Option<&Kind> {
        for _ in 0..16 {
            match self.kinds.get(&offset)? {
                Kind::Alias(target) => offset = (*target)?,
                kind => return Some(kind),
            }
        }
        None
    }

    /// `sizeof` the type at a type offset.
    fn size(&self, offset: usize) -> Option<u64> {
        match self.resolve(offset)? {
            Kind::Struct { size, .. } | Kind::Scalar(size) => *size,
            Kind::Alias(_) => None,
        }
    }

    fn answer(&self, question: &Question) -> Answer {
        match question {
            Question::Offset(path) | Question::Bit(path) | Question::MemberSize(path) => {
                let mut parts = path.split('.');
                let Some(&start) = parts.next().and_then(|name| self.names.get(name)) else {
                    return Answer::Unknown;
                };
                let mut type_ = Some(start);
                let (mut bytes, mut bits) = (0u64, None);
                for part in parts {
                    let Some((_, members)) = type_.and_then(|t| self.strukt(t)) else {
                        return Answer::Unknown;
                    };
                    let Some(member) = members.iter().find(|m| m.name == part) else {
                        return Answer::Absent;
                    };
                    bytes += member.offset;
                    bits = member.bit_offset;
                    type_ = member.type_;
                }
                match question {
                    Question::Bit(_) => bits.map_or(Answer::Absent, Answer::Value),
                    Question::MemberSize(_) => type_
                        .and_then(|t| self.size(t))
                        .map_or(Answer::Unknown, Answer::Value),
                    _ => Answer::Value(bytes),
                }
            }
            Question::Size(name) => self
                .names
                .get(*name)
                .and_then(|&t| self.size(t))
                .map_or(Answer::Unknown, Answer::Value),
            Question::Enumerator(name, sibling) => match self.enumerators.get(*name) {
                Some(&value) => Answer::Value(value as u64),
                None if self.enumerators.contains_key(*sibling) => Answer::Absent,
                None => Answer::Unknown,
            },
        }
    }
}

/// Answers `questions` from the DWARF of `library` (`None`: absent in that build).
fn ask(library: &std::path::Path, questions: &[Question]) -> HashMap<Question, Option<u64>> {
    let data = std::fs::read(library).unwrap_or_else(|e| panic!("read {}: {e}", library.display()));
    let elf = object::File::parse(&data[..]).expect("libpython is ELF");
    let sections = gimli::DwarfSections::load(|id| -> Result<Cow<[u8]>, gimli::Error> {
        Ok(elf
            .section_by_name(id.name())
            .and_then(|s| s.uncompressed_data().ok())
            .unwrap_or(Cow::Borrowed(&[])))
    })
    .expect("DWARF sections");
    let dwarf = sections.borrow(|section| EndianSlice::new(section, LittleEndian));
    let mut answers = HashMap::new();
    let mut units = dwarf.units();
    while let Ok(Some(header)) = units.next() {
        if answers.len() == questions.len() {
            break;
        }
        let Ok(unit) = dwarf.unit(header) else {
            continue;
        };
        let types = UnitTypes::read(&dwarf, &unit);
        for question in questions {
            if answers.contains_key(question) {
                continue;
            }
            match types.answer(question) {
                Answer::Value(value) => {
                    answers.insert(question.clone(), Some(value));
                }
                Answer::Absent => {
                    answers.insert(question.clone(), None);
                }
                Answer::Unknown => {}
            }
        }
    }
    answers
}

/// (field, table value, question whose answer it must be) for 3.`minor`.
fn expectations(minor: u8, layout: &Layout) -> Vec<(&'static str, u32, Question)> {
    use Question::*;
    let l = layout;
    let frame_objects = minor <= 10;
    let mut rows = vec![
        (
            "runtime_interpreters_head",
            l.runtime_interpreters_head,
            Offset("pyruntimestate.interpreters.head"),
        ),
        ("tstate_next", l.tstate_next, Offset("_ts.next")),
        ("tstate_interp", l.tstate_interp, Offset("_ts.interp")),
        ("interp_next", l.interp_next, Offset("_is.next")),
        (
            "tstate_thread_id",
            l.tstate_thread_id,
            Offset("_ts.thread_id"),
        ),
        (
            "tstate_native_thread_id",
            l.tstate_native_thread_id,
            Offset("_ts.native_thread_id"),
        ),
        ("object_type", l.object_type, Offset("PyObject.ob_type")),
        ("code_name", l.code_name, Offset("PyCodeObject.co_name")),
        (
            "code_qualname",
            l.code_qualname,
            Offset("PyCodeObject.co_qualname"),
        ),
        (
            "code_filename",
            l.code_filename,
            Offset("PyCodeObject.co_filename"),
        ),
        (
            "code_firstlineno",
            l.code_firstlineno,
            Offset("PyCodeObject.co_firstlineno"),
        ),
        (
            "code_code_adaptive",
            l.code_code_adaptive,
            Offset("PyCodeObject.co_code_adaptive"),
        ),
        (
            "bytes_size",
            l.bytes_size,
            Offset("PyBytesObject.ob_base.ob_size"),
        ),
        ("bytes_data", l.bytes_data, Offset("PyBytesObject.ob_sval")),
        (
            "unicode_length",
            l.unicode_length,
            Offset("PyASCIIObject.length"),
        ),
        (
            "unicode_state",
            l.unicode_state,
            Offset("PyASCIIObject.state"),
        ),
        (
            "unicode_ascii_data",
            l.unicode_ascii_data,
            Size("PyASCIIObject"),
        ),
        (
            "unicode_compact_data",
            l.unicode_compact_data,
            Size("PyCompactUnicodeObject"),
        ),
        (
            "unicode_kind_shift",
            l.unicode_kind_shift,
            Bit("PyASCIIObject.state.kind"),
        ),
        (
            "unicode_compact_bit",
            l.unicode_compact_bit,
            Bit("PyASCIIObject.state.compact"),
        ),
        (
            "unicode_ascii_bit",
            l.unicode_ascii_bit,
            Bit("PyASCIIObject.state.ascii"),
        ),
        (
            "runtime_tss_key",
            l.runtime_tss_key,
            Offset(if minor <= 11 {
                "pyruntimestate.gilstate.autoTSSkey"
            } else {
                "pyruntimestate.autoTSSkey"
            }),
        ),
        (
            "code_linetable",
            l.code_linetable,
            Offset(if minor <= 9 {
                "PyCodeObject.co_lnotab"
            } else {
                "PyCodeObject.co_linetable"
            }),
        ),
    ];
    if frame_objects {
        rows.extend([
            (
                "interp_threads_head",
                l.interp_threads_head,
                Offset("_is.tstate_head"),
            ),
            ("tstate_frame", l.tstate_frame, Offset("_ts.frame")),
            ("frame_previous", l.frame_previous, Offset("_frame.f_back")),
            ("frame_code", l.frame_code, Offset("_frame.f_code")),
            ("frame_instr", l.frame_instr, Offset("_frame.f_lasti")),
            (
                "frame_instr_size",
                l.frame_instr_size,
                MemberSize("_frame.f_lasti"),
            ),
        ]);
    } else {
        let (tstate_frame, code, instr) = if minor <= 12 {
            (
                "_ts.cframe",
                "_PyInterpreterFrame.f_code",
                "_PyInterpreterFrame.prev_instr",
            )
        } else {
            (
                "_ts.current_frame",
                "_PyInterpreterFrame.f_executable",
                "_PyInterpreterFrame.instr_ptr",
            )
        };
        rows.extend([
            (
                "interp_threads_head",
                l.interp_threads_head,
                Offset("_is.threads.head"),
            ),
            ("tstate_frame", l.tstate_frame, Offset(tstate_frame)),
            (
                "cframe_current_frame",
                l.cframe_current_frame,
                Offset("_PyCFrame.current_frame"),
            ),
            (
                "frame_previous",
                l.frame_previous,
                Offset("_PyInterpreterFrame.previous"),
            ),
            ("frame_code", l.frame_code, Offset(code)),
            ("frame_instr", l.frame_instr, Offset(instr)),
            (
                "frame_is_entry",
                l.frame_is_entry,
                Offset("_PyInterpreterFrame.is_entry"),
            ),
            (
                "frame_owner",
                l.frame_owner,
                Offset("_PyInterpreterFrame.owner"),
            ),
            ("frame_instr_size", l.frame_instr_size, MemberSize(instr)),
            (
                "owner_cstack",
                l.owner_cstack,
                Enumerator("FRAME_OWNED_BY_CSTACK", "FRAME_OWNED_BY_GENERATOR"),
            ),
        ]);
    }
    rows
}

/// Every table entry of 3.`minor` against the pyenv build's DWARF; returns the mismatches.
fn check_version(minor: u8) -> Vec<String> {
    let library = pyenv_libpython(minor);
    let layout = layout::table((3, minor)).expect("a supported version");
    let rows = expectations(minor, &layout);
    let questions: Vec<Question> = rows.iter().map(|(_, _, q)| q.clone()).collect();
    let answers = ask(&library, &questions);
    let mut wrong = Vec::new();
    for (field, value, question) in rows {
        let expected = match answers.get(&question) {
            Some(answer) => *answer,
            // `_PyCFrame` does not exist at all outside 3.11–3.12: absent.
            None if matches!(question, Question::Offset("_PyCFrame.current_frame")) => None,
            None => {
                wrong.push(format!(
                    "3.{minor} {field}: {question:?} not found in the DWARF"
                ));
                continue;
            }
        };
        let table = (value != ABSENT).then_some(u64::from(value));
        if table != expected {
            wrong.push(format!(
                "3.{minor} {field}: table {table:?}, DWARF of {} says {expected:?} ({question:?})",
                library.display()
            ));
        }
    }
    wrong
}

macro_rules! dwarf_test {
    ($name:ident, $minor:literal) => {
        /// Every layout table entry of this version equals the member offset in the pyenv build's DWARF.
        #[test]
        fn $name() {
            let wrong = check_version($minor);
            assert!(
                wrong.is_empty(),
                "layout table disagrees with DWARF:\n{}",
                wrong.join("\n")
            );
        }
    };
}

dwarf_test!(python_layout_3_8_matches_dwarf, 8);
dwarf_test!(python_layout_3_9_matches_dwarf, 9);
dwarf_test!(python_layout_3_10_matches_dwarf, 10);
dwarf_test!(python_layout_3_11_matches_dwarf, 11);
dwarf_test!(python_layout_3_12_matches_dwarf, 12);
dwarf_test!(python_layout_3_13_matches_dwarf, 13);

/// The `_Py_DebugOffsets` field positions the reader uses are those of 3.13's DWARF, and the block
/// 3.13 ships in `_PyRuntime`'s initial value (read from the library file) parses into the 3.13
/// table.
#[test]
fn python_debug_offsets_match_dwarf_and_the_shipped_block() {
    use debug_offsets::at;
    use Question::*;
    let library = pyenv_libpython(13);
    let fields = [
        (at::VERSION, "version"),
        (at::FREE_THREADED, "free_threaded"),
        (at::RUNTIME_SIZE, "runtime_state.size"),
        (
            at::RUNTIME_INTERPRETERS_HEAD,
            "runtime_state.interpreters_head",
        ),
        (at::INTERP_SIZE, "interpreter_state.size"),
        (at::INTERP_NEXT, "interpreter_state.next"),
        (at::INTERP_THREADS_HEAD, "interpreter_state.threads_head"),
        (at::TSTATE_SIZE, "thread_state.size"),
        (at::TSTATE_NEXT, "thread_state.next"),
        (at::TSTATE_INTERP, "thread_state.interp"),
        (at::TSTATE_CURRENT_FRAME, "thread_state.current_frame"),
        (at::TSTATE_THREAD_ID, "thread_state.thread_id"),
        (at::TSTATE_NATIVE_THREAD_ID, "thread_state.native_thread_id"),
        (at::FRAME_SIZE, "interpreter_frame.size"),
        (at::FRAME_PREVIOUS, "interpreter_frame.previous"),
        (at::FRAME_EXECUTABLE, "interpreter_frame.executable"),
        (at::FRAME_INSTR_PTR, "interpreter_frame.instr_ptr"),
        (at::FRAME_OWNER, "interpreter_frame.owner"),
        (at::CODE_SIZE, "code_object.size"),
        (at::CODE_FILENAME, "code_object.filename"),
        (at::CODE_NAME, "code_object.name"),
        (at::CODE_QUALNAME, "code_object.qualname"),
        (at::CODE_LINETABLE, "code_object.linetable"),
        (at::CODE_FIRSTLINENO, "code_object.firstlineno"),
        (at::CODE_CODE_ADAPTIVE, "code_object.co_code_adaptive"),
        (at::OBJECT_SIZE, "pyobject.size"),
        (at::OBJECT_TYPE, "pyobject.ob_type"),
        (at::BYTES_SIZE, "bytes_object.size"),
        (at::BYTES_OB_SIZE, "bytes_object.ob_size"),
        (at::BYTES_OB_SVAL, "bytes_object.ob_sval"),
        (at::UNICODE_SIZE, "unicode_object.size"),
        (at::UNICODE_STATE, "unicode_object.state"),
        (at::UNICODE_LENGTH, "unicode_object.length"),
        (
            at::UNICODE_ASCIIOBJECT_SIZE,
            "unicode_object.asciiobject_size",
        ),
    ];
    let paths: Vec<&'static str> = fields
        .iter()
        .map(|(_, path)| &*Box::leak(format!("_Py_DebugOffsets.{path}").into_boxed_str()))
        .collect();
    let mut questions: Vec<Question> = paths.iter().map(|p| Offset(p)).collect();
    questions.push(Size("_Py_DebugOffsets"));
    let answers = ask(&library, &questions);
    for ((at, path), question) in fields.iter().zip(&questions) {
        assert_eq!(
            answers.get(question).copied().flatten(),
            Some(*at as u64),
            "_Py_DebugOffsets.{path}"
        );
    }
    assert_eq!(
        answers.get(&Size("_Py_DebugOffsets")).copied().flatten(),
        Some(debug_offsets::SIZE as u64),
        "sizeof(_Py_DebugOffsets)"
    );

    // The block as the library initialises `_PyRuntime` with it.
    let data = std::fs::read(&library).expect("read libpython3.13");
    let elf = object::File::parse(&data[..]).expect("ELF");
    let runtime = elf
        .dynamic_symbols()
        .find(|s| s.name() == Ok("_PyRuntime"))
        .expect("_PyRuntime exported")
        .address();
    let section = elf
        .sections()
        .find(|s| (s.address()..s.address() + s.size()).contains(&runtime))
        .expect("a section holds _PyRuntime");
    let bytes = section.data().expect("section data");
    let at = (runtime - section.address()) as usize;
    let block: &[u8; debug_offsets::SIZE] = bytes[at..at + debug_offsets::SIZE]
        .try_into()
        .expect("the block");
    assert_eq!(
        debug_offsets::parse(block),
        Ok(layout::table((3, 13)).expect("3.13"))
    );
}
