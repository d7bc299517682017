//! The first stage: the file's text parsed into toml's spanned tree ([`DeTable`]), which keeps
//! the byte range of every key and value, so later stages can point at a line and column.
//! A TOML syntax error becomes one [`ConfigError`] with its position; nothing is walked then.

use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::DeTable;

use super::error::ConfigError;

/// Maps byte offsets of one text to 1-based lines and columns.
#[derive(Debug)]
pub(crate) struct Positions<'t> {
    text: &'t str,
    file: PathBuf,
    line_starts: Vec<usize>,
}

impl<'t> Positions<'t> {
    /// Indexes the line starts of `text`.
    pub(crate) fn new(text: &'t str, file: &Path) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Positions {
            text,
            file: file.to_path_buf(),
            line_starts,
        }
    }

    /// The 1-based line and column (in characters) of byte `offset`.
    pub(crate) fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset).max(1);
        let start = self.line_starts[line - 1];
        let column = self
            .text
            .get(start..offset)
            .map(|s| s.chars().count())
            .unwrap_or(offset - start);
        (line, column + 1)
    }

    /// An error at the start of `span`.
    pub(crate) fn error(
        &self,
        span: &Range<usize>,
        path: &str,
        message: String,
        hint: Option<String>,
    ) -> ConfigError {
        let (line, column) = self.line_col(span.start);
        ConfigError {
            file: self.file.clone(),
            line,
            column,
            path: path.to_string(),
            message,
            hint,
        }
    }
}

/// Parses `text` into the spanned tree, or gives the syntax error at its position.
pub(crate) fn parse<'t>(
    text: &'t str,
    positions: &Positions<'_>,
) -> Result<Spanned<DeTable<'t>>, ConfigError> {
    DeTable::parse(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let message = e.message().trim().to_string();
        positions.error(&span, "", format!("TOML syntax error: {message}"), None)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn offsets_map_to_one_based_lines_and_columns() {
        let text = "a = 1\nbé = 2\n\nc";
        let p = Positions::new(text, Path::new("x.toml"));
        assert_eq!(p.line_col(0), (1, 1));
        assert_eq!(p.line_col(6), (2, 1));
        assert_eq!(p.line_col(text.find('=').map(|_| 10).unwrap_or(0)), (2, 4));
        assert_eq!(p.line_col(text.len() - 1), (4, 1));
        assert_eq!(p.line_col(1000), (4, 2));
    }

    #[test]
    fn a_syntax_error_has_a_position() {
        let text = "[admin]\nlisten = \n";
        let p = Positions::new(text, Path::new("x.toml"));
        let e = parse(text, &p).unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(e.message.starts_with("TOML syntax error"), "{e}");
    }
}
