//! `DataId`: the identifier of one row of the feature store, validated at the edge.

use std::fmt;

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

/// The identifier of a data row whose prediction is asked for.
///
/// Only ids that could name a row are accepted: 1 to [`DataId::MAX_LEN`] bytes
/// of ASCII letters, digits, `-`, `_`, `.` and `:`, not made of dots alone.
/// The store never puts it in a request path as is (documents are addressed by
/// a hash, see `store::elasticsearch`), so these rules are a second line of
/// defence and a clear 400 for clients, not the only protection.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DataId(String);

/// Why a string is not a [`DataId`]; the message is safe to show a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataIdError {
    /// The id is the empty string.
    #[error("data_id must not be empty")]
    Empty,
    /// The id is longer than [`DataId::MAX_LEN`] bytes.
    #[error("data_id is {0} bytes long; the limit is {max}", max = DataId::MAX_LEN)]
    TooLong(usize),
    /// The id holds a character outside the allowed set.
    #[error("data_id may only hold ASCII letters, digits, '-', '_', '.' and ':'")]
    ForbiddenCharacter,
    /// The id is `.`, `..` or another run of dots (path-like).
    #[error("data_id must not consist of dots only")]
    DotsOnly,
}

impl DataId {
    /// Longest accepted id in bytes: far above any row id of the feature store,
    /// low enough to keep keys, logs and span attributes small.
    pub const MAX_LEN: usize = 128;

    /// Validates `raw` into a `DataId`.
    pub fn parse(raw: &str) -> Result<Self, DataIdError> {
        if raw.is_empty() {
            return Err(DataIdError::Empty);
        }
        if raw.len() > Self::MAX_LEN {
            return Err(DataIdError::TooLong(raw.len()));
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        {
            return Err(DataIdError::ForbiddenCharacter);
        }
        if raw.bytes().all(|b| b == b'.') {
            return Err(DataIdError::DotsOnly);
        }
        Ok(Self(raw.to_owned()))
    }

    /// The rules of [`DataId::parse`] as a regular expression, for the OpenAPI document
    /// (all but "not dots only", which a pattern without look-ahead cannot say).
    const PATTERN: &str = "^[A-Za-z0-9_.:-]+$";

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DataId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for DataId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Written by hand rather than derived so the schema states the limits `parse` enforces.
impl utoipa::PartialSchema for DataId {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(Self::MAX_LEN))
            .pattern(Some(Self::PATTERN))
            .description(Some(
                "A row id: ASCII letters, digits, '-', '_', '.', ':'; not dots only",
            ))
            .into()
    }
}

impl utoipa::ToSchema for DataId {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_row_id_is_accepted() {
        assert_eq!(DataId::parse("row-00042").unwrap().as_str(), "row-00042");
    }

    #[test]
    fn digits_colons_dots_and_underscores_are_accepted() {
        for id in ["42", "a:b", "v1.2", "_search", "x_y"] {
            assert!(DataId::parse(id).is_ok(), "{id} should be accepted");
        }
    }

    #[test]
    fn the_empty_string_is_rejected() {
        assert_eq!(DataId::parse(""), Err(DataIdError::Empty));
    }

    #[test]
    fn an_id_at_the_length_limit_is_accepted() {
        assert!(DataId::parse(&"a".repeat(DataId::MAX_LEN)).is_ok());
    }

    #[test]
    fn an_id_over_the_length_limit_is_rejected() {
        let id = "a".repeat(10_000);
        assert_eq!(DataId::parse(&id), Err(DataIdError::TooLong(10_000)));
    }

    #[test]
    fn path_and_wildcard_characters_are_rejected() {
        let cases = [
            ("slash", "a/b"),
            ("percent-encoded slash", "%2F"),
            ("backslash", "a\\b"),
            ("asterisk", "*"),
            ("question mark", "a?b"),
            ("hash", "a#b"),
            ("space", "a b"),
            ("comma (multi-index syntax)", "a,b"),
            ("newline", "a\nb"),
            ("non-ASCII", "é"),
            ("NUL", "a\0b"),
        ];
        for (description, id) in cases {
            assert_eq!(
                DataId::parse(id),
                Err(DataIdError::ForbiddenCharacter),
                "{description}"
            );
        }
    }

    #[test]
    fn ids_made_of_dots_only_are_rejected() {
        for id in [".", "..", "..."] {
            assert_eq!(DataId::parse(id), Err(DataIdError::DotsOnly), "{id}");
        }
    }

    #[test]
    fn dots_inside_an_id_are_accepted() {
        assert!(DataId::parse("a..b").is_ok());
    }
}
