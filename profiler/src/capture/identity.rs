//! Who a launched command runs as. `sudo emberprof record -- ./app` must not run `app` as root: root
//! is needed to load the sampler, not to run the program, and a root shell or a program that writes
//! root-owned files into the user's home is a surprise nobody asked for. So under sudo the command
//! gets the invoking user's identity back (user and group IDs, supplementary groups, and the
//! passwd database's HOME, USER, LOGNAME and SHELL), unless `--run-as-root` or `--user NAME` says
//! otherwise.
//!
//! This module only decides and looks up; the fork child in `launch` applies the result with
//! async-signal-safe system calls.

use std::ffi::{CStr, CString, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use anyhow::{bail, Context, Result};

/// The user choice, from the command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum RunAs {
    /// The user who ran sudo (SUDO_UID), or unchanged without sudo. The default.
    #[default]
    Invoker,
    /// Unchanged: root under sudo.
    Root,
    /// This user, by name.
    User(String),
}

/// Whose identity to look up, decided from the choice and the environment alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Who {
    /// Keep emberprof's own identity.
    Unchanged,
    /// The passwd entry with this user ID; `gid` overrides its group (sudo's SUDO_GID).
    Uid {
        uid: u32,
        gid: Option<u32>,
    },
    Name(String),
}

/// Decides from `--user`/`--run-as-root`, SUDO_UID/SUDO_GID and our effective user ID.
pub fn choose(
    run_as: &RunAs,
    sudo_uid: Option<&str>,
    sudo_gid: Option<&str>,
    euid: u32,
) -> Result<Who> {
    match run_as {
        RunAs::Root => Ok(Who::Unchanged),
        RunAs::User(name) => Ok(Who::Name(name.clone())),
        RunAs::Invoker => {
            // Only root can change identity, and only sudo says who the invoker was.
            let Some(uid) = sudo_uid.filter(|_| euid == 0) else {
                return Ok(Who::Unchanged);
            };
            let uid: u32 = uid.trim().parse().with_context(|| {
                format!("SUDO_UID={uid:?} is not a user ID: fix it, or pass --user NAME or --run-as-root")
            })?;
            if uid == 0 {
                return Ok(Who::Unchanged);
            }
            let gid = match sudo_gid {
                Some(gid) => Some(gid.trim().parse().with_context(|| {
                    format!("SUDO_GID={gid:?} is not a group ID: fix it, or pass --user NAME or --run-as-root")
                })?),
                None => None,
            };
            Ok(Who::Uid { uid, gid })
        }
    }
}

/// An identity to take before exec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (getgrouplist), the primary group included.
    pub groups: Vec<libc::gid_t>,
    /// HOME, USER, LOGNAME, SHELL to set in the command's environment.
    pub environment: Vec<(&'static str, OsString)>,
}

/// The credentials for `run_as` in this process's situation; `None` keeps emberprof's identity.
pub fn resolve(run_as: &RunAs) -> Result<Option<Credentials>> {
    let env = |name| std::env::var(name).ok();
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let who = choose(
        run_as,
        env("SUDO_UID").as_deref(),
        env("SUDO_GID").as_deref(),
        euid,
    )?;
    let (entry, gid) = match who {
        Who::Unchanged => return Ok(None),
        Who::Uid { uid, gid } => {
            let entry = lookup(Lookup::Uid(uid))?.with_context(|| {
                format!(
                    "SUDO_UID={uid} has no entry in the passwd database, so the command cannot run as \
                     that user: pass --user NAME or --run-as-root"
                )
            })?;
            let gid = gid.unwrap_or(entry.gid);
            (entry, gid)
        }
        Who::Name(name) => {
            let entry = lookup(Lookup::Name(&name))?
                .with_context(|| format!("--user {name}: no such user"))?;
            let gid = entry.gid;
            (entry, gid)
        }
    };
    let groups = group_list(&entry.name, gid)?;
    let name = OsString::from_vec(entry.name.as_bytes().to_vec());
    Ok(Some(Credentials {
        uid: entry.uid,
        gid,
        groups,
        environment: vec![
            ("HOME", entry.home),
            ("USER", name.clone()),
            ("LOGNAME", name),
            ("SHELL", entry.shell),
        ],
    }))
}

struct PasswdEntry {
    name: CString,
    uid: u32,
    gid: u32,
    home: OsString,
    shell: OsString,
}

enum Lookup<'a> {
    Uid(u32),
    Name(&'a str),
}

