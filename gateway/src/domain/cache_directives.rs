//! `RequestDirectives`: the RFC 9111 request directives of a `Cache-Control` header, parsed.

use std::time::Duration;

/// The largest `max-age` the gateway represents: RFC 9111 section 1.2.2 says a recipient
/// of a larger (or overflowing) delta-seconds value must take it as 2^31 seconds.
pub const MAX_DELTA_SECONDS: u32 = 1 << 31;

/// What a client asked of the cache with the request directives of RFC 9111 section 5.2.1.
///
/// Only the four directives the gateway honours are kept; every other directive
/// (`max-stale`, `min-fresh`, `no-transform`, extensions) is ignored, as section 5.2.3
/// requires of unrecognised ones. The default (no header) asks nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestDirectives {
    /// `no-cache` (section 5.2.1.4): no stored prediction may answer; compute, store, answer.
    pub no_cache: bool,
    /// `no-store` (section 5.2.1.5): the prediction computed for this request is not written.
    pub no_store: bool,
    /// `max-age=N` (section 5.2.1.1), N in seconds: a stored prediction older than N seconds
    /// does not answer. Repeated, the smallest wins (the most restrictive, section 4.2.1);
    /// without a valid delta-seconds argument it is 0 (invalid freshness information makes a
    /// response stale, section 4.2.1); above [`MAX_DELTA_SECONDS`] it is that.
    pub max_age: Option<u32>,
    /// `only-if-cached` (section 5.2.1.7): answer from the store or with 504, never the model.
    pub only_if_cached: bool,
}

impl RequestDirectives {
    /// The directives of every `Cache-Control` field line of a request, in order.
    ///
    /// Field lines are one comma-separated list (RFC 9110 section 5.3); directive names
    /// are case-insensitive and arguments may be tokens or quoted strings (RFC 9111
    /// section 5.2); empty list elements are skipped (RFC 9110 section 5.6.1). A
    /// malformed element is skipped up to the next comma outside a quoted string.
    pub fn parse<'a>(field_lines: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut directives = Self::default();
        for line in field_lines {
            let mut list = ListParser { input: line, at: 0 };
            while let Some(element) = list.next_element() {
                if let Some((name, argument)) = element {
                    directives.apply(&name, argument.as_deref());
                }
            }
        }
        directives
    }

    fn apply(&mut self, name: &str, argument: Option<&[u8]>) {
        match name {
            "no-cache" => self.no_cache = true,
            "no-store" => self.no_store = true,
            "only-if-cached" => self.only_if_cached = true,
            "max-age" => {
                let seconds = argument.and_then(delta_seconds).unwrap_or(0);
                self.max_age = Some(self.max_age.map_or(seconds, |other| other.min(seconds)));
            }
            _ => {}
        }
    }

    /// Whether a stored prediction of this `age` may answer the request (`max-age` only;
    /// `no-cache` is decided before any lookup). RFC 9111 section 5.2.1.1: the client
    /// accepts an age less than or equal to N seconds.
    pub fn accepts_age(&self, age: Duration) -> bool {
        self.max_age
            .is_none_or(|seconds| age <= Duration::from_secs(u64::from(seconds)))
    }

    /// The directives that applied, for the `ml.cache.directive` span and metric attribute:
    /// their names joined by `,` in a fixed order, or `none`. Never the `max-age` value, so
    /// the attribute has at most 16 values.
    pub fn attribute(&self) -> &'static str {
        const NAMES: [&str; 16] = [
            "none",
            "no-cache",
            "no-store",
            "no-cache,no-store",
            "max-age",
            "no-cache,max-age",
            "no-store,max-age",
            "no-cache,no-store,max-age",
            "only-if-cached",
            "no-cache,only-if-cached",
            "no-store,only-if-cached",
            "no-cache,no-store,only-if-cached",
            "max-age,only-if-cached",
            "no-cache,max-age,only-if-cached",
            "no-store,max-age,only-if-cached",
            "no-cache,no-store,max-age,only-if-cached",
        ];
        let index = usize::from(self.no_cache)
            | usize::from(self.no_store) << 1
            | usize::from(self.max_age.is_some()) << 2
            | usize::from(self.only_if_cached) << 3;
        NAMES[index]
    }
}

