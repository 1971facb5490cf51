//! Code point classes for the pre-tokenizers, and GPT-2's byte <-> character map.
//!
//! Each code point has one major general category (`\p{L}`, `\p{N}`, …) taken from
//! [`unicode_tables`](super::unicode_tables) (Unicode 15.1, the version llama.cpp's tables use), plus
//! a whitespace bit for the 25 code points llama.cpp treats as `\s`.

use super::unicode_tables::{CATEGORY_RANGES, LOWERCASE, NFD_FIRST};

pub(crate) const UNDEFINED: u16 = 0x0001;
pub(crate) const NUMBER: u16 = 0x0002;
pub(crate) const LETTER: u16 = 0x0004;
pub(crate) const SEPARATOR: u16 = 0x0008;
pub(crate) const MARK: u16 = 0x0010;
pub(crate) const PUNCTUATION: u16 = 0x0020;
pub(crate) const SYMBOL: u16 = 0x0040;
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) const CONTROL: u16 = 0x0080;
pub(crate) const WHITESPACE: u16 = 0x0100;

/// Whitespace as the pre-tokenizers see it (Unicode's White_Space property).
pub(crate) fn is_whitespace(cp: u32) -> bool {
    matches!(
        cp,
        0x09..=0x0D
            | 0x20
            | 0x85
            | 0xA0
            | 0x1680
            | 0x2000..=0x200A
            | 0x2028
            | 0x2029
            | 0x202F
            | 0x205F
            | 0x3000
    )
}

/// The major general category bit of `cp` (`UNDEFINED` for unassigned code points and for
/// values past U+10FFFF).
pub(crate) fn category(cp: u32) -> u16 {
    // The first range starts at 0, so the index is never below 0.
    let i = CATEGORY_RANGES.partition_point(|&(start, _)| start <= cp);
    match i.checked_sub(1).and_then(|i| CATEGORY_RANGES.get(i)) {
        Some(&(_, cat)) if cp <= 0x10FFFF => u16::from(cat),
        _ => UNDEFINED,
    }
}

/// Category bit plus the whitespace bit. Never 0: code points without a category are `UNDEFINED`.
pub(crate) fn flags(cp: u32) -> u16 {
    let ws = if is_whitespace(cp) { WHITESPACE } else { 0 };
    category(cp) | ws
}

/// The simple lowercase of `cp` (itself when it has none).
pub(crate) fn to_lower(cp: u32) -> u32 {
    match LOWERCASE.binary_search_by_key(&cp, |&(c, _)| c) {
        Ok(i) => LOWERCASE[i].1,
        Err(_) => cp,
    }
}

/// The first code point of `cp`'s canonical decomposition (NFD): the base letter of an accented
/// one. Itself when it does not decompose.
pub(crate) fn nfd_first(cp: u32) -> u32 {
    let i = NFD_FIRST.partition_point(|&(first, _, _)| first <= cp);
    match i.checked_sub(1).map(|i| NFD_FIRST[i]) {
        Some((_, last, target)) if cp <= last => target,
        _ => cp,
    }
}

/// GPT-2's reversible byte -> character map: printable Latin-1 bytes map to themselves, the other
/// 68 bytes to U+0100.. in byte order.
pub(crate) const BYTE_TO_CHAR: [char; 256] = byte_to_char_table();

const fn byte_maps_to_itself(b: u32) -> bool {
    (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)
}

const fn byte_to_char_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    let mut b = 0u32;
    while b < 256 {
        let cp = if byte_maps_to_itself(b) {
            b
        } else {
            let c = next;
            next += 1;
            c
        };
        table[b as usize] = match char::from_u32(cp) {
            Some(c) => c,
            None => '\0',
        };
        b += 1;
    }
    table
}

/// Inverse of [`BYTE_TO_CHAR`] for code points below U+0144; -1 where no byte maps there.
const CHAR_TO_BYTE: [i16; 256 + 68] = char_to_byte_table();

const fn char_to_byte_table() -> [i16; 256 + 68] {
    let mut table = [-1i16; 256 + 68];
    let mut b = 0usize;
    while b < 256 {
        let cp = BYTE_TO_CHAR[b] as usize;
        if cp < table.len() {
            table[cp] = b as i16;
        }
        b += 1;
    }
    table
}

/// The byte a GPT-2 byte-level character stands for, if it is one of the 256.
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    let v = *CHAR_TO_BYTE.get(c as usize)?;
    u8::try_from(v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories() {
        assert_eq!(super::super::unicode_tables::UNICODE_VERSION, "15.1.0");
        assert_eq!(category('a' as u32), LETTER);
        assert_eq!(category('Z' as u32), LETTER);
        assert_eq!(category('7' as u32), NUMBER);
        assert_eq!(category('$' as u32), SYMBOL);
        assert_eq!(category('_' as u32), PUNCTUATION);
        assert_eq!(category(' ' as u32), SEPARATOR);
        assert_eq!(category('\n' as u32), CONTROL);
        assert_eq!(category('é' as u32), LETTER);
        assert_eq!(category('中' as u32), LETTER);
        assert_eq!(category(0x0301), MARK);
        assert_eq!(category(0x1F600), SYMBOL);
        assert_eq!(category(0x2FFC), SYMBOL); // new in 15.1
        assert_eq!(category(0x1C89), UNDEFINED); // new in 16.0
        assert_eq!(category(0x10FFFF), UNDEFINED);
        assert_eq!(category(0x110000), UNDEFINED);
        assert_eq!(flags(0x3000), SEPARATOR | WHITESPACE);
        assert_eq!(flags(0x85), CONTROL | WHITESPACE);
    }

    #[test]
    fn lowercase_and_decomposition() {
        assert_eq!(to_lower('A' as u32), 'a' as u32);
        assert_eq!(to_lower('a' as u32), 'a' as u32);
        assert_eq!(to_lower('Ä' as u32), 'ä' as u32);
        assert_eq!(to_lower('Б' as u32), 'б' as u32);
        assert_eq!(to_lower(0x130), 'i' as u32); // İ: the simple mapping
        assert_eq!(to_lower('ß' as u32), 'ß' as u32);
        assert_eq!(to_lower('1' as u32), '1' as u32);
        assert_eq!(nfd_first('Ä' as u32), 'A' as u32);
        assert_eq!(nfd_first('ử' as u32), 'u' as u32);
        assert_eq!(nfd_first('가' as u32), 0x1100); // Hangul: the leading consonant
        assert_eq!(nfd_first('a' as u32), 'a' as u32);
        assert_eq!(nfd_first(0), 0);
        assert_eq!(nfd_first(0x10FFFF), 0x10FFFF);
    }

    #[test]
    fn byte_map_round_trips() {
        assert_eq!(BYTE_TO_CHAR[b' ' as usize], 'Ġ');
        assert_eq!(BYTE_TO_CHAR[b'\n' as usize], 'Ċ');
        assert_eq!(BYTE_TO_CHAR[b'a' as usize], 'a');
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(BYTE_TO_CHAR[b as usize]), Some(b));
        }
        assert_eq!(char_to_byte('中'), None);
    }
}
