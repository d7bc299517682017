//! The few facts Switchyard reads from an X.509 certificate: its expiry (`notAfter`, for
//! `tls_certificate_expiry_timestamp_seconds`), its subject (for `x-client-cert-subject`)
//! and its subject alternative names (SNI selection and `x-client-cert-san`).
//!
//! rustls verifies certificates but does not expose their fields, and a general X.509
//! crate (with its ASN.1 and date stacks) would cost more to build than these three fields
//! are worth, so this is a small DER walker. It never trusts a length: every read is
//! bounds-checked and any malformed input is an [`X509Error`], never a panic. Signatures
//! are not checked here; rustls does that (and a certificate we serve is our own).

/// A certificate's DER could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed certificate: {0}")]
pub struct X509Error(&'static str);

/// What Switchyard uses of a certificate.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CertInfo {
    /// `notAfter` as Unix seconds.
    pub not_after: i64,
    /// The subject, as `CN=...,O=...` in encoded order.
    pub subject: String,
    /// The subject's common name, if any.
    pub common_name: Option<String>,
    /// DNS names of the subject alternative names, lowercased.
    pub dns_names: Vec<String>,
    /// Every subject alternative name, as `DNS:..`, `IP:..`, `URI:..` or `email:..`.
    pub san: Vec<String>,
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const INTEGER: u8 = 0x02;
const OID: u8 = 0x06;
const OCTET_STRING: u8 = 0x04;
const BOOLEAN: u8 = 0x01;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
/// `[0] EXPLICIT` (the TBS version).
const CONTEXT_0: u8 = 0xa0;
/// `[3] EXPLICIT` (the TBS extensions).
const CONTEXT_3: u8 = 0xa3;
/// id-ce-subjectAltName, 2.5.29.17.
const OID_SAN: &[u8] = &[0x55, 0x1d, 0x11];

/// Reads one TLV: (tag, contents, rest).
fn tlv(input: &[u8]) -> Result<(u8, &[u8], &[u8]), X509Error> {
    let (&tag, rest) = input.split_first().ok_or(X509Error("truncated tag"))?;
    let (&first, rest) = rest.split_first().ok_or(X509Error("truncated length"))?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return Err(X509Error("unsupported length"));
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return Err(X509Error("length past the end"));
    }
    let (contents, rest) = rest.split_at(len);
    Ok((tag, contents, rest))
}

/// Reads one TLV that must have `tag`.
fn expect<'a>(
    input: &'a [u8],
    tag: u8,
    what: &'static str,
) -> Result<(&'a [u8], &'a [u8]), X509Error> {
    let (found, contents, rest) = tlv(input)?;
    if found != tag {
        return Err(X509Error(what));
    }
    Ok((contents, rest))
}

/// Parses the fields of [`CertInfo`] from one DER certificate.
pub fn parse(der: &[u8]) -> Result<CertInfo, X509Error> {
    let (certificate, _) = expect(der, SEQUENCE, "certificate is not a SEQUENCE")?;
    let (tbs, _) = expect(certificate, SEQUENCE, "tbsCertificate is not a SEQUENCE")?;
    let mut rest = tbs;
    let (tag, _, after) = tlv(rest)?;
    if tag == CONTEXT_0 {
        rest = after;
    }
    let (_, rest) = expect(rest, INTEGER, "serialNumber")?;
    let (_, rest) = expect(rest, SEQUENCE, "signature algorithm")?;
    let (_, rest) = expect(rest, SEQUENCE, "issuer")?;
    let (validity, rest) = expect(rest, SEQUENCE, "validity")?;
    let (subject, mut rest) = expect(rest, SEQUENCE, "subject")?;
    let (_, _, after_before) = tlv(validity)?;
    let (time_tag, not_after, _) = tlv(after_before)?;
    let not_after = parse_time(time_tag, not_after)?;
    let (subject, common_name) = format_name(subject)?;
    let mut info = CertInfo {
        not_after,
        subject,
        common_name,
        ..CertInfo::default()
    };
    // subjectPublicKeyInfo, then the optional unique ids and [3] extensions.
    while !rest.is_empty() {
        let (tag, contents, after) = tlv(rest)?;
        rest = after;
        if tag == CONTEXT_3 {
            read_extensions(contents, &mut info)?;
        }
    }
    Ok(info)
}

fn read_extensions(explicit: &[u8], info: &mut CertInfo) -> Result<(), X509Error> {
    let (mut list, _) = expect(explicit, SEQUENCE, "extensions")?;
    while !list.is_empty() {
        let (extension, after) = expect(list, SEQUENCE, "extension")?;
        list = after;
        let (oid, rest) = expect(extension, OID, "extension id")?;
        let (mut tag, mut contents, mut rest) = tlv(rest)?;
        if tag == BOOLEAN {
            (tag, contents, rest) = tlv(rest)?;
        }
        let _ = rest;
        if tag != OCTET_STRING {
            return Err(X509Error("extension value"));
        }
        if oid == OID_SAN {
            read_san(contents, info)?;
        }
    }
    Ok(())
}