/// getpwuid_r/getpwnam_r, growing the buffer on ERANGE. `Ok(None)`: no such user.
fn lookup(key: Lookup<'_>) -> Result<Option<PasswdEntry>> {
    let name = match &key {
        Lookup::Name(name) => Some(CString::new(*name).context("a user name cannot contain NUL")?),
        Lookup::Uid(_) => None,
    };
    let mut buffer = vec![0u8; 4096];
    loop {
        // SAFETY: zeroed passwd is a valid value for the out-parameter.
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: the buffer and out-parameters are valid for the call; on success the strings in
        // `entry` point into `buffer`, which outlives their use below.
        let error = unsafe {
            match (&key, &name) {
                (Lookup::Uid(uid), _) => libc::getpwuid_r(
                    *uid,
                    &mut entry,
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                    &mut result,
                ),
                (Lookup::Name(_), Some(name)) => libc::getpwnam_r(
                    name.as_ptr(),
                    &mut entry,
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                    &mut result,
                ),
                (Lookup::Name(_), None) => return Ok(None),
            }
        };
        if error == libc::ERANGE && buffer.len() < 1 << 20 {
            buffer.resize(buffer.len() * 2, 0);
            continue;
        }
        if error != 0 {
            return Err(std::io::Error::from_raw_os_error(error))
                .context("cannot read the passwd database");
        }
        if result.is_null() {
            return Ok(None);
        }
        // SAFETY: on success the fields are NUL-terminated strings in `buffer` (or null).
        let text = |ptr: *const libc::c_char| unsafe {
            if ptr.is_null() {
                CString::default()
            } else {
                CStr::from_ptr(ptr).to_owned()
            }
        };
        let os = |c: CString| OsString::from_vec(c.into_bytes());
        return Ok(Some(PasswdEntry {
            name: text(entry.pw_name),
            uid: entry.pw_uid,
            gid: entry.pw_gid,
            home: os(text(entry.pw_dir)),
            shell: os(text(entry.pw_shell)),
        }));
    }
}

/// The user's groups as initgroups(3) would set them, `gid` included.
fn group_list(name: &CString, gid: u32) -> Result<Vec<libc::gid_t>> {
    let mut count: libc::c_int = 32;
    loop {
        let mut groups = vec![0 as libc::gid_t; count as usize];
        let capacity = count;
        // SAFETY: `groups` has room for `count` entries; getgrouplist updates `count`.
        let ret =
            unsafe { libc::getgrouplist(name.as_ptr(), gid, groups.as_mut_ptr(), &mut count) };
        if ret >= 0 {
            groups.truncate(count.max(0) as usize);
            return Ok(groups);
        }
        if count <= capacity {
            // No growth asked for: give up rather than loop.
            bail!("cannot list the groups of user {}", name.to_string_lossy());
        }
        if count > 65536 {
            bail!("user {} is in too many groups", name.to_string_lossy());
        }
    }
}

/// The current environment with `overrides` replacing variables of the same name, as `K=V` strings.
pub fn environment_with(overrides: &[(&'static str, OsString)]) -> Vec<OsString> {
    let mut entries: Vec<OsString> = std::env::vars_os()
        .filter(|(key, _)| {
            !overrides
                .iter()
                .any(|(name, _)| key.as_bytes() == name.as_bytes())
        })
        .map(|(key, value)| {
            let mut entry = key;
            entry.push("=");
            entry.push(value);
            entry
        })
        .collect();
    for (name, value) in overrides {
        let mut entry = OsString::from(name);
        entry.push("=");
        entry.push(value);
        entries.push(entry);
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Under sudo (root with SUDO_UID) the command runs as the invoker by default; never when
    /// asked for root, never without root or sudo; `--user` always wins.
    #[test]
    fn chooses_identity() {
        let invoker = RunAs::Invoker;
        assert_eq!(
            choose(&invoker, Some("1000"), Some("1001"), 0).unwrap(),
            Who::Uid {
                uid: 1000,
                gid: Some(1001)
            }
        );
        assert_eq!(
            choose(&invoker, Some("1000"), None, 0).unwrap(),
            Who::Uid {
                uid: 1000,
                gid: None
            }
        );
        assert_eq!(choose(&invoker, None, None, 0).unwrap(), Who::Unchanged);
        assert_eq!(
            choose(&invoker, Some("0"), Some("0"), 0).unwrap(),
            Who::Unchanged
        );
        assert_eq!(
            choose(&invoker, Some("1000"), None, 1000).unwrap(),
            Who::Unchanged,
            "not root: nothing to drop"
        );
        assert_eq!(
            choose(&RunAs::Root, Some("1000"), None, 0).unwrap(),
            Who::Unchanged
        );
        assert_eq!(
            choose(&RunAs::User("bob".into()), None, None, 0).unwrap(),
            Who::Name("bob".into())
        );
        let error = choose(&invoker, Some("x1"), None, 0)
            .unwrap_err()
            .to_string();
        assert!(error.contains("SUDO_UID"), "{error}");
    }

    /// `nobody` resolves from the passwd database with its home, shell and group; an unknown name
    /// is a clear error.
    #[test]
    fn resolves_users() {
        let credentials = resolve(&RunAs::User("nobody".into())).unwrap().unwrap();
        assert_eq!(credentials.uid, 65534);
        assert!(credentials.groups.contains(&credentials.gid));
        let env: Vec<&str> = credentials.environment.iter().map(|(k, _)| *k).collect();
        assert_eq!(env, ["HOME", "USER", "LOGNAME", "SHELL"]);
        assert_eq!(credentials.environment[1].1, "nobody");
        let error = resolve(&RunAs::User("no-such-user-emberprof".into()))
            .unwrap_err()
            .to_string();
        assert!(error.contains("no such user"), "{error}");
        assert_eq!(resolve(&RunAs::Root).unwrap(), None);
    }

    /// Overridden variables appear once, with the new value.
    #[test]
    fn overrides_environment() {
        let env = environment_with(&[("HOME", "/nonexistent".into())]);
        let homes: Vec<_> = env
            .iter()
            .filter(|e| e.as_bytes().starts_with(b"HOME="))
            .collect();
        assert_eq!(homes, [&OsString::from("HOME=/nonexistent")]);
    }
}
