//! Python interpreters for the tests that profile Python: pyenv's builds (the development machine
//! has 3.8 to 3.13 under `~/.pyenv/versions`), or one in PATH, and Debian's own `python3.11`; and
//! the workload script with known call trees (`examples/python/workload.py`). A missing interpreter
//! fails the test with how to install it.

use std::path::{Path, PathBuf};

use super::find_in_path;

/// The Python workloads (see the script's header for its modes).
pub const PYTHON_WORKLOAD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../examples/python/workload.py"
);

/// CPython `minor` (`"3.12"`): the newest pyenv build of it, or `python3.12` in PATH.
pub fn python_interpreter(minor: &str) -> PathBuf {
    python_interpreter_of(&[minor])
}

/// The first of `minors` that is installed (see [`python_interpreter`]).
pub fn python_interpreter_of(minors: &[&str]) -> PathBuf {
    let mut candidates = Vec::new();
    for minor in minors {
        candidates.extend(pyenv_builds(minor));
        candidates.extend(find_in_path(&format!("python{minor}")));
    }
    candidates
        .into_iter()
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "this test needs CPython {}, which is not installed: `curl https://pyenv.run | bash \
                 && ~/.pyenv/bin/pyenv install {}` (or put python{} in PATH)",
                minors.join(" or "),
                minors[0],
                minors[0]
            )
        })
}

/// `bin/pythonMINOR` of every pyenv build of `minor`, newest first.
fn pyenv_builds(minor: &str) -> Vec<PathBuf> {
    let root = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".pyenv")));
    let Some(versions) = root.map(|root| root.join("versions")) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(&versions) else {
        return Vec::new();
    };
    let prefix = format!("{minor}.");
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with(&prefix))
        .collect();
    names.sort_by_key(|name| std::cmp::Reverse(patch_level(name)));
    names
        .into_iter()
        .map(|name| {
            versions
                .join(name)
                .join("bin")
                .join(format!("python{minor}"))
        })
        .collect()
}

fn patch_level(version: &str) -> u32 {
    version
        .rsplit('.')
        .next()
        .and_then(|patch| patch.parse().ok())
        .unwrap_or(0)
}

/// Debian's `python3.11`: one stripped, statically linked executable, the Python most users of
/// Debian 12 run.
pub fn debian_python() -> PathBuf {
    let path = PathBuf::from("/usr/bin/python3.11");
    assert!(
        path.is_file(),
        "this test needs Debian's python3.11: `apt-get install python3`"
    );
    path
}
