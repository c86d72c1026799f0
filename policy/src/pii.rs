//! Finding personal information in free text: resident IDs (MOD 11-2 check digit and a real
//! birth date), mobile numbers, unified social credit codes (mod-31 check), bank cards (Luhn)
//! and e-mail addresses. Digit runs that fail their checksum are left alone.

use std::ops::Range;

/// What was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// An 18-character resident ID.
    ResidentId,
    /// An 11-digit mobile number.
    Mobile,
    /// A bank card number.
    BankCard,
    /// A unified social credit code.
    Uscc,
    /// An e-mail address.
    Email,
}

/// MOD 11-2 check character of the first 17 digits of a resident ID.
pub fn resident_id_check(first17: &[u8]) -> Option<u8> {
    const W: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    if first17.len() != 17 || !first17.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let sum: u32 = first17.iter().zip(W).map(|(d, w)| u32::from(d - b'0') * w).sum();
    Some(b"10X98765432"[(sum % 11) as usize])
}

/// True if and only if `s` is an 18-character resident ID with a valid check character and a
/// plausible birth date (1900..=2099, a real calendar day).
pub fn is_resident_id(s: &[u8]) -> bool {
    id_shaped(s) && resident_id_check(&s[..17]) == Some(s[17].to_ascii_uppercase())
}

/// True if and only if `s` is a mobile number: `1[3-9]` and nine more digits.
pub fn is_mobile(s: &[u8]) -> bool {
    s.len() == 11 && s[0] == b'1' && (b'3'..=b'9').contains(&s[1]) && s.iter().all(u8::is_ascii_digit)
}

/// True if and only if the digits pass the Luhn check.
pub fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// True if and only if `s` is 16 to 19 digits passing Luhn.
pub fn is_bank_card(s: &[u8]) -> bool {
    (16..=19).contains(&s.len()) && s.iter().all(u8::is_ascii_digit) && luhn(s)
}

const USCC_ALPHABET: &[u8; 31] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";

/// True if and only if `s` is an 18-character unified social credit code with a valid check.
pub fn is_uscc(s: &[u8]) -> bool {
    const W: [u32; 17] = [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28];
    if s.len() != 18 {
        return false;
    }
    let mut vals = [0u32; 18];
    for (i, c) in s.iter().enumerate() {
        match USCC_ALPHABET.iter().position(|a| a == c) {
            Some(v) => vals[i] = v as u32,
            None => return false,
        }
    }
    // Registration authority and type digits are numeric; region code (2..8) is numeric.
    if !s[2..8].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let sum: u32 = vals[..17].iter().zip(W).map(|(v, w)| v * w).sum();
    let check = (31 - sum % 31) % 31;
    vals[17] == check
}

