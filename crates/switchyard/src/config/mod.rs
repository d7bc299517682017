//! Configuration: the TOML file is parsed into a spanned tree, walked by a validator that
//! collects *every* error (file, line, column, field path, "did you mean"), and resolved into
//! the typed [`model::Config`] with every default of SPEC 3.1 applied.
//!
//! Two stages, as in Sōzu: nothing outside this module sees an unvalidated value, and the
//! runtime never re-checks one.

pub mod model;
pub mod units;

pub use model::Config;
