//! Reads the W3C trace context and baggage request headers as the specifications say.

use std::borrow::Cow;
use std::collections::HashSet;

use axum::http::HeaderMap;
use opentelemetry::propagation::Extractor;

/// `traceparent` (W3C Trace Context).
const TRACEPARENT: &str = "traceparent";
/// `tracestate` (W3C Trace Context).
const TRACESTATE: &str = "tracestate";
/// `baggage` (W3C Baggage).
const BAGGAGE: &str = "baggage";
/// Length of a version-00 `traceparent`: `vv-<32 hex>-<16 hex>-ff`.
const TRACEPARENT_LENGTH: usize = 55;
/// Most list members a `tracestate` may hold; beyond it the whole header is discarded.
const TRACESTATE_MAX_MEMBERS: usize = 32;

/// An [`Extractor`] over request headers that yields the W3C headers combined and
/// validated (as below); other headers are read as they are.
///
/// Reads the W3C `traceparent`, `tracestate` and `baggage` request headers as the W3C
/// Trace Context and Baggage specifications say, before the SDK propagators see them.
///
/// The SDK's `HeaderExtractor` reads only the first of repeated header fields, and its
/// parsers accept forms the specifications reject (short or signed hex ids, duplicate
/// tracestate keys, more than 32 list members, baggage values cut at `=`). This
/// extractor combines repeated fields and hands the propagators only valid values.
pub struct W3cExtractor {
    traceparent: Option<String>,
    tracestate: Option<String>,
    baggage: Option<String>,
}

impl W3cExtractor {
    /// Reads the three headers from `headers`.
    pub fn new(headers: &HeaderMap) -> Self {
        let traceparent = single_field(headers, TRACEPARENT).and_then(traceparent);
        // The tracestate of an invalid traceparent means nothing: drop it with it.
        let tracestate = traceparent
            .as_ref()
            .and(combined(headers, TRACESTATE))
            .and_then(|value| tracestate(&value));
        let baggage = combined(headers, BAGGAGE).and_then(|value| baggage(&value));
        Self {
            traceparent,
            tracestate,
            baggage,
        }
    }
}

impl Extractor for W3cExtractor {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => self.traceparent.as_deref(),
            TRACESTATE => self.tracestate.as_deref(),
            BAGGAGE => self.baggage.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        [
            (TRACEPARENT, &self.traceparent),
            (TRACESTATE, &self.tracestate),
            (BAGGAGE, &self.baggage),
        ]
        .into_iter()
        .filter_map(|(key, value)| value.as_ref().map(|_| key))
        .collect()
    }
}

/// The value of a header that must appear once: a repeated `traceparent` is invalid
/// (the W3C test suite expects a new trace then).
fn single_field<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    first.to_str().ok()
}

/// Every field of a list-valued header joined with `,`, as RFC 9110 §5.3 combines them.
fn combined(headers: &HeaderMap, name: &str) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// A `traceparent` the SDK can take: version-00 exactly, a later version cut to its
/// version-00 prefix (which the specification says to read); anything else is `None`.
fn traceparent(value: &str) -> Option<String> {
    let value = value.trim_matches([' ', '\t']);
    let bytes = value.as_bytes();
    if bytes.len() < TRACEPARENT_LENGTH {
        return None;
    }
    let lower_hex = |range: std::ops::Range<usize>| {
        bytes[range]
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    };
    let dashes = [2, 35, 52].iter().all(|&i| bytes[i] == b'-');
    if !(dashes && lower_hex(0..2) && lower_hex(3..35) && lower_hex(36..52) && lower_hex(53..55)) {
        return None;
    }
    match &value[..2] {
        "ff" => None,
        "00" if bytes.len() != TRACEPARENT_LENGTH => None,
        // A later version may append fields, always after a dash.
        _ if bytes.len() > TRACEPARENT_LENGTH && bytes[TRACEPARENT_LENGTH] != b'-' => None,
        // The SDK takes only version 00 with exactly four fields as such.
        _ => Some(format!("00{}", &value[2..TRACEPARENT_LENGTH])),
    }
}

/// A `tracestate` list, or `None` when the specification says to discard it: a member
/// that is not `key=value`, an invalid key or value, a repeated key, more than 32 members.
/// Empty members (which combining repeated fields produces) are allowed and dropped.
fn tracestate(value: &str) -> Option<String> {
    let mut keys = HashSet::new();
    let mut members = Vec::new();
    for member in value.split(',') {
        let member = member.trim_matches([' ', '\t']);
        if member.is_empty() {
            continue;
        }
        let (key, value) = member.split_once('=')?;
        if !tracestate_key(key) || !tracestate_value(value) || !keys.insert(key) {
            return None;
        }
        members.push(member);
    }
    if members.is_empty() || members.len() > TRACESTATE_MAX_MEMBERS {
        return None;
    }
    Some(members.join(","))
}

/// `simple-key` (starts with a letter) or `tenant-id@system-id` (the tenant may start
/// with a digit, the system may not), W3C Trace Context §3.3.1.3.1.
fn tracestate_key(key: &str) -> bool {
    let part = |text: &str, max: usize, first_alpha_only: bool| {
        let bytes = text.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= max
            && (bytes[0].is_ascii_lowercase() || (!first_alpha_only && bytes[0].is_ascii_digit()))
            && bytes.iter().all(|b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b'_' | b'-' | b'*' | b'/')
            })
    };
    match key.split_once('@') {
        None => part(key, 256, true),
        Some((tenant, system)) => part(tenant, 241, false) && part(system, 14, true),
    }
}