/// Finds PII in `text`: non-overlapping byte ranges in order.
pub fn find(text: &str) -> Vec<(Range<usize>, Found)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_alphanumeric() && (i == 0 || !b[i - 1].is_ascii_alphanumeric()) {
            // A token of ASCII letters and digits, bounded by anything else.
            let end = i + b[i..].iter().take_while(|x| x.is_ascii_alphanumeric()).count();
            if end < b.len()
                && (b[end] == b'@' || b[end] == b'.' || b[end] == b'_' || b[end] == b'-' || b[end] == b'+')
            {
                if let Some(e) = email_at(b, i) {
                    out.push((i..e, Found::Email));
                    i = e;
                    continue;
                }
            }
            if let Some(kind) = classify(&b[i..end]) {
                out.push((i..end, kind));
            } else if let Some(card_end) = spaced_card(b, i) {
                out.push((i..card_end, Found::BankCard));
                i = card_end;
                continue;
            }
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

/// Order matters for all-digit tokens: a resident ID (checked) first; an ID-shaped token whose
/// check fails is nobody's card or code and stays as it is; then mobile, card, and USCC last,
/// since USCCs with letters are unambiguous and all-digit ones rare.
fn classify(tok: &[u8]) -> Option<Found> {
    if is_resident_id(tok) {
        Some(Found::ResidentId)
    } else if id_shaped(tok) {
        None
    } else if is_mobile(tok) {
        Some(Found::Mobile)
    } else if is_bank_card(tok) {
        Some(Found::BankCard)
    } else if is_uscc(tok) {
        Some(Found::Uscc)
    } else {
        None
    }
}

/// 18 characters, 17 digits then a digit or X, with a plausible birth date at 6..14.
fn id_shaped(s: &[u8]) -> bool {
    if s.len() != 18
        || !s[..17].iter().all(u8::is_ascii_digit)
        || !(s[17].is_ascii_digit() || s[17] == b'X' || s[17] == b'x')
    {
        return false;
    }
    let num = |r: Range<usize>| s[r].iter().fold(0u32, |a, d| a * 10 + u32::from(d - b'0'));
    let (y, m, d) = (num(6..10), num(10..12), num(12..14));
    (1900..=2099).contains(&y) && crate::time::is_valid_date(i64::from(y), m, d)
}

/// A card written in groups of four digits separated by single spaces (`6222 0202 ...`).
fn spaced_card(b: &[u8], start: usize) -> Option<usize> {
    let mut digits = Vec::with_capacity(19);
    let mut i = start;
    let mut end = start;
    loop {
        let run = b[i..].iter().take_while(|x| x.is_ascii_digit()).count();
        if run == 0 || run > 4 {
            break;
        }
        digits.extend_from_slice(&b[i..i + run]);
        end = i + run;
        if run < 4 || end + 1 >= b.len() || b[end] != b' ' || !b[end + 1].is_ascii_digit() {
            break;
        }
        i = end + 1;
    }
    let bounded = end >= b.len() || !b[end].is_ascii_alphanumeric();
    (bounded && digits.len() >= 16 && is_bank_card(&digits)).then_some(end)
}

fn email_at(b: &[u8], start: usize) -> Option<usize> {
    let local = b[start..].iter().take_while(|c| c.is_ascii_alphanumeric() || b"._%+-".contains(c)).count();
    let at = start + local;
    if local == 0 || at >= b.len() || b[at] != b'@' {
        return None;
    }
    let dom =
        b[at + 1..].iter().take_while(|c| c.is_ascii_alphanumeric() || **c == b'.' || **c == b'-').count();
    let mut end = at + 1 + dom;
    while end > at + 1 && (b[end - 1] == b'.' || b[end - 1] == b'-') {
        end -= 1;
    }
    let domain = &b[at + 1..end];
    let dot = domain.iter().rposition(|c| *c == b'.')?;
    let tld = &domain[dot + 1..];
    (dot > 0 && tld.len() >= 2 && tld.iter().all(u8::is_ascii_alphabetic)).then_some(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_digits() {
        assert_eq!(resident_id_check(b"11010519491231002"), Some(b'X'));
        assert!(is_resident_id(b"11010519491231002X"));
        assert!(is_resident_id(b"11010519491231002x"));
        assert!(!is_resident_id(b"110105194912310021"));
        assert!(!is_resident_id(b"110105194913310028"), "month 13");
        assert!(luhn(b"4111111111111111"));
        assert!(!luhn(b"4111111111111112"));
        assert!(is_uscc(b"91350100M000100Y43"));
        assert!(!is_uscc(b"91350100M000100Y44"));
        assert!(is_mobile(b"13812345678"));
        assert!(!is_mobile(b"12812345678"));
    }

    #[test]
    fn finds_in_text_with_boundaries() {
        let t = "请联系13812345678或邮箱zhang.san@example.com，身份证11010519491231002X，卡号4111 1111 1111 1111。";
        let kinds: Vec<Found> = find(t).into_iter().map(|(_, k)| k).collect();
        assert_eq!(kinds, [Found::Mobile, Found::Email, Found::ResidentId, Found::BankCard]);
        // Longer digit runs are not split into a mobile number.
        assert!(find("订单号138123456789").is_empty());
        assert!(find("编号a13812345678").is_empty());
    }
}
