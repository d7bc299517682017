//! The Huffman code of RFC 7541 Appendix B, which clients use for most string literals.
//!
//! The code is canonical (codes of one length are consecutive, in symbol order, and each
//! length continues where the shorter one stopped), so the table below needs only each
//! symbol's code length; the codes, the decoding tree and the decoder's state machine are
//! all built from it at compile time. Decoding walks the input a nibble at a time: each of
//! the 256 internal nodes of the tree is a state, and one table lookup per nibble gives the
//! next state and the symbol completed on the way, if any (codes are at least 5 bits long,
//! so a nibble completes at most one).

use bytes::{BufMut, BytesMut};

use super::DecodeError;

/// The code length, in bits, of every symbol 0..=255 and EOS (256), from RFC 7541
/// Appendix B.
const CODE_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, // 0..16
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, // 16..32
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, // ' '..'0'
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, // '0'..'@'
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, // '@'..'P'
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, // 'P'..'`'
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, // '`'..'p'
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, // 'p'..128
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, // 128..144
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, // 144..160
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, // 160..176
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, // 176..192
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, // 192..208
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, // 208..224
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, // 224..240
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, // 240..256
    30, // EOS
];

/// The end-of-string symbol; it must never appear inside a string.
const EOS: usize = 256;
/// The longest code (EOS and three control characters).
const MAX_CODE_LEN: u8 = 30;

/// One symbol's code: its `len` low bits, most significant first.
#[derive(Clone, Copy)]
struct Code {
    bits: u32,
    len: u8,
}

/// Every symbol's code, assigned canonically from [`CODE_LENGTHS`].
const CODES: [Code; 257] = canonical_codes();

const fn canonical_codes() -> [Code; 257] {
    let mut codes = [Code { bits: 0, len: 0 }; 257];
    let mut next = 0u32;
    let mut len = 1;
    while len <= MAX_CODE_LEN {
        let mut symbol = 0;
        while symbol < codes.len() {
            if CODE_LENGTHS[symbol] == len {
                codes[symbol] = Code { bits: next, len };
                next += 1;
            }
            symbol += 1;
        }
        next <<= 1;
        len += 1;
    }
    // A complete prefix code fills the code space exactly.
    assert!(next == 1 << (MAX_CODE_LEN + 1));
    codes
}

/// Internal nodes of the decoding tree: a complete prefix code over 257 symbols has 256.
const NODES: usize = 256;
/// Marks a child of [`TREE`] that is a leaf; the low bits are the symbol.
const LEAF: u16 = 0x8000;

/// The decoding tree: `TREE[node][bit]` is the child node, or `LEAF | symbol`. Node 0 is
/// the root.
const TREE: [[u16; 2]; NODES] = decoding_tree();

const fn decoding_tree() -> [[u16; 2]; NODES] {
    let mut tree = [[0u16; 2]; NODES];
    let mut nodes = 1;
    let mut symbol = 0;
    while symbol < CODES.len() {
        let code = CODES[symbol];
        let mut node = 0;
        let mut depth = code.len;
        while depth > 1 {
            depth -= 1;
            let bit = ((code.bits >> depth) & 1) as usize;
            if tree[node][bit] == 0 {
                tree[node][bit] = nodes as u16;
                nodes += 1;
            }
            node = tree[node][bit] as usize;
        }
        tree[node][(code.bits & 1) as usize] = LEAF | symbol as u16;
        symbol += 1;
    }
    assert!(nodes == NODES);
    tree
}

/// One transition of the nibble state machine.
#[derive(Clone, Copy)]
struct Step {
    /// The state (tree node) after the nibble.
    next: u8,
    /// The symbol completed inside the nibble, if `flags` has [`EMIT`].
    symbol: u8,
    /// [`EMIT`] and/or [`FAIL`].
    flags: u8,
}

/// The nibble completed a symbol.
const EMIT: u8 = 1;
/// The nibble completed EOS: the string is invalid.
const FAIL: u8 = 2;

/// `STEPS[state][nibble]`: where each nibble leads from each state.
const STEPS: [[Step; 16]; NODES] = nibble_steps();

const fn nibble_steps() -> [[Step; 16]; NODES] {
    let mut steps = [[Step {
        next: 0,
        symbol: 0,
        flags: 0,
    }; 16]; NODES];
    let mut state = 0;
    while state < NODES {
        let mut nibble = 0;
        while nibble < 16 {
            steps[state][nibble] = walk_nibble(state, nibble);
            nibble += 1;
        }
        state += 1;
    }
    steps
}

