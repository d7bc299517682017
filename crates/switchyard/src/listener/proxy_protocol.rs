//! PROXY protocol v1 and v2 (HAProxy's `proxy-protocol.txt`): reading and writing.
//!
//! Behind an L4 tier (another Switchyard, HAProxy, a cloud NLB) the TCP peer is the tier,
//! not the client. SPEC 3.1 makes the PROXY-protocol address *the* client address for
//! hashing, rate limits, per-IP caps and logs, so a listener with `proxy_protocol = true`
//! parses this header before anything else, and a cluster with `send_proxy_protocol`
//! writes one to its upstreams. The header comes from the network: [`parse`] never
//! panics, never allocates, never waits for more than [`V1_MAX_LEN`] / [`V2_MAX_LEN`]
//! bytes, and rejects at once bytes that can begin neither version.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The longest v1 header, CRLF included (the spec's bound: 107 bytes).
pub const V1_MAX_LEN: usize = 107;

/// The longest v2 header accepted: the 16-byte fixed part plus at most 4 KiB of addresses
/// and TLVs.
///
/// The length field allows 64 KiB, but addresses take at most 216 bytes (AF_UNIX) and
/// the TLVs real senders add (ALPN, authority, SSL details, cloud endpoint ids) a few
/// hundred; a larger header is refused rather than buffered.
pub const V2_MAX_LEN: usize = V2_FIXED_LEN + 4096;

const V1_PREFIX: &[u8] = b"PROXY ";
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
const V2_FIXED_LEN: usize = 16;
const V2_VERSION: u8 = 0x20;
const V2_CMD_LOCAL: u8 = 0x0;
const V2_CMD_PROXY: u8 = 0x1;
const V2_ADDR_LEN_INET: usize = 12;
const V2_ADDR_LEN_INET6: usize = 36;
const V2_ADDR_LEN_UNIX: usize = 216;

/// The outcome of [`parse`] on the bytes received so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A valid beginning of a header: read more and call again with everything received.
    NeedMore,
    /// A complete header. The connection's own data starts at `buf[header_len..]`.
    Complete {
        /// Bytes taken by the header.
        header_len: usize,
        /// The client and the address it connected to; `None` for a v2 `LOCAL` command
        /// (health checks from the tier itself), v1 `UNKNOWN`, and v2 `UNSPEC` or
        /// `AF_UNIX` addresses: the connection's own peer is then the client.
        addresses: Option<ProxiedAddresses>,
    },
}

/// The addresses a PROXY header carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxiedAddresses {
    /// The original client.
    pub source: SocketAddr,
    /// The address the client connected to (on the tier in front).
    pub destination: SocketAddr,
    /// The client's transport.
    pub transport: Transport,
}

/// The transport protocol of the proxied connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP (v1 `TCP4`/`TCP6`, v2 `STREAM`).
    Tcp,
    /// UDP (v2 `DGRAM`; v1 cannot express it).
    Udp,
}

/// Why bytes are not a valid PROXY protocol header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyProtocolError {
    /// The first bytes can begin neither a v1 nor a v2 header.
    #[error("not a PROXY protocol header")]
    NotProxyProtocol,
    /// No CRLF within the first 107 bytes of a v1 header.
    #[error("PROXY v1 header longer than 107 bytes")]
    V1TooLong,
    /// A v1 header that breaks the grammar; the text names the field.
    #[error("invalid PROXY v1 header: {0}")]
    V1Invalid(&'static str),
    /// A v2 header whose version nibble is not 2.
    #[error("unsupported PROXY v2 version {0:#x}")]
    V2Version(u8),
    /// A v2 command other than LOCAL (0) and PROXY (1).
    #[error("unsupported PROXY v2 command {0:#x}")]
    V2Command(u8),
    /// A v2 family/transport byte other than the seven the spec defines.
    #[error("unsupported PROXY v2 address family and transport {0:#04x}")]
    V2Family(u8),
    /// A v2 length field larger than [`V2_MAX_LEN`] allows.
    #[error("PROXY v2 header of {0} bytes exceeds the 4096-byte bound")]
    V2TooLong(usize),
    /// A v2 length field too short for the announced address family.
    #[error("PROXY v2 address block of {len} bytes, {needed} needed")]
    V2AddressTooShort {
        /// Bytes the family needs.
        needed: usize,
        /// Bytes the length field announced.
        len: usize,
    },
    /// A v2 TLV that runs past the header's length.
    #[error("PROXY v2 TLV runs past the end of the header")]
    V2TlvOverrun,
}

