//! Kernel symbolization from a kallsyms file: module symbols carry their `[module]`.

use emberprof_symbolizer::{FrameAddress, Symbol, Symbolizer};

/// Addresses in core kernel symbols get plain names, addresses in module and BPF-program symbols get
/// `name [module]`, and addresses beyond every symbol are unknown.
#[test]
fn names_module_and_bpf_symbols() {
    let dir = tempfile::tempdir().expect("temp dir");
    let kallsyms = dir.path().join("kallsyms");
    std::fs::write(
        &kallsyms,
        "ffffffff81000000 T _stext\n\
         ffffffff81000100 T do_syscall_64\n\
         ffffffff81000200 T vfs_read\n\
         ffffffff81000300 T _etext\n\
         ffffffffa0001000 t bpf_prog_6deef7357e7b4530_sample_cpu\t[bpf]\n\
         ffffffffa0002000 t bpf_prog_0123456789abcdef_other\t[bpf]\n\
         ffffffffc0a01000 t ext4_file_read_iter\t[ext4]\n\
         ffffffffc0a02000 t ext4_llseek\t[ext4]\n",
    )
    .expect("write kallsyms");
    let mut symbolizer = Symbolizer::new(Default::default())
        .expect("symbolizer")
        .with_kallsyms(&kallsyms);
    let names: Vec<String> = symbolizer
        .symbolize_kernel(&[
            FrameAddress::InstructionPointer(0xffffffff81000210),
            FrameAddress::ReturnAddress(0xffffffffc0a01010),
            FrameAddress::InstructionPointer(0xffffffffa0001040),
        ])
        .into_iter()
        .map(|symbol| match symbol {
            Symbol::Named(frames) => frames[0].name.to_string(),
            Symbol::Unknown { .. } => "?".to_owned(),
        })
        .collect();
    assert_eq!(
        names,
        [
            "vfs_read",
            "ext4_file_read_iter [ext4]",
            "bpf_prog_6deef7357e7b4530_sample_cpu [bpf]"
        ]
    );
}
