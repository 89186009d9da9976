//! The mapping flood of issue 19, shared by the attack tests: a program of the attacker's that
//! maps thousands of distinct one-page files of its own, executable, so that whoever profiles it
//! has that many modules to open. What it does once they are mapped is each test's own.

use std::path::Path;

use super::compile;

/// One-page files the flood maps: the issue's count.
pub const FLOOD_FILES: &str = "20000";

/// C: `map_flood(count)` creates and maps `count` one-page files (`page0`, `page1`, ...) in the
/// current directory, executable, and returns 0, or 1 after `perror` when one fails. `sink` is for
/// the spinning the program does after.
const MAP_FLOOD_C: &str = r#"
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>
static volatile unsigned long sink;
static const char page[4096];
static int map_flood(int count) {
    for (int i = 0; i < count; i++) {
        char name[32];
        snprintf(name, sizeof name, "page%d", i);
        int fd = open(name, O_RDWR | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || write(fd, page, sizeof page) != sizeof page) { perror(name); return 1; }
        if (mmap(0, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd, 0) == MAP_FAILED) {
            perror("mmap"); return 1;
        }
        close(fd);
    }
    return 0;
}
"#;

/// Compiles into `out` a flood program: [`MAP_FLOOD_C`] then `rest`, C that has the program's
/// `main` (which calls `map_flood`) and whatever it calls.
pub fn compile_flood(out: &Path, rest: &str) {
    compile(out, &format!("{MAP_FLOOD_C}{rest}"), &[]);
}
