//! The vDSO: the kernel's small shared object mapped into every process as `[vdso]`. It has no file, so
//! its image is copied once, from this process's own mapping (every 64-bit process of one kernel maps
//! the same image), into an anonymous temporary file that serves as its module.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};

use crate::maps::parse_maps;
use crate::untrusted::StableFile;
use crate::Error;

/// A file holding this kernel's vDSO image, or `None` if this process has no vDSO.
pub(crate) fn extract_vdso() -> Result<Option<StableFile>, Error> {
    let maps = std::fs::read_to_string("/proc/self/maps").map_err(Error::Vdso)?;
    let Some(vdso) = parse_maps(&maps).into_iter().find(|e| e.path == "[vdso]") else {
        return Ok(None);
    };
    let size = usize::try_from(vdso.end.saturating_sub(vdso.start))
        .map_err(std::io::Error::other)
        .map_err(Error::Vdso)?;
    let mut image = vec![0u8; size];
    let mut mem = File::open("/proc/self/mem").map_err(Error::Vdso)?;
    mem.seek(SeekFrom::Start(vdso.start)).map_err(Error::Vdso)?;
    mem.read_exact(&mut image).map_err(Error::Vdso)?;
    let mut file = tempfile::tempfile().map_err(Error::Vdso)?;
    file.write_all(&image).map_err(Error::Vdso)?;
    Ok(Some(StableFile::own(file)))
}
