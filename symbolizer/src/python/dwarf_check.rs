//! Checks every [`super::layout`] table entry against the DWARF of the pyenv builds.
