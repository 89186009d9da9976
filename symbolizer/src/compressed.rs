//! Compressed ELF sections (`SHF_COMPRESSED`), inflated no further than their header states: the
//! header, like the stream, is the profiled file's, so neither may decide how much is allocated.

use std::io::{Read, Write};

use object::CompressionFormat;

/// Why a compressed section was not inflated.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum InflateError {
    /// Neither zlib nor zstd.
    UnknownFormat,
    /// A stream that does not decode, or does not end at the size its header states.
    BadStream,
}

/// Inflates `stream` into `out`, reading one byte past `size` at most: `Ok` only if it inflates to
/// exactly `size` bytes. `out` receives at most `size + 1` bytes, whatever the stream holds.
pub(crate) fn inflate_exactly(
    format: CompressionFormat,
    stream: &[u8],
    size: u64,
    out: &mut impl Write,
) -> Result<(), InflateError> {
    let limit = size.saturating_add(1);
    let inflated = match format {
        CompressionFormat::Zlib => {
            std::io::copy(&mut flate2::read::ZlibDecoder::new(stream).take(limit), out)
        }
        CompressionFormat::Zstandard => {
            let decoder = ruzstd::decoding::StreamingDecoder::new(stream)
                .map_err(|_| InflateError::BadStream)?;
            std::io::copy(&mut decoder.take(limit), out)
        }
        _ => return Err(InflateError::UnknownFormat),
    };
    match inflated {
        Ok(bytes) if bytes == size => Ok(()),
        _ => Err(InflateError::BadStream),
    }
}

#[cfg(test)]
pub(crate) mod test_files {
    //! ELF files with compressed sections, written for tests.

    /// A relocatable ELF file (sections are all the readers need) with these sections: (name,
    /// whether `SHF_COMPRESSED`, contents) each.
    pub fn elf_with_sections(sections: &[(&str, bool, Vec<u8>)]) -> Vec<u8> {
        use object::write::{Object, SectionKind};
        let mut elf = Object::new(
            object::BinaryFormat::Elf,
            object::Architecture::X86_64,
            object::Endianness::Little,
        );
        for (name, compressed, data) in sections {
            let id = elf.add_section(Vec::new(), name.as_bytes().to_vec(), SectionKind::Debug);
            elf.section_mut(id).flags = object::SectionFlags::Elf {
                sh_type: object::elf::SHT_PROGBITS,
                sh_flags: if *compressed {
                    object::elf::SHF_COMPRESSED
                } else {
                    object::elf::SectionFlags(0)
                },
            };
            elf.append_section_data(id, data, 8);
        }
        elf.write().expect("write ELF")
    }

    /// [`elf_with_sections`], all `SHF_COMPRESSED`: (name, `ch_type`, `ch_size`, stream) each.
    pub fn elf_with_compressed_sections(sections: &[(&str, u32, u64, &[u8])]) -> Vec<u8> {
        let sections: Vec<(&str, bool, Vec<u8>)> = sections
            .iter()
            .map(|&(name, ch_type, ch_size, stream)| {
                let mut data = Vec::new();
                data.extend_from_slice(&ch_type.to_le_bytes());
                data.extend_from_slice(&0u32.to_le_bytes());
                data.extend_from_slice(&ch_size.to_le_bytes());
                data.extend_from_slice(&1u64.to_le_bytes());
                data.extend_from_slice(stream);
                (name, true, data)
            })
            .collect();
        elf_with_sections(&sections)
    }

    pub fn zlib(bytes: &[u8]) -> Vec<u8> {
        let mut encoder =
            flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut encoder, bytes).expect("compress");
        encoder.finish().expect("compress")
    }
}