const fn walk_nibble(state: usize, nibble: usize) -> Step {
    let mut step = Step {
        next: 0,
        symbol: 0,
        flags: 0,
    };
    let mut node = state;
    let mut bit = 4;
    while bit > 0 {
        bit -= 1;
        let child = TREE[node][(nibble >> bit) & 1];
        if child & LEAF == 0 {
            node = child as usize;
        } else if (child & !LEAF) as usize == EOS {
            step.flags = FAIL;
            return step;
        } else {
            step.symbol = (child & !LEAF) as u8;
            step.flags = EMIT;
            node = 0;
        }
    }
    step.next = node as u8;
    step
}

/// `ACCEPTING[state]`: a string may end in this state. That is the root (the last symbol
/// ended on a byte boundary) or a node reached from the root by one to seven 1 bits: the
/// padding RFC 7541 section 5.2 allows (a prefix of EOS, shorter than 8 bits).
const ACCEPTING: [bool; NODES] = accepting_states();

const fn accepting_states() -> [bool; NODES] {
    let mut accepting = [false; NODES];
    let mut node = 0;
    accepting[0] = true;
    let mut ones = 0;
    while ones < 7 {
        node = TREE[node][1] as usize;
        assert!(node < NODES);
        accepting[node] = true;
        ones += 1;
    }
    accepting
}

/// Decodes the Huffman-coded `src`, appending the octets to `dst`.
///
/// Fails on the EOS symbol inside the string, and on padding that is longer than 7 bits
/// or not all ones (RFC 7541 section 5.2). On error `dst` holds a partial result.
pub fn decode(src: &[u8], dst: &mut Vec<u8>) -> Result<(), DecodeError> {
    // Every code is at least 5 bits long: at most 8 symbols per 5 input bytes.
    dst.reserve(src.len() * 8 / 5 + 1);
    let mut state = 0u8;
    for &byte in src {
        state = feed_nibble(state, byte >> 4, dst)?;
        state = feed_nibble(state, byte & 0x0f, dst)?;
    }
    if ACCEPTING[usize::from(state)] {
        Ok(())
    } else {
        Err(DecodeError::HuffmanPadding)
    }
}

#[inline(always)]
fn feed_nibble(state: u8, nibble: u8, dst: &mut Vec<u8>) -> Result<u8, DecodeError> {
    let step = STEPS[usize::from(state)][usize::from(nibble & 0x0f)];
    if step.flags & FAIL != 0 {
        return Err(DecodeError::HuffmanEos);
    }
    if step.flags & EMIT != 0 {
        dst.push(step.symbol);
    }
    Ok(step.next)
}

/// The length in bytes of `src` Huffman-coded, padding included.
pub fn encoded_len(src: &[u8]) -> usize {
    let bits: usize = src
        .iter()
        .map(|&byte| usize::from(CODES[usize::from(byte)].len))
        .sum();
    bits.div_ceil(8)
}