/// Parses a PROXY protocol header (v1 or v2) at the start of `buf`.
///
/// The version is told by the first bytes; bytes that can begin neither are an error at
/// once, without waiting for more. Bytes after the header are left alone.
pub fn parse(buf: &[u8]) -> Result<Parsed, ProxyProtocolError> {
    if starts_like(buf, V1_PREFIX) {
        parse_v1(buf)
    } else if starts_like(buf, &V2_SIGNATURE) {
        parse_v2(buf)
    } else {
        Err(ProxyProtocolError::NotProxyProtocol)
    }
}

/// Whether `buf` and `prefix` agree on their common length.
fn starts_like(buf: &[u8], prefix: &[u8]) -> bool {
    let n = buf.len().min(prefix.len());
    buf[..n] == prefix[..n]
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, ProxyProtocolError> {
    use ProxyProtocolError::{V1Invalid, V1TooLong};
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    let mut line_end = None;
    for (i, &b) in window.iter().enumerate() {
        match b {
            b'\r' => match window.get(i + 1) {
                Some(b'\n') => {
                    line_end = Some(i);
                    break;
                }
                Some(_) => return Err(V1Invalid("CR not followed by LF")),
                None if i + 1 < V1_MAX_LEN => return Ok(Parsed::NeedMore),
                None => return Err(V1TooLong),
            },
            b' '..=b'~' => {}
            _ => return Err(V1Invalid("byte that is not printable ASCII")),
        }
    }
    let Some(line_end) = line_end else {
        return if window.len() < V1_MAX_LEN {
            Ok(Parsed::NeedMore)
        } else {
            Err(V1TooLong)
        };
    };
    // Printable ASCII only, checked above.
    let line = std::str::from_utf8(&window[V1_PREFIX.len()..line_end])
        .map_err(|_| V1Invalid("not ASCII"))?;
    let header_len = line_end + 2;
    let mut fields = line.split(' ');
    let family = fields.next().unwrap_or_default();
    let v6 = match family {
        // The receiver ignores whatever follows UNKNOWN up to the CRLF.
        "UNKNOWN" => {
            return Ok(Parsed::Complete {
                header_len,
                addresses: None,
            });
        }
        "TCP4" => false,
        "TCP6" => true,
        _ => return Err(V1Invalid("protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    let (Some(src), Some(dst), Some(sport), Some(dport), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(V1Invalid(
            "expected exactly: protocol, two addresses, two ports",
        ));
    };
    let ip = |text: &str, what| -> Result<IpAddr, ProxyProtocolError> {
        if v6 {
            text.parse::<Ipv6Addr>().map(IpAddr::V6)
        } else {
            text.parse::<Ipv4Addr>().map(IpAddr::V4)
        }
        .map_err(|_| V1Invalid(what))
    };
    let source = SocketAddr::new(
        ip(src, "source address")?,
        parse_v1_port(sport).ok_or(V1Invalid("source port"))?,
    );
    let destination = SocketAddr::new(
        ip(dst, "destination address")?,
        parse_v1_port(dport).ok_or(V1Invalid("destination port"))?,
    );
    Ok(Parsed::Complete {
        header_len,
        addresses: Some(ProxiedAddresses {
            source,
            destination,
            transport: Transport::Tcp,
        }),
    })
}

/// A decimal port 0-65535: digits only, no sign, no leading zero (except "0" itself).
fn parse_v1_port(text: &str) -> Option<u16> {
    let valid = !text.is_empty()
        && text.len() <= 5
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    if valid { text.parse().ok() } else { None }
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, ProxyProtocolError> {
    use ProxyProtocolError::{V2AddressTooShort, V2Command, V2Family, V2TooLong, V2Version};
    if let Some(&version_command) = buf.get(12) {
        if version_command & 0xf0 != V2_VERSION {
            return Err(V2Version(version_command >> 4));
        }
        let command = version_command & 0x0f;
        if command != V2_CMD_LOCAL && command != V2_CMD_PROXY {
            return Err(V2Command(command));
        }
    }
    if let Some(&family) = buf.get(13) {
        if !matches!(family, 0x00 | 0x11 | 0x12 | 0x21 | 0x22 | 0x31 | 0x32) {
            return Err(V2Family(family));
        }
    }
    let (Some(&version_command), Some(&family), Some(&len_hi), Some(&len_lo)) =
        (buf.get(12), buf.get(13), buf.get(14), buf.get(15))
    else {
        return Ok(Parsed::NeedMore);
    };
    let len = usize::from(u16::from_be_bytes([len_hi, len_lo]));
    let header_len = V2_FIXED_LEN + len;
    if header_len > V2_MAX_LEN {
        return Err(V2TooLong(header_len));
    }
    let local = version_command & 0x0f == V2_CMD_LOCAL;
    let needed = match family >> 4 {
        0x1 => V2_ADDR_LEN_INET,
        0x2 => V2_ADDR_LEN_INET6,
        0x3 => V2_ADDR_LEN_UNIX,
        _ => 0,
    };
    if !local && len < needed {
        return Err(V2AddressTooShort { needed, len });
    }
    let Some(block) = buf.get(V2_FIXED_LEN..header_len) else {
        return Ok(Parsed::NeedMore);
    };
    if local {
        // LOCAL: the tier speaks for itself; the whole block is discarded unread.
        return Ok(Parsed::Complete {
            header_len,
            addresses: None,
        });
    }
    let (addresses, tlvs) = block.split_at(needed);
    if family != 0x00 {
        // An UNSPEC block is opaque; after real addresses come TLVs.
        skip_tlvs(tlvs)?;
    }
    let transport = if family & 0x0f == 0x2 {
        Transport::Udp
    } else {
        Transport::Tcp
    };
    let port = |at: usize| u16::from_be_bytes([addresses[at], addresses[at + 1]]);
    let addresses = match family >> 4 {
        0x1 => {
            let ip = |at: usize| {
                Ipv4Addr::new(
                    addresses[at],
                    addresses[at + 1],
                    addresses[at + 2],
                    addresses[at + 3],
                )
            };
            Some(ProxiedAddresses {
                source: SocketAddr::new(ip(0).into(), port(8)),
                destination: SocketAddr::new(ip(4).into(), port(10)),
                transport,
            })
        }
        0x2 => {
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&addresses[at..at + 16]);
                Ipv6Addr::from(octets)
            };
            Some(ProxiedAddresses {
                source: SocketAddr::new(ip(0).into(), port(32)),
                destination: SocketAddr::new(ip(16).into(), port(34)),
                transport,
            })
        }
        // UNSPEC and AF_UNIX: no IP address to report.
        _ => None,
    };
    Ok(Parsed::Complete {
        header_len,
        addresses,
    })
}

