//! Which kernel module a kernel symbol belongs to. blazesym names kernel addresses from kallsyms but
//! does not report the module (its `Sym::module` is always empty for kallsyms), so the `[module]`
//! column of kallsyms is read here: module code, and the JIT images of BPF programs (`[bpf]`), are
//! shown as `name [module]`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// Symbol start address to module name, for the symbols of loadable modules and BPF programs.
#[derive(Debug, Default)]
pub struct KernelModules {
    by_address: HashMap<u64, Arc<str>>,
}

impl KernelModules {
    /// Reads a kallsyms file; an unreadable one gives an empty map (no module names, not an error).
    pub fn read(path: &Path) -> Self {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text),
            Err(error) => {
                log::debug!("cannot read {}: {error}", path.display());
                Self::default()
            }
        }
    }

    pub fn parse(text: &str) -> Self {
        let mut names: HashMap<&str, Arc<str>> = HashMap::new();
        let mut by_address = HashMap::new();
        for line in text.lines() {
            // ffffffffc0a01000 t ext4_file_read_iter	[ext4]
            let Some((rest, module)) = line.rsplit_once('[') else {
                continue;
            };
            let Some(module) = module.strip_suffix(']') else {
                continue;
            };
            let Some(address) = rest.split_whitespace().next() else {
                continue;
            };
            let Ok(address) = u64::from_str_radix(address, 16) else {
                continue;
            };
            let module = names
                .entry(module)
                .or_insert_with(|| Arc::from(module))
                .clone();
            by_address.insert(address, module);
        }
        KernelModules { by_address }
    }

    /// The module of the symbol that starts at `symbol_address`, if it is a module's.
    pub fn module_of(&self, symbol_address: u64) -> Option<&Arc<str>> {
        self.by_address.get(&symbol_address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Module and BPF symbols map to their bracketed names; core kernel symbols to none.
    #[test]
    fn parses_module_column() {
        let modules = KernelModules::parse(
            "ffffffff81000000 T _stext\n\
             ffffffffc0a01000 t ext4_file_read_iter\t[ext4]\n\
             ffffffffa0001234 t bpf_prog_6deef7357e7b4530_sample_cpu\t[bpf]\n\
             garbage line [\n",
        );
        assert_eq!(
            modules.module_of(0xffffffffc0a01000).map(|m| &**m),
            Some("ext4")
        );
        assert_eq!(
            modules.module_of(0xffffffffa0001234).map(|m| &**m),
            Some("bpf")
        );
        assert_eq!(modules.module_of(0xffffffff81000000), None);
    }
}
