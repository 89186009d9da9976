//! `run-example NAME [ARGS..]`: replaces itself with one of the built example workloads, so a demo
//! needs no path into cargo's build directory:
//!
//!     sudo target/release/emberprof record -o flame.svg -- target/release/run-example burn 5

use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(name) = args.next().and_then(|n| n.into_string().ok()) else {
        eprintln!(
            "usage: run-example NAME [ARGS..]; NAME is one of: {}",
            emberprof_examples::NAMES.join(", ")
        );
        return ExitCode::from(2);
    };
    if !emberprof_examples::NAMES.contains(&name.as_str()) {
        eprintln!(
            "run-example: unknown example {name:?}; known: {}",
            emberprof_examples::NAMES.join(", ")
        );
        return ExitCode::from(2);
    }
    let error = Command::new(emberprof_examples::path(&name))
        .args(args)
        .exec();
    eprintln!("run-example: cannot run {name}: {error}");
    ExitCode::FAILURE
}