/// Walks the TLVs after the address block (type, 2-byte length, value) without keeping
/// any: Switchyard does not use them yet, but a TLV that overruns means a broken sender.
fn skip_tlvs(mut tlvs: &[u8]) -> Result<(), ProxyProtocolError> {
    while !tlvs.is_empty() {
        let [_, hi, lo, ..] = *tlvs else {
            return Err(ProxyProtocolError::V2TlvOverrun);
        };
        let end = 3 + usize::from(u16::from_be_bytes([hi, lo]));
        tlvs = tlvs.get(end..).ok_or(ProxyProtocolError::V2TlvOverrun)?;
    }
    Ok(())
}

/// Both addresses in one family: IPv6 (v4-mapped) when they differ.
fn same_family(addresses: &ProxiedAddresses) -> (SocketAddr, SocketAddr) {
    let (s, d) = (addresses.source, addresses.destination);
    if s.is_ipv4() == d.is_ipv4() {
        return (s, d);
    }
    let mapped = |a: SocketAddr| match a.ip() {
        IpAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), a.port()),
        IpAddr::V6(_) => a,
    };
    (mapped(s), mapped(d))
}

/// Writes a v2 `PROXY` header (no TLVs) for an upstream: 28 bytes for IPv4, 52 for IPv6.
///
/// When one address is IPv4 and the other IPv6, both are sent as IPv6 (v4-mapped).
pub fn encode_v2(addresses: &ProxiedAddresses) -> Vec<u8> {
    let (source, destination) = same_family(addresses);
    let transport = match addresses.transport {
        Transport::Tcp => 0x1,
        Transport::Udp => 0x2,
    };
    let mut out = Vec::with_capacity(V2_FIXED_LEN + V2_ADDR_LEN_INET6);
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(V2_VERSION | V2_CMD_PROXY);
    match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.push(0x10 | transport);
            out.extend_from_slice(&[0, 12]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (s, d) => {
            out.push(0x20 | transport);
            out.extend_from_slice(&[0, 36]);
            out.extend_from_slice(&v6_octets(s));
            out.extend_from_slice(&v6_octets(d));
        }
    }
    out.extend_from_slice(&source.port().to_be_bytes());
    out.extend_from_slice(&destination.port().to_be_bytes());
    out
}

