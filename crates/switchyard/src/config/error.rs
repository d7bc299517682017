//! Configuration errors: one [`ConfigError`] per mistake, each naming the file, the line, the
//! column and the field path, so that `switchyard check` and a refused reload tell the operator
//! exactly where to look. The walker collects all of them into one [`ConfigErrors`].

use std::fmt;
use std::path::PathBuf;

/// One mistake in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (as given to the loader).
    pub file: PathBuf,
    /// 1-based line (0 when the mistake has no position, e.g. the file cannot be read).
    pub line: usize,
    /// 1-based column in characters (0 when there is no position).
    pub column: usize,
    /// The field path, like `listener[1].route[0].split[1].cluster` (empty for the whole file).
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it, e.g. `did you mean "api-v2"?`.
    pub hint: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        write!(f, ": ")?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        write!(f, "{}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Every mistake found in one configuration, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The errors, in file order.
    pub fn errors(&self) -> &[ConfigError] {
        &self.0
    }

    /// How many errors there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none (a loader never returns an empty set).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.0 {
            writeln!(f, "{e}")?;
        }
        let n = self.0.len();
        write!(f, "{n} error{}", if n == 1 { "" } else { "s" })
    }
}

impl std::error::Error for ConfigErrors {}

/// Rendering the resolved model failed (a serializer limitation, never the user's mistake).
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The TOML serializer refused the model.
    #[error("cannot render the configuration as TOML: {0}")]
    Toml(#[from] toml::ser::Error),
    /// The JSON serializer refused the model.
    #[error("cannot render the configuration as JSON: {0}")]
    Json(#[from] serde_json::Error),
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample() -> ConfigError {
        ConfigError {
            file: PathBuf::from("switchyard.toml"),
            line: 12,
            column: 11,
            path: "listener[1].route[0].split[1].cluster".into(),
            message: "unknown cluster \"api-v3\"".into(),
            hint: Some("did you mean \"api-v2\"?".into()),
        }
    }

    #[test]
    fn an_error_displays_file_line_column_path_message_and_hint() {
        assert_eq!(
            sample().to_string(),
            "switchyard.toml:12:11: listener[1].route[0].split[1].cluster: unknown cluster \"api-v3\" (did you mean \"api-v2\"?)"
        );
    }

    #[test]
    fn a_set_of_errors_ends_with_a_count() {
        let errs = ConfigErrors(vec![sample(), sample()]);
        let text = errs.to_string();
        assert_eq!(text.lines().count(), 3);
        assert!(text.ends_with("\n2 errors"));
    }
}
