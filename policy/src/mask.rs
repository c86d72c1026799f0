//! The desensitization operators. Each is total: any input (empty, very long, any UTF-8) gives
//! an output and never panics, and never reveals more than the rule allows.

use fedgate_catalog::{Generalize, Level, Value};
use ring::hmac;

use crate::pii::{self, Found};

/// Compound surnames kept whole by `mask-name` (欧阳**).
const COMPOUND_SURNAMES: &[&str] = &[
    "欧阳", "太史", "端木", "上官", "司马", "东方", "独孤", "南宫", "万俟", "闻人", "夏侯", "诸葛", "尉迟",
    "公羊", "赫连", "澹台", "皇甫", "宗政", "濮阳", "公冶", "太叔", "申屠", "公孙", "慕容", "仲孙", "钟离",
    "长孙", "宇文", "司徒", "鲜于", "司空", "闾丘", "子车", "亓官", "司寇", "巫马", "公西", "颛孙", "壤驷",
    "公良", "漆雕", "乐正", "宰父", "谷梁", "拓跋", "夹谷", "轩辕", "令狐", "段干", "百里", "呼延", "东郭",
    "南门", "羊舌", "微生", "公户", "公玉", "公仪", "梁丘", "公仲", "公上", "公门", "公山", "公坚", "左丘",
    "公伯", "西门", "公祖", "第五", "公乘", "贯丘", "公皙", "南荣", "东里", "东宫", "仲长", "子书", "子桑",
    "即墨", "达奚", "褚师", "吴铭",
];

/// Keeps the first `first` and last `last` characters and replaces each other one with `*`.
/// If nothing would be hidden, everything is hidden: a mask never returns its input.
pub fn mask(s: &str, first: usize, last: usize) -> String {
    let n = s.chars().count();
    if n == 0 {
        return String::new();
    }
    if first + last >= n {
        return "*".repeat(n);
    }
    let mut out = String::with_capacity(s.len());
    for (i, c) in s.chars().enumerate() {
        out.push(if i < first || i >= n - last { c } else { '*' });
    }
    out
}

/// `张三` → `张*`, `欧阳娜娜` → `欧阳**`.
pub fn mask_name(s: &str) -> String {
    let keep = if COMPOUND_SURNAMES.iter().any(|c| s.starts_with(c)) { 2 } else { 1 };
    mask(s, keep, 0)
}

/// `6222021234567893256` → `6222 **** **** 3256`. Anything that is not 12 to 19 digits is
/// masked keeping its first and last four characters.
pub fn mask_card(s: &str) -> String {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_digit).collect();
    let only_digits_and_spaces = s.bytes().all(|b| b.is_ascii_digit() || b == b' ');
    if only_digits_and_spaces && (12..=19).contains(&digits.len()) {
        let head = std::str::from_utf8(&digits[..4]).unwrap_or("****");
        let tail = std::str::from_utf8(&digits[digits.len() - 4..]).unwrap_or("****");
        return format!("{head} **** **** {tail}");
    }
    mask(s, 4, 4)
}

/// `zhangsan@example.com` → `z***@example.com`; the domain stays, the local part is hidden.
pub fn mask_email(s: &str) -> String {
    match s.rsplit_once('@') {
        Some((local, domain)) if !local.is_empty() => {
            let first = local.chars().next().map(String::from).unwrap_or_default();
            format!("{first}***@{domain}")
        }
        _ => mask(s, 1, 0),
    }
}

/// A per-consumer key derived from the provider's secret: hashes join within one consumer only.
pub fn consumer_key(provider_secret: &[u8], consumer: &str) -> hmac::Key {
    let master = hmac::Key::new(hmac::HMAC_SHA256, provider_secret);
    let derived = hmac::sign(&master, format!("fedgate consumer key v1\0{consumer}").as_bytes());
    hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref())
}

/// HMAC-SHA256 of the value's text, as 32 hex characters (128 bits).
pub fn keyed_hash(key: &hmac::Key, s: &str) -> String {
    let tag = hmac::sign(key, s.as_bytes());
    fedgate_catalog::hex(&tag.as_ref()[..16])
}

/// A resident-ID-shaped pseudonym: keeps the province (first two digits), derives the rest from
/// an HMAC of the value, with a real birth date and a valid check digit. Stable per consumer.
/// Anything that is not a resident ID becomes a keyed hash.
pub fn pseudonym(key: &hmac::Key, s: &str) -> String {
    let b = s.as_bytes();
    if !pii::is_resident_id(b) {
        return keyed_hash(key, s);
    }
    let tag = hmac::sign(key, s.as_bytes());
    let t = tag.as_ref();
    let n = |i: usize| u32::from(t[i]) << 8 | u32::from(t[i + 1]);
    let mut id = String::with_capacity(18);
    id.push_str(&s[..2]);
    id.push_str(&format!("{:04}", 101 + n(0) % 9000));
    let days = i64::from(n(2) % 20_000) + crate::time::days_from_civil(1950, 1, 1);
    let (y, m, d) = crate::time::civil_from_days(days);
    id.push_str(&format!("{y:04}{m:02}{d:02}{:03}", n(4) % 1000));
    let check = pii::resident_id_check(id.as_bytes()).unwrap_or(b'0');
    id.push(check as char);
    id
}

