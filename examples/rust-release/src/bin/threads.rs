//! `rust-release-threads [SECONDS]`: two `std::thread` workers, each `worker -> drive -> stage -> hot`,
//! while the main thread waits for them (default 5 s).

use std::thread;

/// black_box after the call: a tail call would leave no frame of `worker` on the stack.
#[inline(never)]
fn worker() -> u64 {
    let acc = rust_release::drive(rust_release::seconds_arg());
    std::hint::black_box(acc)
}

fn main() {
    let workers: Vec<_> = (0..2)
        .map(|i| {
            thread::Builder::new()
                .name(format!("rr-worker-{i}"))
                .spawn(worker)
        })
        .collect();
    let mut acc = 0u64;
    for handle in workers {
        match handle.map(|h| h.join()) {
            Ok(Ok(value)) => acc = acc.wrapping_add(value),
            _ => std::process::exit(2),
        }
    }
    std::process::exit((acc == 42) as i32);
}