fn read_san(value: &[u8], info: &mut CertInfo) -> Result<(), X509Error> {
    let (mut names, _) = expect(value, SEQUENCE, "subjectAltName")?;
    while !names.is_empty() {
        let (tag, contents, after) = tlv(names)?;
        names = after;
        match tag {
            0x81 => info.san.push(format!("email:{}", printable(contents))),
            0x82 => {
                let name = printable(contents).to_ascii_lowercase();
                info.san.push(format!("DNS:{name}"));
                info.dns_names.push(name);
            }
            0x86 => info.san.push(format!("URI:{}", printable(contents))),
            0x87 => {
                let ip = match contents.len() {
                    4 => <[u8; 4]>::try_from(contents)
                        .map(|o| std::net::IpAddr::from(o).to_string())
                        .ok(),
                    16 => <[u8; 16]>::try_from(contents)
                        .map(|o| std::net::IpAddr::from(o).to_string())
                        .ok(),
                    _ => None,
                };
                if let Some(ip) = ip {
                    info.san.push(format!("IP:{ip}"));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// A string value as printable ASCII (anything else becomes `?`), so it is always a valid
/// header value and log field.
fn printable(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    c
                } else {
                    '?'
                }
            })
            .collect(),
        Err(_) => bytes
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    char::from(b)
                } else {
                    '?'
                }
            })
            .collect(),
    }
}

/// `CN=a,O=b` in encoded order, and the CN.
fn format_name(mut name: &[u8]) -> Result<(String, Option<String>), X509Error> {
    let mut parts = Vec::new();
    let mut common_name = None;
    while !name.is_empty() {
        let (mut rdn, after) = expect(name, SET, "relative distinguished name")?;
        name = after;
        while !rdn.is_empty() {
            let (pair, after) = expect(rdn, SEQUENCE, "attribute")?;
            rdn = after;
            let (oid, rest) = expect(pair, OID, "attribute type")?;
            let (_, value, _) = tlv(rest)?;
            let value = printable(value);
            let key = attribute_name(oid);
            if key == "CN" && common_name.is_none() {
                common_name = Some(value.clone());
            }
            parts.push(format!("{key}={}", escape_dn(&value)));
        }
    }
    Ok((parts.join(","), common_name))
}

fn attribute_name(oid: &[u8]) -> String {
    match oid {
        [0x55, 0x04, 0x03] => "CN".into(),
        [0x55, 0x04, 0x05] => "serialNumber".into(),
        [0x55, 0x04, 0x06] => "C".into(),
        [0x55, 0x04, 0x07] => "L".into(),
        [0x55, 0x04, 0x08] => "ST".into(),
        [0x55, 0x04, 0x0a] => "O".into(),
        [0x55, 0x04, 0x0b] => "OU".into(),
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19] => "DC".into(),
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01] => "emailAddress".into(),
        other => dotted_oid(other),
    }
}

fn dotted_oid(oid: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut value: u64 = 0;
    for &b in oid {
        value = (value << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (value / 40).min(2);
                arcs.push(first);
                arcs.push(value - first * 40);
            } else {
                arcs.push(value);
            }
            value = 0;
        }
    }
    arcs.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

/// RFC 4514 escaping of the special characters.
fn escape_dn(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn digits(bytes: &[u8]) -> Result<i64, X509Error> {
    bytes.iter().try_fold(0i64, |acc, &b| {
        if b.is_ascii_digit() {
            Ok(acc * 10 + i64::from(b - b'0'))
        } else {
            Err(X509Error("time is not digits"))
        }
    })
}

/// A UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) as Unix seconds.
fn parse_time(tag: u8, text: &[u8]) -> Result<i64, X509Error> {
    let (year, rest) = match (tag, text.len()) {
        (UTC_TIME, 13) => {
            let yy = digits(&text[..2])?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &text[2..])
        }
        (GENERALIZED_TIME, 15) => (digits(&text[..4])?, &text[4..]),
        _ => return Err(X509Error("unsupported time format")),
    };
    if rest.get(10) != Some(&b'Z') {
        return Err(X509Error("time is not UTC"));
    }
    let month = digits(&rest[0..2])?;
    let day = digits(&rest[2..4])?;
    let hour = digits(&rest[4..6])?;
    let minute = digits(&rest[6..8])?;
    let second = digits(&rest[8..10])?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return Err(X509Error("time out of range"));
    }
    Ok(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days_match_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2038, 1, 19), 24_855);
    }

    #[test]
    fn both_time_forms_parse() {
        assert_eq!(parse_time(UTC_TIME, b"700101000000Z"), Ok(0));
        assert_eq!(
            parse_time(GENERALIZED_TIME, b"20380119031407Z"),
            Ok(2_147_483_647)
        );
        assert_eq!(parse_time(UTC_TIME, b"491231235959Z"), Ok(2_524_607_999));
        assert!(parse_time(UTC_TIME, b"7001010000Z").is_err());
        assert!(parse_time(UTC_TIME, b"700101000000+").is_err());
    }

    #[test]
    fn garbage_and_truncations_are_errors_not_panics() {
        assert!(parse(b"").is_err());
        assert!(parse(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(parse(&[0x30, 0x03, 0x30, 0x01]).is_err());
        let mut der = vec![0x30, 0x82, 0x01, 0x00];
        der.extend(std::iter::repeat_n(0x30, 256));
        for cut in 0..der.len() {
            let _ = parse(&der[..cut]);
        }
    }

    #[test]
    fn oids_print_dotted() {
        assert_eq!(dotted_oid(&[0x2b, 0x06, 0x01]), "1.3.6.1");
        assert_eq!(dotted_oid(&[0x55, 0x1d, 0x11]), "2.5.29.17");
    }
}
