//! `rust-release [SECONDS]`: single-threaded `main -> drive -> stage -> hot` (default 5 s).

#[inline(never)]
fn main() {
    let acc = rust_release::drive(rust_release::seconds_arg());
    std::process::exit((acc == 42) as i32);
}