/// `delta-seconds = 1*DIGIT` (RFC 9111 section 1.2.2), saturating at [`MAX_DELTA_SECONDS`].
fn delta_seconds(argument: &[u8]) -> Option<u32> {
    if argument.is_empty() || !argument.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = argument.iter().try_fold(0u32, |value, digit| {
        value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u32::from(digit - b'0')))
    });
    Some(value.map_or(MAX_DELTA_SECONDS, |v| v.min(MAX_DELTA_SECONDS)))
}

/// A cursor over one field line: `#cache-directive` with
/// `cache-directive = token [ "=" ( token / quoted-string ) ]`.
struct ListParser<'a> {
    input: &'a [u8],
    at: usize,
}

/// One list element: `Some((lower-case name, argument))`, or `None` when malformed.
type Element = Option<(String, Option<Vec<u8>>)>;

impl ListParser<'_> {
    /// The next element, or `None` at the end of the line.
    fn next_element(&mut self) -> Option<Element> {
        // Empty elements and the whitespace around elements are allowed.
        while self.peek().is_some_and(|b| b == b',' || is_ows(b)) {
            self.at += 1;
        }
        self.peek()?;
        let element = self.element();
        self.skip_ows();
        if element.is_some() && self.peek().is_none_or(|b| b == b',') {
            return Some(element);
        }
        self.skip_to_next_element();
        Some(None)
    }

    fn element(&mut self) -> Element {
        let name = self.token()?.to_ascii_lowercase();
        if self.peek() != Some(b'=') {
            return Some((name, None));
        }
        self.at += 1;
        let argument = if self.peek() == Some(b'"') {
            self.quoted_string()?
        } else {
            // `max-age=` has an (empty, invalid) argument rather than none: it still counts.
            self.token().unwrap_or_default().into_bytes()
        };
        Some((name, Some(argument)))
    }

    fn token(&mut self) -> Option<String> {
        let start = self.at;
        while self.peek().is_some_and(is_tchar) {
            self.at += 1;
        }
        (self.at > start).then(|| String::from_utf8_lossy(&self.input[start..self.at]).into())
    }

    /// `quoted-string` (RFC 9110 section 5.6.4): the unescaped content, `None` if unterminated.
    fn quoted_string(&mut self) -> Option<Vec<u8>> {
        self.at += 1;
        let mut content = Vec::new();
        loop {
            match self.peek()? {
                b'"' => {
                    self.at += 1;
                    return Some(content);
                }
                b'\\' => {
                    self.at += 1;
                    content.push(self.peek()?);
                }
                byte => content.push(byte),
            }
            self.at += 1;
        }
    }

    /// Past the next comma that is not inside a quoted string (or to the end).
    fn skip_to_next_element(&mut self) {
        let mut quoted = false;
        while let Some(byte) = self.peek() {
            self.at += 1;
            match byte {
                b'\\' if quoted => self.at += 1,
                b'"' => quoted = !quoted,
                b',' if !quoted => return,
                _ => {}
            }
        }
    }

    fn skip_ows(&mut self) {
        while self.peek().is_some_and(is_ows) {
            self.at += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.at).copied()
    }
}

fn is_ows(byte: u8) -> bool {
    byte == b' ' || byte == b'\t'
}