/// Less precision, never more. Values that do not have the expected shape are redacted.
pub fn generalize(g: &Generalize, v: &Value, redact_token: &str) -> Value {
    let text = |s: String| Value::Text(s);
    match (g, v) {
        (_, Value::Null) => Value::Null,
        (Generalize::Month, Value::Text(s)) if date_prefix(s) => text(s[..7].to_owned()),
        (Generalize::Year, Value::Text(s)) if date_prefix(s) => text(s[..4].to_owned()),
        (Generalize::AgeBand { width }, Value::Int(age)) if *age >= 0 => {
            let w = i64::from((*width).max(1));
            let lo = age / w * w;
            text(format!("{lo}-{}", lo + w - 1))
        }
        (Generalize::Region { level }, Value::Text(s)) => text(cut_region(s, *level)),
        (Generalize::Address, Value::Text(s)) => {
            text(cut_address(s).unwrap_or_else(|| redact_token.to_owned()))
        }
        _ => text(redact_token.to_owned()),
    }
}

fn date_prefix(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 10
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..7].iter().all(u8::is_ascii_digit)
        && b[7] == b'-'
}

fn cut_region(s: &str, level: Level) -> String {
    s.split('.').take(level.get() as usize).collect::<Vec<_>>().join(".")
}

/// An address cut after its district (区/县), or after its city (市) if it names no district.
fn cut_address(s: &str) -> Option<String> {
    let cut = |marker: char| s.find(marker).map(|i| s[..i + marker.len_utf8()].to_owned());
    cut('区').or_else(|| cut('县')).or_else(|| cut('市'))
}

/// Masks every piece of PII found in free text, in place of the original characters.
pub fn scan(text: &str) -> String {
    let found = pii::find(text);
    if found.is_empty() {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    let mut at = 0;
    for (r, kind) in found {
        out.push_str(&text[at..r.start]);
        let hit = &text[r.clone()];
        out.push_str(&match kind {
            Found::ResidentId => mask(hit, 3, 4),
            Found::Mobile => mask(hit, 3, 4),
            Found::BankCard => mask_card(hit),
            Found::Uscc => mask(hit, 8, 2),
            Found::Email => mask_email(hit),
        });
        at = r.end;
    }
    out.push_str(&text[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conventional_shapes() {
        assert_eq!(mask_name("张三"), "张*");
        assert_eq!(mask_name("欧阳娜娜"), "欧阳**");
        assert_eq!(mask_name("诸葛亮"), "诸葛*");
        assert_eq!(mask("11010519491231002X", 3, 4), "110***********002X");
        assert_eq!(mask("13812345678", 3, 4), "138****5678");
        assert_eq!(mask_card("6222021234567893256"), "6222 **** **** 3256");
        assert_eq!(mask_email("zhangsan@example.com"), "z***@example.com");
        assert_eq!(mask("ab", 3, 4), "**");
        assert_eq!(mask("", 1, 1), "");
    }

    #[test]
    fn generalizations() {
        let t = |s: &str| Value::Text(s.into());
        assert_eq!(generalize(&Generalize::Month, &t("2024-03-15"), "***"), t("2024-03"));
        assert_eq!(generalize(&Generalize::Year, &t("2024-03-15T10:00:00+08:00"), "***"), t("2024"));
        assert_eq!(generalize(&Generalize::AgeBand { width: 10 }, &Value::Int(37), "***"), t("30-39"));
        let l2 = Level::new(2).unwrap();
        assert_eq!(
            generalize(&Generalize::Region { level: l2 }, &t("wuxi.liangxi.chongan"), "***"),
            t("wuxi.liangxi")
        );
        assert_eq!(
            generalize(&Generalize::Address, &t("江苏省无锡市梁溪区崇安寺街道广瑞路12号"), "***"),
            t("江苏省无锡市梁溪区")
        );
        assert_eq!(generalize(&Generalize::Month, &t("soon"), "***"), t("***"));
    }

    #[test]
    fn keyed_hashes_join_within_a_consumer_only() {
        let a = consumer_key(b"provider secret", "police@wuxi.liangxi");
        let b = consumer_key(b"provider secret", "court@wuxi.xinwu");
        assert_eq!(keyed_hash(&a, "x"), keyed_hash(&a, "x"));
        assert_ne!(keyed_hash(&a, "x"), keyed_hash(&b, "x"));
        let p = pseudonym(&a, "11010519491231002X");
        assert!(pii::is_resident_id(p.as_bytes()), "{p}");
        assert_ne!(p, "11010519491231002X");
        assert_eq!(p, pseudonym(&a, "11010519491231002X"));
        assert_ne!(p, pseudonym(&b, "11010519491231002X"));
    }
}
