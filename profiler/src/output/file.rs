//! Atomic output: the result is written to a temporary file in the destination directory and renamed
//! over the destination only when complete, so an interrupted or failed write never leaves a
//! half-written file. The temporary file is created up front, which also proves the destination is
//! writable before any sampling starts.

use std::fs::Permissions;
use std::io::{BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tempfile::NamedTempFile;

use super::OutputTarget;

pub enum OutputFile {
    Stdout,
    File {
        destination: PathBuf,
        temp: NamedTempFile,
    },
}

impl OutputFile {
    /// Reserves the output: for a file, checks the destination and creates the temporary file next to it.
    pub fn create(target: &OutputTarget) -> Result<Self> {
        let destination = match target {
            OutputTarget::Stdout => return Ok(OutputFile::Stdout),
            OutputTarget::File(path) => path.clone(),
        };
        if destination.is_dir() {
            bail!(
                "output {} is a directory; give a file name such as {}/flamegraph.svg",
                destination.display(),
                destination.display()
            );
        }
        let directory = match destination.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file_name = destination
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !directory.is_dir() {
            bail!(
                "cannot write output {}: directory {} does not exist",
                destination.display(),
                directory.display()
            );
        }
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{file_name}."))
            .suffix(".tmp")
            .tempfile_in(&directory)
            .map_err(|error| {
                // tempfile's message repeats the random temporary path; the kind is what matters.
                anyhow::anyhow!(
                    "cannot write output {}: directory {} is not writable ({})",
                    destination.display(),
                    directory.display(),
                    std::io::Error::from(error.kind())
                )
            })?;
        // NamedTempFile is 0600; an output file should be as readable as any file the user creates.
        temp.as_file()
            .set_permissions(Permissions::from_mode(0o644))
            .with_context(|| format!("cannot set permissions of {}", temp.path().display()))?;
        Ok(OutputFile::File { destination, temp })
    }

    /// Writes the content produced by `write`, then moves the file into place.
    pub fn commit(self, write: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
        match self {
            OutputFile::Stdout => {
                let stdout = std::io::stdout();
                let mut writer = BufWriter::new(stdout.lock());
                write(&mut writer)?;
                writer.flush().context("cannot write to stdout")?;
                Ok(())
            }
            OutputFile::File {
                destination,
                mut temp,
            } => {
                {
                    let mut writer = BufWriter::new(temp.as_file_mut());
                    write(&mut writer)?;
                    writer
                        .flush()
                        .with_context(|| format!("cannot write {}", destination.display()))?;
                }
                temp.as_file()
                    .sync_all()
                    .with_context(|| format!("cannot write {}", destination.display()))?;
                hand_to_invoking_user(temp.path());
                temp.persist(&destination)
                    .map_err(|e| e.error)
                    .with_context(|| {
                        format!(
                            "cannot move the output into place at {}",
                            destination.display()
                        )
                    })?;
                Ok(())
            }
        }
    }
}

/// Under sudo, gives the output to the user who ran sudo, so they can delete or overwrite it without
/// root. Best effort: a failure leaves the file owned by root, which is still usable.
fn hand_to_invoking_user(path: &Path) {
    let id = |name| std::env::var(name).ok().and_then(|v| v.parse::<u32>().ok());
    if let (Some(uid), Some(gid)) = (id("SUDO_UID"), id("SUDO_GID")) {
        if let Err(error) = std::os::unix::fs::chown(path, Some(uid), Some(gid)) {
            log::debug!("cannot chown {} to {uid}:{gid}: {error}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_files_in(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    }

    /// A committed file holds the content and no temporary file is left behind.
    #[test]
    fn commit_writes_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.folded");
        let output = OutputFile::create(&OutputTarget::File(path.clone())).unwrap();
        assert_eq!(
            temp_files_in(dir.path()).len(),
            1,
            "temp file reserved up front"
        );
        assert!(!path.exists(), "destination untouched until commit");
        output.commit(|w| Ok(w.write_all(b"a;b 1\n")?)).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a;b 1\n");
        assert!(temp_files_in(dir.path()).is_empty());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
    }

    /// A write that fails half way leaves the old destination intact and no temporary file.
    #[test]
    fn failed_write_leaves_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.svg");
        std::fs::write(&path, "old").unwrap();
        let output = OutputFile::create(&OutputTarget::File(path.clone())).unwrap();
        let result = output.commit(|w| {
            w.write_all(b"partial")?;
            bail!("renderer failed")
        });
        assert!(result.is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
        assert!(temp_files_in(dir.path()).is_empty());
    }

    /// A missing directory, or a directory as destination, is refused at creation time.
    #[test]
    fn unwritable_destination_fails_early() {
        let error = OutputFile::create(&OutputTarget::File("/nonexistent/dir/x.svg".into()))
            .err()
            .unwrap();
        assert!(format!("{error:#}").contains("does not exist"), "{error:#}");
        // sysfs refuses new files even to root.
        let error = OutputFile::create(&OutputTarget::File("/sys/x.svg".into()))
            .err()
            .unwrap();
        assert!(error.to_string().contains("not writable"), "{error}");
        let dir = tempfile::tempdir().unwrap();
        let error = OutputFile::create(&OutputTarget::File(dir.path().into()))
            .err()
            .unwrap();
        assert!(error.to_string().contains("is a directory"), "{error}");
    }
}