/// `tchar` of RFC 9110 section 5.6.2.
fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(lines: &[&str]) -> RequestDirectives {
        RequestDirectives::parse(lines.iter().map(|line| line.as_bytes()))
    }

    #[test]
    fn no_header_asks_nothing() {
        assert_eq!(parse(&[]), RequestDirectives::default());
        assert_eq!(parse(&[]).attribute(), "none");
    }

    #[test]
    fn each_directive_alone_is_recognised() {
        let cases = [
            (
                "no-cache",
                RequestDirectives {
                    no_cache: true,
                    ..Default::default()
                },
            ),
            (
                "no-store",
                RequestDirectives {
                    no_store: true,
                    ..Default::default()
                },
            ),
            (
                "max-age=60",
                RequestDirectives {
                    max_age: Some(60),
                    ..Default::default()
                },
            ),
            (
                "only-if-cached",
                RequestDirectives {
                    only_if_cached: true,
                    ..Default::default()
                },
            ),
        ];
        for (line, expected) in cases {
            assert_eq!(parse(&[line]), expected, "{line}");
        }
    }

    #[test]
    fn directive_names_are_case_insensitive() {
        // RFC 9111 section 5.2: tokens compared case-insensitively.
        let directives = parse(&["No-Cache, NO-STORE, Max-Age=5, Only-If-Cached"]);
        assert!(directives.no_cache && directives.no_store && directives.only_if_cached);
        assert_eq!(directives.max_age, Some(5));
    }

    #[test]
    fn several_field_lines_are_one_list() {
        // RFC 9110 section 5.3: field lines combine into one comma-separated list.
        let directives = parse(&["no-store", "max-age=30"]);
        assert!(directives.no_store);
        assert_eq!(directives.max_age, Some(30));
    }

    #[test]
    fn unknown_directives_and_empty_elements_are_ignored() {
        // RFC 9111 section 5.2.3 (unknown directives), RFC 9110 section 5.6.1 (empty elements).
        let directives = parse(&[", ,max-stale=10, foo=\"a, no-cache\",, min-fresh=3 ,no-store"]);
        assert_eq!(
            directives,
            RequestDirectives {
                no_store: true,
                ..Default::default()
            }
        );
    }

    #[test]
    fn a_quoted_max_age_argument_is_accepted() {
        // RFC 9111 section 5.2: recipients ought to accept both argument forms.
        assert_eq!(parse(&["max-age=\"42\""]).max_age, Some(42));
    }

    #[test]
    fn a_repeated_max_age_keeps_the_smallest() {
        // RFC 9111 section 4.2.1: the most restrictive directive is honoured.
        assert_eq!(
            parse(&["max-age=60, max-age=10", "max-age=30"]).max_age,
            Some(10)
        );
    }

    #[test]
    fn an_invalid_max_age_counts_as_zero() {
        // RFC 9111 section 4.2.1: invalid freshness information is treated as stale.
        for line in [
            "max-age",
            "max-age=",
            "max-age=abc",
            "max-age=-1",
            "max-age=1.5",
        ] {
            assert_eq!(parse(&[line]).max_age, Some(0), "{line}");
        }
    }

    #[test]
    fn a_huge_max_age_saturates_at_two_to_the_31() {
        // RFC 9111 section 1.2.2.
        assert_eq!(
            parse(&["max-age=99999999999999999999"]).max_age,
            Some(MAX_DELTA_SECONDS)
        );
        assert_eq!(
            parse(&["max-age=4294967295"]).max_age,
            Some(MAX_DELTA_SECONDS)
        );
    }

    #[test]
    fn a_malformed_element_is_skipped_and_the_next_one_read() {
        let cases = [
            ("space before '='", "max-age =5, no-store"),
            ("garbage after a directive", "no-cache x, no-store"),
            ("a separator as name", "=5, no-store"),
            ("an unterminated quoted string", "max-age=\"5, no-store"),
        ];
        for (description, line) in cases {
            let directives = parse(&[line]);
            assert!(!directives.no_cache, "{description}");
            assert_eq!(directives.max_age, None, "{description}");
            assert_eq!(directives.no_store, !line.contains("\"5"), "{description}");
        }
    }

    #[test]
    fn a_no_cache_argument_does_not_change_its_meaning() {
        assert!(parse(&["no-cache=\"x\""]).no_cache);
    }

    #[test]
    fn max_age_accepts_ages_up_to_and_including_n_seconds() {
        let directives = parse(&["max-age=10"]);
        assert!(directives.accepts_age(Duration::from_secs(10)));
        assert!(!directives.accepts_age(Duration::from_millis(10_001)));
        assert!(RequestDirectives::default().accepts_age(Duration::from_secs(u64::MAX)));
    }

    #[test]
    fn the_attribute_names_the_directives_without_values() {
        assert_eq!(
            parse(&["max-age=7, no-cache"]).attribute(),
            "no-cache,max-age"
        );
        assert_eq!(
            parse(&["only-if-cached, no-store"]).attribute(),
            "no-store,only-if-cached"
        );
    }
}