/// Up to 256 printable ASCII characters but `,` and `=` (a trailing space is OWS,
/// trimmed with the member).
fn tracestate_value(value: &str) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 256
        && bytes
            .iter()
            .all(|&b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=')
}

/// The valid members of a `baggage` list, re-encoded so the SDK's parser reads them
/// whole (it cuts a value at a second `=`, which the specification allows in values).
/// Invalid members are dropped one by one: one bad entry does not cost the others.
fn baggage(value: &str) -> Option<String> {
    let members: Vec<String> = value.split(',').filter_map(baggage_member).collect();
    (!members.is_empty()).then(|| members.join(","))
}

fn baggage_member(member: &str) -> Option<String> {
    let mut parts = member.split(';');
    let (key, value) = parts.next()?.split_once('=')?;
    let (key, value) = (
        key.trim_matches([' ', '\t']),
        value.trim_matches([' ', '\t']),
    );
    if !is_token(key) || !value.bytes().all(is_baggage_octet) {
        return None;
    }
    let value: Cow<'_, str> = if value.contains('=') {
        value.replace('=', "%3D").into()
    } else {
        value.into()
    };
    let mut encoded = format!("{key}={value}");
    for property in parts {
        encoded.push(';');
        encoded.push_str(property.trim_matches([' ', '\t']));
    }
    Some(encoded)
}

/// An RFC 9110 token: the baggage key grammar.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

/// `baggage-octet` of W3C Baggage: printable ASCII but `"`, `,`, `;`, `\` and space.
fn is_baggage_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2b | 0x2d..=0x3a | 0x3c..=0x5b | 0x5d..=0x7e)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    const VALID: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn extract(pairs: &[(&'static str, &str)]) -> W3cExtractor {
        W3cExtractor::new(&headers(pairs))
    }

    #[test]
    fn traceparent_forms_the_specification_rejects_are_not_read() {
        let cases = [
            ("uppercase hex", VALID.to_uppercase()),
            ("short trace id", VALID.replacen("0af7", "0af", 1)),
            ("version ff", VALID.replacen("00", "ff", 1)),
            ("version 00 with a trailing field", format!("{VALID}-00")),
            ("a signed hex field", VALID.replace("-01", "+1")),
            (
                "a later version with no dash before its extra field",
                format!("01{}x", &VALID[2..]),
            ),
        ];
        for (description, value) in cases {
            assert_eq!(traceparent(&value), None, "{description}: {value}");
        }
    }

    #[test]
    fn a_later_traceparent_version_is_read_as_its_version_00_prefix() {
        assert_eq!(
            traceparent(&format!("cc{}-what-the-future-holds", &VALID[2..])).as_deref(),
            Some(VALID)
        );
    }

    #[test]
    fn a_repeated_traceparent_is_invalid_and_drops_the_tracestate_too() {
        let extractor = extract(&[
            ("traceparent", VALID),
            ("traceparent", VALID),
            ("tracestate", "a=1"),
        ]);
        assert_eq!(extractor.get(TRACEPARENT), None);
        assert_eq!(extractor.get(TRACESTATE), None);
    }

    #[test]
    fn repeated_tracestate_and_baggage_fields_are_combined() {
        let extractor = extract(&[
            ("traceparent", VALID),
            ("tracestate", "a=1"),
            ("tracestate", "b=2"),
            ("baggage", "ml.a=1"),
            ("baggage", "ml.b=2"),
        ]);
        assert_eq!(extractor.get(TRACESTATE), Some("a=1,b=2"));
        assert_eq!(extractor.get(BAGGAGE), Some("ml.a=1,ml.b=2"));
    }

    #[test]
    fn tracestate_forms_the_specification_rejects_discard_the_whole_header() {
        let too_many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        let cases = [
            ("a repeated key", "a=1,a=2".to_owned()),
            ("a member without =", "a=1,b".to_owned()),
            ("an uppercase key", "A=1".to_owned()),
            ("a simple key starting with a digit", "1a=1".to_owned()),
            ("a value with a control character", "a=x\u{1}y".to_owned()),
            ("a value with an equals sign", "a=x=y".to_owned()),
            ("33 members", too_many.join(",")),
            (
                "a system id over 14 characters",
                "t@abcdefghijklmno=1".to_owned(),
            ),
        ];
        for (description, value) in cases {
            assert_eq!(tracestate(&value), None, "{description}");
        }
    }

    #[test]
    fn empty_tracestate_members_and_whitespace_are_allowed() {
        assert_eq!(
            tracestate(" a=1 ,, \t,vendor@sys=x ").as_deref(),
            Some("a=1,vendor@sys=x")
        );
    }

    #[test]
    fn invalid_baggage_members_are_dropped_one_by_one() {
        assert_eq!(
            baggage("ml.a=1,bad key=2,,ml.c=\"q\",ml.d=4;prop=1, ml.e = 5 ").as_deref(),
            Some("ml.a=1,ml.d=4;prop=1,ml.e=5")
        );
    }

    #[test]
    fn an_equals_sign_in_a_baggage_value_survives_the_sdk_parser() {
        assert_eq!(baggage("ml.q=a=b").as_deref(), Some("ml.q=a%3Db"));
    }
}
