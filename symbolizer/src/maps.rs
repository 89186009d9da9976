//! Parsing of `/proc/PID/maps`. Pure, so it is unit tested on text.

/// One line of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapsEntry {
    pub start: u64,
    pub end: u64,
    pub readable: bool,
    pub writable: bool,
    pub executable: bool,
    /// `s`: shared (`MAP_SHARED`), not private copy-on-write.
    pub shared: bool,
    /// File offset of `start`.
    pub offset: u64,
    /// Device as `major:minor` in the kernel's encoding (`makedev`).
    pub dev: u64,
    pub inode: u64,
    /// Path, or a pseudo-name such as `[vdso]`, or empty for anonymous memory. A deleted file keeps the
    /// kernel's ` (deleted)` suffix.
    pub path: String,
}

/// Parses the text of `/proc/PID/maps`, skipping lines that do not parse (there are none on a sane
/// kernel; skipping keeps one odd line from costing a process its symbols).
pub fn parse_maps(text: &str) -> Vec<MapsEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MapsEntry> {
    // 7f2c4a000000-7f2c4a028000 r-xp 00028000 fe:01 1835117    /usr/lib/x86_64-linux-gnu/libc.so.6
    let mut fields = line.splitn(6, ' ');
    let (start, end) = fields.next()?.split_once('-')?;
    let perms = fields.next()?.as_bytes();
    let offset = fields.next()?;
    let (major, minor) = fields.next()?.split_once(':')?;
    let inode = fields.next()?;
    let path = fields.next().unwrap_or("").trim_start();
    let major = u64::from_str_radix(major, 16).ok()?;
    let minor = u64::from_str_radix(minor, 16).ok()?;
    Some(MapsEntry {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        readable: perms.first() == Some(&b'r'),
        writable: perms.get(1) == Some(&b'w'),
        executable: perms.get(2) == Some(&b'x'),
        shared: perms.get(3) == Some(&b's'),
        offset: u64::from_str_radix(offset, 16).ok()?,
        dev: libc_makedev(major, minor),
        inode: inode.parse().ok()?,
        path: path.to_owned(),
    })
}

/// glibc's `makedev`, so devices compare equal to `st_dev` from `stat`.
fn libc_makedev(major: u64, minor: u64) -> u64 {
    ((major & 0xffff_f000) << 32)
        | ((major & 0xfff) << 8)
        | ((minor & 0xffff_ff00) << 12)
        | (minor & 0xff)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
55d0c8a00000-55d0c8a01000 r--p 00000000 fe:01 393240                     /usr/bin/cat
55d0c8a01000-55d0c8a05000 r-xp 00001000 fe:01 393240                     /usr/bin/cat
7f2c4a028000-7f2c4a19d000 r-xp 00028000 fe:01 1835117                    /usr/lib/x86_64-linux-gnu/libc.so.6
7f2c4a1f0000-7f2c4a1f2000 rw-p 00000000 00:00 0 
7ffd1e5f2000-7ffd1e5f4000 r-xp 00000000 00:00 0                          [vdso]
7f00aa000000-7f00aa001000 r-xp 00000000 00:2a 77                         /tmp/my lib.so (deleted)
";

    /// Every field of a typical maps file is read, including paths with spaces and anonymous lines.
    #[test]
    fn parses_typical_maps() {
        let entries = parse_maps(SAMPLE);
        assert_eq!(entries.len(), 6);
        let libc = &entries[2];
        assert_eq!(libc.start, 0x7f2c4a028000);
        assert_eq!(libc.end, 0x7f2c4a19d000);
        assert!(libc.executable && libc.readable);
        assert_eq!(libc.offset, 0x28000);
        assert_eq!(libc.dev, libc_makedev(0xfe, 1));
        assert_eq!(libc.inode, 1835117);
        assert_eq!(libc.path, "/usr/lib/x86_64-linux-gnu/libc.so.6");
        assert_eq!(entries[3].path, "");
        assert!(!entries[3].executable);
        assert_eq!(entries[4].path, "[vdso]");
        assert_eq!(entries[5].path, "/tmp/my lib.so (deleted)");
    }

    /// The permission letters: readable, writable, executable, and shared or private.
    #[test]
    fn reads_permissions() {
        let perms = |line: &str| {
            let entry = &parse_maps(line)[0];
            (
                entry.readable,
                entry.writable,
                entry.executable,
                entry.shared,
            )
        };
        let line =
            |perms: &str| format!("7ff1e0400000-7ff1e9882000 {perms} 00000000 103:02 4521 /x");
        assert_eq!(perms(&line("r--s")), (true, false, false, true));
        assert_eq!(perms(&line("r--p")), (true, false, false, false));
        assert_eq!(perms(&line("r-xp")), (true, false, true, false));
        assert_eq!(perms(&line("rw-s")), (true, true, false, true));
    }

    /// A malformed line is skipped, the rest still parse.
    #[test]
    fn skips_malformed_lines() {
        let entries = parse_maps(
            "garbage\n55d0c8a01000-55d0c8a05000 r-xp 00001000 fe:01 393240 /usr/bin/cat\n",
        );
        assert_eq!(entries.len(), 1);
    }

    proptest::proptest! {
        /// Any text: no panic, and every entry parsed comes from a line that has its fields.
        #[test]
        fn never_panics(text in "(([0-9a-f]{0,16}-[0-9a-fx]{0,17} [rwxps-]{0,5} [0-9a-f]{0,9} [0-9a-f:]{0,6} [0-9]{0,21} ?.{0,20})|.{0,40})(\n.{0,60}){0,4}") {
            for entry in parse_maps(&text) {
                proptest::prop_assert!(!entry.path.contains('\n'));
            }
        }
    }

    /// Device numbers match what stat(2) reports for the same file.
    #[test]
    fn device_matches_stat() {
        use std::os::unix::fs::MetadataExt;
        let text = std::fs::read_to_string("/proc/self/maps").expect("read own maps");
        let entry = parse_maps(&text)
            .into_iter()
            .find(|e| e.inode != 0 && e.path.starts_with('/'))
            .expect("a file-backed mapping");
        let meta = std::fs::metadata(&entry.path).expect("stat mapped file");
        assert_eq!((entry.dev, entry.inode), (meta.dev(), meta.ino()));
    }
}
