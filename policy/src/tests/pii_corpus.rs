//! A corpus of several hundred free-text cases with expected outcomes: generated valid and
//! invalid identifiers (checksums computed here, independently of the detector's code paths),
//! and hand-written vectors in testdata/pii_vectors.tsv, false positives included.

use crate::mask::scan;

/// A deterministic generator (xorshift64*), so the corpus is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn digits(&mut self, n: usize) -> String {
        (0..n).map(|_| char::from(b'0' + (self.next() % 10) as u8)).collect()
    }
}

fn id_check(first17: &str) -> char {
    let w = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let s: u32 = first17.bytes().zip(w).map(|(d, w)| u32::from(d - b'0') * w).sum();
    ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'][(s % 11) as usize]
}

fn luhn_digit(body: &str) -> char {
    let mut sum = 0;
    for (i, d) in body.bytes().rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if i % 2 == 0 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    char::from(b'0' + ((10 - sum % 10) % 10) as u8)
}

fn resident_id(r: &mut Rng) -> String {
    let body = format!(
        "{}{}{:04}{:02}{:02}{}",
        11 + r.next() % 55,
        r.digits(4),
        1940 + r.next() % 70,
        1 + r.next() % 12,
        1 + r.next() % 28,
        r.digits(3)
    );
    format!("{body}{}", id_check(&body))
}

const CONTEXTS: &[(&str, &str)] =
    &[("当事人身份证号", "，请核实。"), ("联系人：", "。"), ("Tel ", " please"), ("(", ")"), ("号码是", "")];

fn assert_masked(text: &str, secret: &str, keep_start: &str, keep_end: &str) {
    let out = scan(text);
    assert!(!out.contains(secret), "{secret} still visible in {out:?}");
    assert!(out.contains(keep_start) && out.contains(keep_end), "{out:?}");
}

#[test]
fn generated_valid_identifiers_are_masked() {
    let mut r = Rng(0x5eed);
    let mut n = 0;
    for i in 0..120 {
        let (pre, post) = CONTEXTS[i % CONTEXTS.len()];
        let id = resident_id(&mut r);
        assert_masked(&format!("{pre}{id}{post}"), &id, &id[..3], &id[14..]);
        let mobile = format!("1{}{}", 3 + r.next() % 7, r.digits(9));
        assert_masked(&format!("{pre}{mobile}{post}"), &mobile, &mobile[..3], &mobile[7..]);
        let len = 16 + (r.next() % 4) as usize;
        let body = format!("62{}", r.digits(len - 3));
        let card = format!("{body}{}", luhn_digit(&body));
        assert_masked(&format!("{pre}{card}{post}"), &card, &card[..4], &card[len - 4..]);
        n += 3;
    }
    assert!(n >= 300);
}

#[test]
fn digit_runs_failing_their_checks_stay_untouched() {
    let mut r = Rng(0xbad);
    for _ in 0..120 {
        let id = resident_id(&mut r);
        let wrong = match id.as_bytes()[17] {
            b'X' => '0',
            b'9' => 'X',
            d => char::from(d + 1),
        };
        let bad_id = format!("{}{wrong}", &id[..17]);
        let text = format!("编号{bad_id}");
        assert_eq!(scan(&text), text, "invalid check digit masked");

        let body = format!("62{}", r.digits(14));
        let good = luhn_digit(&body);
        let bad = char::from(b'0' + ((good as u8 - b'0' + 1) % 10));
        let text = format!("流水号{body}{bad}，");
        assert_eq!(scan(&text), text, "Luhn failure masked");

        let not_mobile = format!("1{}{}", r.next() % 3, r.digits(9)); // 10x, 11x, 12x
        let text = format!("单号{not_mobile}");
        assert_eq!(scan(&text), text, "not a mobile prefix");

        let twelve = format!("13{}", r.digits(10));
        let text = format!("订单{twelve}号");
        assert_eq!(scan(&text), text, "a 12-digit run is not a mobile number");
    }
}

#[test]
fn handwritten_vectors() {
    let vectors = include_str!("../../testdata/pii_vectors.tsv");
    let mut n = 0;
    for (i, line) in vectors.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (input, want) = line.split_once('\t').unwrap_or_else(|| panic!("line {}: no tab", i + 1));
        assert_eq!(scan(input), want, "pii_vectors.tsv line {}", i + 1);
        n += 1;
    }
    assert!(n >= 30, "only {n} vectors");
}