/// Appends `src` Huffman-coded to `dst`, padded with the most significant bits of EOS
/// (all ones) to a whole byte.
pub fn encode(src: &[u8], dst: &mut BytesMut) {
    dst.reserve(encoded_len(src));
    // Pending bits live in the low `pending` bits of `acc`; fewer than 8 between symbols,
    // so a 30-bit code always fits in the 64-bit accumulator.
    let mut acc = 0u64;
    let mut pending = 0u32;
    for &byte in src {
        let code = CODES[usize::from(byte)];
        acc = (acc << code.len) | u64::from(code.bits);
        pending += u32::from(code.len);
        while pending >= 8 {
            pending -= 8;
            dst.put_u8((acc >> pending) as u8);
        }
    }
    if pending > 0 {
        let padding = 8 - pending;
        dst.put_u8(((acc << padding) as u8) | (0xff >> pending));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
            .collect()
    }

    fn decoded(src: &[u8]) -> Result<Vec<u8>, DecodeError> {
        let mut out = Vec::new();
        decode(src, &mut out).map(|()| out)
    }

    fn encoded(src: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode(src, &mut out);
        out.to_vec()
    }

    /// The Huffman strings of RFC 7541 Appendix C.4 and C.6.
    const RFC_STRINGS: &[(&str, &str)] = &[
        ("f1e3 c2e5 f23a 6ba0 ab90 f4ff", "www.example.com"),
        ("a8eb 1064 9cbf", "no-cache"),
        ("25a8 49e9 5ba9 7d7f", "custom-key"),
        ("25a8 49e9 5bb8 e8b4 bf", "custom-value"),
        ("6402", "302"),
        ("640e ff", "307"),
        ("aec3 771a 4b", "private"),
        (
            "d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff",
            "Mon, 21 Oct 2013 20:13:21 GMT",
        ),
        (
            "d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff",
            "Mon, 21 Oct 2013 20:13:22 GMT",
        ),
        (
            "9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3",
            "https://www.example.com",
        ),
        ("9bd9 ab", "gzip"),
        (
            "94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 \
             3160 65c0 03ed 4ee5 b106 3d50 07",
            "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
        ),
    ];

    #[test]
    fn canonical_codes_match_rfc_7541_appendix_b() {
        let expected: &[(usize, u32, u8)] = &[
            (0, 0x1ff8, 13),
            (1, 0x7f_ffd8, 23),
            (9, 0xff_ffea, 24),
            (10, 0x3fff_fffc, 30),
            (13, 0x3fff_fffd, 30),
            (22, 0x3fff_fffe, 30),
            (b' ' as usize, 0x14, 6),
            (b'!' as usize, 0x3f8, 10),
            (b'0' as usize, 0x0, 5),
            (b'<' as usize, 0x7ffc, 15),
            (b'X' as usize, 0xfc, 8),
            (b'\\' as usize, 0x7fff0, 19),
            (b'a' as usize, 0x3, 5),
            (b'z' as usize, 0x7b, 7),
            (b'~' as usize, 0x1ffd, 13),
            (127, 0xfff_fffc, 28),
            (128, 0xf_ffe6, 20),
            (153, 0x1f_ffdc, 21),
            (199, 0x1ff_ffec, 25),
            (203, 0x7ff_ffde, 27),
            (220, 0xfff_fffd, 28),
            (249, 0xfff_fffe, 28),
            (254, 0x7ff_fff0, 27),
            (255, 0x3ff_ffee, 26),
            (EOS, 0x3fff_ffff, 30),
        ];
        for &(symbol, bits, len) in expected {
            let code = CODES[symbol];
            assert_eq!((code.bits, code.len), (bits, len), "symbol {symbol}");
        }
    }

    #[test]
    fn rfc_7541_strings_decode_and_encode() {
        for &(coded, plain) in RFC_STRINGS {
            assert_eq!(decoded(&hex(coded)).unwrap(), plain.as_bytes(), "{plain}");
            assert_eq!(encoded(plain.as_bytes()), hex(coded), "{plain}");
            assert_eq!(encoded_len(plain.as_bytes()), hex(coded).len());
        }
    }

    #[test]
    fn every_byte_value_round_trips() {
        for byte in 0..=255u8 {
            for input in [vec![byte], vec![byte; 3], vec![b'a', byte, b'z']] {
                assert_eq!(decoded(&encoded(&input)).unwrap(), input, "byte {byte}");
            }
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(decoded(&encoded(&all)).unwrap(), all);
        let reversed: Vec<u8> = (0..=255).rev().collect();
        assert_eq!(decoded(&encoded(&reversed)).unwrap(), reversed);
    }

    #[test]
    fn the_empty_string_is_empty() {
        assert_eq!(decoded(&[]).unwrap(), b"");
        assert_eq!(encoded(b""), b"");
    }

    #[test]
    fn eos_inside_a_string_is_an_error() {
        // 30 ones (EOS) then two padding ones.
        assert_eq!(decoded(&[0xff; 4]), Err(DecodeError::HuffmanEos));
        // 'a' (00011) then EOS: 00011111 11111111 11111111 11111111 111 + padding.
        assert_eq!(
            decoded(&[0x1f, 0xff, 0xff, 0xff, 0xff]),
            Err(DecodeError::HuffmanEos)
        );
    }

    #[test]
    fn padding_of_eight_or_more_ones_is_an_error() {
        // A whole byte of ones is padding longer than 7 bits.
        assert_eq!(decoded(&[0xff]), Err(DecodeError::HuffmanPadding));
        // 'a' (00011) + 111 padding is fine; one more 0xff byte is 11 bits of padding.
        assert_eq!(decoded(&[0x1f]).unwrap(), b"a");
        assert_eq!(decoded(&[0x1f, 0xff]), Err(DecodeError::HuffmanPadding));
    }

    #[test]
    fn padding_that_is_not_all_ones_is_an_error() {
        // 'a' (00011) then 110: not a prefix of EOS.
        assert_eq!(decoded(&[0x1e]), Err(DecodeError::HuffmanPadding));
        // 'a' then 000: the start of another code.
        assert_eq!(decoded(&[0x18]), Err(DecodeError::HuffmanPadding));
    }

    #[test]
    fn random_inputs_round_trip_and_random_codes_never_panic() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..2000 {
            let len = (next() % 64) as usize;
            let input: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            assert_eq!(decoded(&encoded(&input)).unwrap(), input);
            let _ = decoded(&input);
        }
    }
}