fn v6_octets(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Writes a v1 header for an upstream, e.g. `"PROXY TCP4 192.0.2.1 198.51.100.2 5000 443\r\n"`.
///
/// v1 only describes TCP: a UDP flow is written `"PROXY UNKNOWN\r\n"` (the receiver then
/// uses the connection's own addresses). Mixed families are written as `TCP6` with the
/// IPv4 address v4-mapped.
pub fn encode_v1(addresses: &ProxiedAddresses) -> String {
    if addresses.transport == Transport::Udp {
        return "PROXY UNKNOWN\r\n".to_string();
    }
    let (source, destination) = same_family(addresses);
    let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        source.ip(),
        destination.ip(),
        source.port(),
        destination.port()
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addrs(source: &str, destination: &str, transport: Transport) -> ProxiedAddresses {
        ProxiedAddresses {
            source: source.parse().unwrap(),
            destination: destination.parse().unwrap(),
            transport,
        }
    }

    fn complete(buf: &[u8]) -> (usize, Option<ProxiedAddresses>) {
        match parse(buf) {
            Ok(Parsed::Complete {
                header_len,
                addresses,
            }) => (header_len, addresses),
            other => panic!("expected Complete, got {other:?}"),
        }
    }

    fn assert_every_prefix_needs_more(header: &[u8]) {
        for cut in 0..header.len() {
            assert_eq!(parse(&header[..cut]), Ok(Parsed::NeedMore), "cut at {cut}");
        }
    }

    /// The spec's v2 layout written out by hand: TCP over IPv4, 192.0.2.1:56324 to
    /// 198.51.100.2:443.
    const V2_TCP4: [u8; 28] = [
        0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, // signature
        0x21, // version 2, PROXY
        0x11, // AF_INET, STREAM
        0x00, 0x0c, // 12 bytes of addresses
        192, 0, 2, 1, // source
        198, 51, 100, 2, // destination
        0xdc, 0x04, // 56324
        0x01, 0xbb, // 443
    ];

    #[test]
    fn v2_tcp4_bytes_from_the_spec_parse() {
        let (len, addresses) = complete(&V2_TCP4);
        assert_eq!(len, 28);
        assert_eq!(
            addresses,
            Some(addrs("192.0.2.1:56324", "198.51.100.2:443", Transport::Tcp))
        );
        assert_eq!(
            encode_v2(&addrs(
                "192.0.2.1:56324",
                "198.51.100.2:443",
                Transport::Tcp
            )),
            V2_TCP4
        );
        assert_every_prefix_needs_more(&V2_TCP4);
    }

    #[test]
    fn v2_udp6_bytes_parse() {
        let mut header = V2_SIGNATURE.to_vec();
        header.extend_from_slice(&[0x21, 0x22, 0x00, 36]);
        header.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        header.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        header.extend_from_slice(&[0x30, 0x39, 0x00, 0x35]); // 12345, 53
        let (len, addresses) = complete(&header);
        assert_eq!(len, 52);
        assert_eq!(
            addresses,
            Some(addrs(
                "[2001:db8::1]:12345",
                "[2001:db8::2]:53",
                Transport::Udp
            ))
        );
        assert_every_prefix_needs_more(&header);
    }

    #[test]
    fn v1_example_from_the_spec_parses() {
        let header = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
        let mut buf = header.to_vec();
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let (len, addresses) = complete(&buf);
        assert_eq!(len, header.len());
        assert_eq!(
            addresses,
            Some(addrs(
                "192.168.0.1:56324",
                "192.168.0.11:443",
                Transport::Tcp
            ))
        );
        assert_every_prefix_needs_more(header);
    }

    #[test]
    fn v1_longest_header_is_accepted() {
        let full = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let header = format!("PROXY TCP6 {full} {full} 65535 65535\r\n");
        assert_eq!(header.len(), 104);
        let (len, addresses) = complete(header.as_bytes());
        assert_eq!(len, 104);
        let expected = format!("[{full}]:65535");
        assert_eq!(addresses, Some(addrs(&expected, &expected, Transport::Tcp)));
        // UNKNOWN may carry anything up to the bound.
        let unknown = format!("PROXY UNKNOWN {}\r\n", "x".repeat(V1_MAX_LEN - 16));
        assert_eq!(unknown.len(), V1_MAX_LEN);
        assert_eq!(complete(unknown.as_bytes()), (V1_MAX_LEN, None));
    }

    #[test]
    fn round_trips_are_exact() {
        for a in [
            addrs("203.0.113.7:40000", "10.0.0.1:443", Transport::Tcp),
            addrs("203.0.113.7:0", "10.0.0.1:65535", Transport::Udp),
            addrs("[2001:db8::7]:40000", "[fd00::1]:443", Transport::Tcp),
            addrs("[::1]:1", "[::ffff:10.0.0.1]:2", Transport::Udp),
        ] {
            let v2 = encode_v2(&a);
            assert_eq!(v2.len(), if a.source.is_ipv4() { 28 } else { 52 });
            assert_eq!(complete(&v2), (v2.len(), Some(a)), "{a:?}");
            if a.transport == Transport::Tcp {
                let v1 = encode_v1(&a);
                assert_eq!(complete(v1.as_bytes()), (v1.len(), Some(a)), "{a:?}");
            }
        }
        assert_eq!(
            encode_v1(&addrs("203.0.113.7:40000", "10.0.0.1:443", Transport::Tcp)),
            "PROXY TCP4 203.0.113.7 10.0.0.1 40000 443\r\n"
        );
        assert_eq!(
            encode_v1(&addrs(
                "[2001:db8::7]:40000",
                "[fd00::1]:443",
                Transport::Tcp
            )),
            "PROXY TCP6 2001:db8::7 fd00::1 40000 443\r\n"
        );
        assert_eq!(
            encode_v1(&addrs("203.0.113.7:1", "10.0.0.1:2", Transport::Udp)),
            "PROXY UNKNOWN\r\n"
        );
    }

    #[test]
    fn mixed_families_are_sent_as_v4_mapped_ipv6() {
        let a = addrs("203.0.113.7:40000", "[2001:db8::1]:443", Transport::Tcp);
        let mapped = addrs(
            "[::ffff:203.0.113.7]:40000",
            "[2001:db8::1]:443",
            Transport::Tcp,
        );
        assert_eq!(complete(&encode_v2(&a)).1, Some(mapped));
        assert_eq!(
            encode_v1(&a),
            "PROXY TCP6 ::ffff:203.0.113.7 2001:db8::1 40000 443\r\n"
        );
    }

    #[test]
    fn v2_local_and_unspec_and_unix_carry_no_address() {
        // LOCAL with an empty block (a health check from the tier).
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
        assert_eq!(complete(&local), (16, None));
        // LOCAL with an AF_INET block: the block is skipped.
        let mut local4 = V2_TCP4.to_vec();
        local4[12] = 0x20;
        assert_eq!(complete(&local4), (28, None));
        // PROXY with UNSPEC.
        let mut unspec = V2_SIGNATURE.to_vec();
        unspec.extend_from_slice(&[0x21, 0x00, 0x00, 0x00]);
        assert_eq!(complete(&unspec), (16, None));
        // PROXY with AF_UNIX STREAM: 216 bytes of paths.
        let mut unix = V2_SIGNATURE.to_vec();
        unix.extend_from_slice(&[0x21, 0x31, 0x00, 216]);
        unix.extend_from_slice(&[0u8; 216]);
        assert_eq!(complete(&unix), (232, None));
        // PROXY UNKNOWN in v1.
        assert_eq!(complete(b"PROXY UNKNOWN\r\n"), (15, None));
    }

    #[test]
    fn v2_tlvs_are_skipped_within_the_length() {
        let mut header = V2_TCP4.to_vec();
        let tlvs = [
            0x01, 0x00, 0x02, b'h', b'2', 0x04, 0x00, 0x00, 0x02, 0x00, 0x01, b'x',
        ];
        header[15] = u8::try_from(12 + tlvs.len()).unwrap();
        header.extend_from_slice(&tlvs);
        let mut buf = header.clone();
        buf.extend_from_slice(b"payload");
        let (len, addresses) = complete(&buf);
        assert_eq!(len, header.len());
        assert_eq!(
            addresses,
            Some(addrs("192.0.2.1:56324", "198.51.100.2:443", Transport::Tcp))
        );
        assert_every_prefix_needs_more(&header);
        // A TLV whose length runs past the header.
        let mut overrun = V2_TCP4.to_vec();
        overrun[15] = 12 + 4;
        overrun.extend_from_slice(&[0x01, 0x00, 0x02, b'h']);
        assert_eq!(parse(&overrun), Err(ProxyProtocolError::V2TlvOverrun));
        // A TLV header cut short.
        let mut cut = V2_TCP4.to_vec();
        cut[15] = 12 + 2;
        cut.extend_from_slice(&[0x01, 0x00]);
        assert_eq!(parse(&cut), Err(ProxyProtocolError::V2TlvOverrun));
    }

    #[test]
    fn bytes_of_neither_version_are_rejected_at_once() {
        use ProxyProtocolError::NotProxyProtocol;
        assert_eq!(parse(b""), Ok(Parsed::NeedMore));
        assert_eq!(parse(b"G"), Err(NotProxyProtocol));
        assert_eq!(parse(b"PROXX"), Err(NotProxyProtocol));
        assert_eq!(parse(b"proxy "), Err(NotProxyProtocol));
        assert_eq!(parse(b"\r\n\r\n\0\r\nQUIX"), Err(NotProxyProtocol));
        assert_eq!(parse(&[0x16, 0x03, 0x01]), Err(NotProxyProtocol));
        assert_eq!(parse(b"\r"), Ok(Parsed::NeedMore));
        assert_eq!(parse(b"PROXY"), Ok(Parsed::NeedMore));
    }

    #[test]
    fn malformed_v1_headers_name_their_fault() {
        use ProxyProtocolError::{V1Invalid, V1TooLong};
        for (header, error) in [
            (
                &b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n"[..],
                V1Invalid("expected exactly: protocol, two addresses, two ports"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
                V1Invalid("expected exactly: protocol, two addresses, two ports"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
                V1Invalid("expected exactly: protocol, two addresses, two ports"),
            ),
            (
                b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
                V1Invalid("protocol is not TCP4, TCP6 or UNKNOWN"),
            ),
            (
                b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",
                V1Invalid("protocol is not TCP4, TCP6 or UNKNOWN"),
            ),
            (
                b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
                V1Invalid("source address"),
            ),
            (
                b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
                V1Invalid("source address"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.256 1 2\r\n",
                V1Invalid("destination address"),
            ),
            (
                b"PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n",
                V1Invalid("source address"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
                V1Invalid("source port"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
                V1Invalid("source port"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
                V1Invalid("source port"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
                V1Invalid("destination port"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2x\r\n",
                V1Invalid("destination port"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
                V1Invalid("byte that is not printable ASCII"),
            ),
            (
                b"PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n",
                V1Invalid("CR not followed by LF"),
            ),
            (
                b"PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n",
                V1Invalid("byte that is not printable ASCII"),
            ),
            (
                b"PROXY \r\n",
                V1Invalid("protocol is not TCP4, TCP6 or UNKNOWN"),
            ),
        ] {
            assert_eq!(
                parse(header),
                Err(error),
                "{}",
                String::from_utf8_lossy(header)
            );
        }
        // No CRLF within 107 bytes, and a CR as the 107th byte.
        let long = format!("PROXY UNKNOWN {}", "x".repeat(100));
        assert_eq!(parse(long.as_bytes()), Err(V1TooLong));
        let cr_at_end = format!("PROXY UNKNOWN {}\r\n", "x".repeat(V1_MAX_LEN - 15));
        assert_eq!(parse(cr_at_end.as_bytes()), Err(V1TooLong));
        // A bad byte is an error before the CRLF arrives.
        assert_eq!(
            parse(b"PROXY TCP4 1.2\0"),
            Err(V1Invalid("byte that is not printable ASCII"))
        );
    }

    #[test]
    fn malformed_v2_headers_name_their_fault() {
        use ProxyProtocolError::{V2AddressTooShort, V2Command, V2Family, V2TooLong, V2Version};
        let with = |at: usize, value: u8| {
            let mut h = V2_TCP4.to_vec();
            h[at] = value;
            h
        };
        assert_eq!(parse(&with(12, 0x11)), Err(V2Version(1)));
        assert_eq!(parse(&with(12, 0x31)), Err(V2Version(3)));
        assert_eq!(parse(&with(12, 0x22)), Err(V2Command(2)));
        assert_eq!(parse(&with(13, 0x13)), Err(V2Family(0x13)));
        assert_eq!(parse(&with(13, 0x41)), Err(V2Family(0x41)));
        assert_eq!(parse(&with(13, 0x01)), Err(V2Family(0x01)));
        assert_eq!(
            parse(&with(15, 11)),
            Err(V2AddressTooShort {
                needed: 12,
                len: 11
            })
        );
        assert_eq!(
            parse(&with(13, 0x21)),
            Err(V2AddressTooShort {
                needed: 36,
                len: 12
            })
        );
        let mut long = V2_TCP4.to_vec();
        long[14] = 0x10;
        long[15] = 0x01;
        assert_eq!(parse(&long), Err(V2TooLong(16 + 4097)));
        // Errors come as soon as the offending byte is there.
        assert_eq!(parse(&with(12, 0x11)[..13]), Err(V2Version(1)));
        assert_eq!(parse(&with(13, 0x41)[..14]), Err(V2Family(0x41)));
        // The largest accepted length still waits for its bytes.
        let mut max = V2_TCP4[..16].to_vec();
        max[14] = 0x10;
        max[15] = 0x00;
        assert_eq!(parse(&max), Ok(Parsed::NeedMore));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(Parsed::Complete { header_len, .. }) = parse(&buf) {
                prop_assert!(header_len <= buf.len());
            }
        }

        #[test]
        fn bytes_after_a_v2_signature_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut buf = V2_SIGNATURE.to_vec();
            buf.extend_from_slice(&tail);
            if let Ok(Parsed::Complete { header_len, .. }) = parse(&buf) {
                prop_assert!(header_len <= buf.len());
            }
        }

        #[test]
        fn v1_lines_never_panic(line in "PROXY [ -~]{0,110}(\r\n)?") {
            if let Ok(Parsed::Complete { header_len, .. }) = parse(line.as_bytes()) {
                prop_assert!(header_len <= line.len());
            }
        }

        #[test]
        fn any_address_round_trips(
            s in (any::<IpAddr>(), any::<u16>()),
            d in (any::<IpAddr>(), any::<u16>()),
            udp in any::<bool>(),
        ) {
            let (s, d) = (SocketAddr::from(s), SocketAddr::from(d));
            let transport = if udp { Transport::Udp } else { Transport::Tcp };
            let a = ProxiedAddresses { source: s, destination: d, transport };
            let (s, d) = same_family(&a);
            let expected = ProxiedAddresses { source: s, destination: d, transport };
            let v2 = encode_v2(&a);
            prop_assert_eq!(parse(&v2), Ok(Parsed::Complete { header_len: v2.len(), addresses: Some(expected) }));
            let v1 = encode_v1(&a);
            let v1_addresses = (!udp).then_some(expected);
            prop_assert_eq!(parse(v1.as_bytes()), Ok(Parsed::Complete { header_len: v1.len(), addresses: v1_addresses }));
        }
    }
}
