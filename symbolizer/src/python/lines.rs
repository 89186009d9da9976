//! Line numbers from a code object's line table and the offset of the instruction being run, in the
//! three formats CPython 3.8–3.13 use (see [`super::layout::line_table`]).
//!
//! The table is bytes the process wrote: decoding reads each byte at most once, stops at the end of
//! the slice or at the instruction, and never allocates, so a hostile table costs at most its
//! (capped) length.

use super::layout::line_table;

/// The line of the instruction at `byte_offset` (from the start of the bytecode) of a code object
/// whose first line is `first_line`, by `table` in `format`; `None` where the table says the
/// instruction has no line, or the result is not a line number.
pub fn line_at(format: u32, table: &[u8], first_line: i32, byte_offset: u64) -> Option<u32> {
    let line = match format {
        line_table::LNOTAB => lnotab(table, first_line, byte_offset),
        line_table::LINETABLE_310 => linetable_310(table, first_line, byte_offset),
        line_table::LOCATIONS => locations(table, first_line, byte_offset / 2),
        _ => None,
    }?;
    u32::try_from(line).ok().filter(|&line| line > 0)
}

/// 3.8–3.9 `co_lnotab` (`PyCode_Addr2Line`): pairs of (bytecode offset increment, signed line
/// increment); the line is the one in force at the last increment not past the offset.
fn lnotab(table: &[u8], first_line: i32, byte_offset: u64) -> Option<i64> {
    let mut line = i64::from(first_line);
    let mut address = 0u64;
    for pair in table.chunks_exact(2) {
        address += u64::from(pair[0]);
        if address > byte_offset {
            break;
        }
        line += i64::from(pair[1] as i8);
    }
    Some(line)
}

/// 3.10 `co_linetable`: pairs of (length of the range in bytes, signed line delta, -128 meaning
/// the range has no line).
fn linetable_310(table: &[u8], first_line: i32, byte_offset: u64) -> Option<i64> {
    let mut line = i64::from(first_line);
    let mut end = 0u64;
    for pair in table.chunks_exact(2) {
        let start = end;
        end += u64::from(pair[0]);
        let delta = pair[1] as i8;
        let range_line = (delta != -128).then(|| {
            line += i64::from(delta);
            line
        });
        if (start..end).contains(&byte_offset) {
            return range_line;
        }
    }
    None
}

/// 3.11+ location table (`Objects/locations.md`): entries of one header byte (bit 7 set, a 4-bit
/// code, length in code units minus one), then code-specific varints; `unit` is the instruction's
/// offset in 2-byte code units.
fn locations(table: &[u8], first_line: i32, unit: u64) -> Option<i64> {
    let mut line = i64::from(first_line);
    let mut address = 0u64;
    let mut at = 0;
    while let Some(&header) = table.get(at) {
        if header & 0x80 == 0 {
            // Not at an entry start: the table is not what it should be.
            return None;
        }
        at += 1;
        let code = (header >> 3) & 0xf;
        let length = u64::from(header & 7) + 1;
        let entry_line = match code {
            // No location.
            15 => None,
            // Long form: line delta, end line delta, start and end columns.
            14 => {
                line += signed_varint(table, &mut at)?;
                for _ in 0..3 {
                    varint(table, &mut at)?;
                }
                Some(line)
            }
            // No column: line delta only.
            13 => {
                line += signed_varint(table, &mut at)?;
                Some(line)
            }
            // One-line forms: the line delta is in the code; two column bytes follow.
            10..=12 => {
                line += i64::from(code - 10);
                at += 2;
                Some(line)
            }
            // Short forms: same line, one column byte.
            _ => {
                at += 1;
                Some(line)
            }
        };
        if (address..address + length).contains(&unit) {
            return entry_line;
        }
        address += length;
    }
    None
}

/// An unsigned varint of the location table: 6 bits a byte, bit 6 set when more follow. At most 5
/// bytes are taken (a line table holds 32-bit values), so a run of continuation bytes ends early.
fn varint(table: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..30).step_by(6) {
        let byte = *table.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x3f) << shift;
        if byte & 0x40 == 0 {
            return Some(value);
        }
    }
    None
}

/// A signed varint: the unsigned value with the sign in its lowest bit.
fn signed_varint(table: &[u8], at: &mut usize) -> Option<i64> {
    let value = varint(table, at)?;
    let magnitude = (value >> 1) as i64;
    Some(if value & 1 != 0 {
        -magnitude
    } else {
        magnitude
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 3.8 lnotab: the line advances at each pair whose address is not past the offset.
    #[test]
    fn python_lnotab_lines() {
        // offsets 0..6 → line 10, 6..10 → 11, 10.. → 9 (a negative delta).
        let table = [6, 1, 4, (-2i8) as u8];
        assert_eq!(line_at(line_table::LNOTAB, &table, 10, 0), Some(10));
        assert_eq!(line_at(line_table::LNOTAB, &table, 10, 6), Some(11));
        assert_eq!(line_at(line_table::LNOTAB, &table, 10, 9), Some(11));
        assert_eq!(line_at(line_table::LNOTAB, &table, 10, 200), Some(9));
    }

    /// 3.10 linetable: ranges with line deltas; -128 means "no line".
    #[test]
    fn python_linetable_310_lines() {
        let table = [4, 0, 6, 2, 2, 0x80, 4, (-1i8) as u8];
        let at = |offset| line_at(line_table::LINETABLE_310, &table, 5, offset);
        assert_eq!(at(0), Some(5));
        assert_eq!(at(4), Some(7));
        assert_eq!(at(10), None);
        assert_eq!(at(12), Some(6));
        assert_eq!(at(16), None, "past the table");
    }

    /// 3.11+ location table: one entry of each kind.
    #[test]
    fn python_location_table_lines() {
        let table = [
            0x80 | (13 << 3) | 1, // 2 units, no column, line +2 (svarint 4)
            4,
            0x80 | (11 << 3), // 1 unit, one-line form, line +1
            0,
            0,
            0x80 | (15 << 3) | 2, // 3 units, no location
            0x80 | (14 << 3),     // 1 unit, long form, line -3 (svarint 7), end, columns
            7,
            0,
            1,
            1,
            0x80 | (3 << 3) | 1, // 2 units, short form, same line
            5,
        ];
        let at = |unit: u64| line_at(line_table::LOCATIONS, &table, 20, unit * 2);
        assert_eq!(at(0), Some(22));
        assert_eq!(at(1), Some(22));
        assert_eq!(at(2), Some(23));
        assert_eq!(at(3), None);
        assert_eq!(at(5), None);
        assert_eq!(at(6), Some(20));
        assert_eq!(at(7), Some(20));
        assert_eq!(at(8), Some(20));
        assert_eq!(at(9), None, "past the table");
    }

    proptest::proptest! {
        /// Defence: any bytes, any offset, any first line → an answer, no panic or overflow.
        #[test]
        fn python_line_tables_take_any_bytes(
            table in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            first_line in proptest::prelude::any::<i32>(),
            offset in proptest::prelude::any::<u64>(),
            format in 0u32..5,
        ) {
            let _ = line_at(format, &table, first_line, offset);
        }
    }
}
