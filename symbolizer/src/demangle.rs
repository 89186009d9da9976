//! Demangling of symbol names, done here rather than by blazesym so that C++ names can be shortened.
//!
//! A C++ symbol demangles to its return type, qualified name, parameter list and clone suffixes
//! (`v8::internal::MaybeHandle<..> v8::internal::JsonParser<unsigned char>::ParseJsonValue<false>(..)
//! [clone .isra.0]`): kilobytes per frame in a real program, and a function split into several frames
//! that differ only in how the compiler cloned it. By default a frame is the qualified name with its
//! template arguments only, as perf shows it; [`NameStyle::Full`] keeps everything. Rust names (legacy
//! and v0 mangling) lose their hash either way. Anything that is not a mangled name is left as it is.

use std::borrow::Cow;

/// How much of a demangled C++ name to keep.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NameStyle {
    /// Qualified name with template arguments; no return type, parameters or `[clone ..]` suffixes.
    #[default]
    Short,
    /// Everything the mangled name says.
    Full,
}

/// The demangled form of `name`, or `name` itself when it is not a mangled Rust or C++ name.
pub fn demangle(name: &str, style: NameStyle) -> Cow<'_, str> {
    // Rust first: legacy Rust symbols are valid Itanium C++ symbols too, and only rustc-demangle
    // knows to drop their hash. It refuses C++ names (they do not end in `E` plus a hash).
    if let Ok(rust) = rustc_demangle::try_demangle(name) {
        return Cow::Owned(format!("{rust:#}"));
    }
    if !name.starts_with("_Z") {
        return Cow::Borrowed(name);
    }
    let Ok(symbol) = cpp_demangle::Symbol::new(name) else {
        return Cow::Borrowed(name);
    };
    let options = match style {
        NameStyle::Short => cpp_demangle::DemangleOptions::new()
            .no_params()
            .no_return_type(),
        NameStyle::Full => cpp_demangle::DemangleOptions::new(),
    };
    match symbol.demangle_with_options(&options) {
        Ok(demangled) if !demangled.is_empty() => Cow::Owned(demangled),
        _ => Cow::Borrowed(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A member function template of a class template, returning a class template, cloned by GCC's
    /// IPA-SRA: by default only the qualified name with its template arguments is left.
    #[test]
    fn shortens_cpp_names() {
        // v8::internal::MaybeHandle<v8::internal::Object>
        // v8::internal::JsonParser<unsigned char>::ParseJsonValue<false>(v8::internal::Handle<v8::internal::String>) [clone .isra.0]
        let mangled = "_ZN2v88internal10JsonParserIhE14ParseJsonValueILb0EEENS0_11MaybeHandleINS0_6ObjectEEENS0_6HandleINS0_6StringEEE.isra.0";
        assert_eq!(
            demangle(mangled, NameStyle::Short),
            "v8::internal::JsonParser<unsigned char>::ParseJsonValue<false>"
        );
        let full = demangle(mangled, NameStyle::Full);
        assert!(
            full.starts_with("v8::internal::MaybeHandle<v8::internal::Object> v8::internal::JsonParser<unsigned char>::ParseJsonValue<false>(v8::internal::Handle<v8::internal::String>)"),
            "{full}"
        );
        assert!(full.ends_with("[clone .isra.0]"), "{full}");
        // Two clones of one function are one frame.
        assert_eq!(
            demangle("_ZN14emberprof_demo7ChurnerImE5churnEm", NameStyle::Short),
            demangle(
                "_ZN14emberprof_demo7ChurnerImE5churnEm.constprop.0",
                NameStyle::Short
            )
        );
        // Not taken for a legacy Rust name although it starts the same way.
        assert_eq!(
            demangle("_ZN4node5StartEiPPc", NameStyle::Short),
            "node::Start"
        );
        assert_eq!(
            demangle("_ZN4node5StartEiPPc", NameStyle::Full),
            "node::Start(int, char**)"
        );
        assert_eq!(
            demangle("_ZN14emberprof_demo7ChurnerImE5churnEm", NameStyle::Full),
            "emberprof_demo::Churner<unsigned long>::churn(unsigned long)"
        );
    }

    /// Rust names lose their hash (legacy `17h..E`, v0 `[..]` disambiguators) in both styles.
    #[test]
    fn rust_names_without_hash() {
        for style in [NameStyle::Short, NameStyle::Full] {
            assert_eq!(
                demangle("_ZN11rust_inline8hot_loop17h0123456789abcdefE", style),
                "rust_inline::hot_loop"
            );
            assert_eq!(
                demangle("_RNvCs1234_11rust_inline8hot_loop", style),
                "rust_inline::hot_loop"
            );
        }
    }

    /// C names, already demangled names and garbage stay as they are.
    #[test]
    fn leaves_other_names_alone() {
        for name in [
            "main",
            "burn_a.cold",
            "std::vec::Vec<T>::push",
            "_Zgarbage",
            "",
        ] {
            assert_eq!(demangle(name, NameStyle::Short), name);
        }
    }
}
