//! Configuration: the TOML file is parsed into a spanned tree ([`raw`]), walked by a validator
//! that collects *every* error (file, line, column, field path, "did you mean"), gated
//! against what this build implements ([`support`]), and resolved into the typed
//! [`model::Config`] with every default of SPEC 3.1 applied.
//!
//! Two stages, as in Sōzu: nothing outside this module sees an unvalidated value, and the
//! runtime never re-checks one. The CLI (`switchyard check`) and the runtime (start, reload)
//! call [`load_file`] / [`load_str`] and, for display, [`render`].

pub mod error;
pub mod model;
mod raw;
pub mod support;
pub mod units;
mod walk;

use std::path::Path;

pub use error::{ConfigError, ConfigErrors, RenderError};
pub use model::Config;

/// How [`render`] prints the resolved model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// TOML, in the configuration's own syntax for durations.
    Toml,
    /// JSON (the shape of `GET /api/v1/config`).
    Json,
}

/// Reads and validates the file at `path`. A reading failure is one error naming the file.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    match std::fs::read_to_string(path) {
        Ok(text) => load_str(&text, path),
        Err(e) => Err(ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            path: String::new(),
            message: format!("cannot read the configuration file: {e}"),
            hint: None,
        }])),
    }
}

/// Validates `text`; `source` names the file in messages, and relative paths inside the
/// configuration (certificates, key files) resolve against its folder.
pub fn load_str(text: &str, source: &Path) -> Result<Config, ConfigErrors> {
    let pos = raw::Positions::new(text, source);
    let tree = raw::parse(text, &pos).map_err(|e| ConfigErrors(vec![e]))?;
    let (config, mut errors) = walk::walk(&tree, &pos, source);
    let gated = support::gate(&tree, &pos, &errors);
    errors.extend(gated);
    if errors.is_empty() {
        Ok(config)
    } else {
        errors.sort_by_key(|e| (e.line, e.column));
        Err(ConfigErrors(errors))
    }
}

/// Prints the resolved model (every default filled in) as TOML or JSON.
pub fn render(config: &Config, format: OutputFormat) -> Result<String, RenderError> {
    Ok(match format {
        OutputFormat::Toml => toml::to_string_pretty(config)?,
        OutputFormat::Json => serde_json::to_string_pretty(config)? + "\n",
    })
}
