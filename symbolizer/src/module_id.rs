//! The id of a module in the module table: what the table, its descriptor budget and everything
//! that names addresses refer to modules by (its own file so that the budget's books need nothing
//! else of the table).

/// Index of a module in its [`crate::modules::ModuleTable`]; never reused within a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModuleId(pub u32);
