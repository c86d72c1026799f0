//! The working-day calendar (工作日历) deadlines are counted in: referrals must be handled and
//! sharing requests answered within so many *working* days, and which days those are is the
//! department's, not ours — weekends, public holidays and the weekend days worked in exchange
//! for them (调休) change every year. A pure type: the file is parsed once, questions about
//! dates are answered without I/O.
//!
//! ```toml
//! # calendar.toml, named by `[calendar] file = "calendar.toml"` in gateway.toml
//! utc_offset = "+08:00"                    # the local time days begin and end in
//! weekend = ["sat", "sun"]                 # the default
//! holidays = ["2026-10-01..2026-10-07"]    # days off (a day or an inclusive range)
//! workdays = ["2026-09-27", "2026-10-10"]  # weekend days that are worked
//! ```
//!
//! A deadline of *n* working days from a moment ends at midnight (local) after the *n*th working
//! day that follows the moment's own day: a request received on a Friday with 5 working days is
//! due by the end of the next Friday, whatever hour it came in.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use fedgate_catalog::toml_reader::{Source, Table};
use fedgate_catalog::Diagnostics;
use thiserror::Error;
use time::{Date, Duration, OffsetDateTime, Time, UtcOffset, Weekday};

/// The longest deadline we count to, in working days (ten years): a bound that keeps a
/// calendar with few working days from turning one question into a long walk.
pub const MAX_WORKING_DAYS: u32 = 2_600;

/// A calendar file that could not be used.
#[derive(Debug, Error)]
pub enum CalendarError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file has problems; each is located (`FILE:LINE:COL: message`).
    #[error("{0}")]
    Invalid(#[from] Diagnostics),
}

/// Which days are worked, in which local time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkCalendar {
    offset: UtcOffset,
    weekend: BTreeSet<u8>,
    holidays: BTreeSet<Date>,
    workdays: BTreeSet<Date>,
}

impl Default for WorkCalendar {
    /// Monday to Friday, China Standard Time (UTC+8), no holidays.
    fn default() -> Self {
        WorkCalendar {
            offset: UtcOffset::from_hms(8, 0, 0).unwrap_or(UtcOffset::UTC),
            weekend: [Weekday::Saturday, Weekday::Sunday]
                .iter()
                .map(|d| d.number_days_from_monday())
                .collect(),
            holidays: BTreeSet::new(),
            workdays: BTreeSet::new(),
        }
    }
}

const KEYS: &[&str] = &["utc_offset", "weekend", "holidays", "workdays"];

impl WorkCalendar {
    /// Reads and validates the calendar file at `path`.
    pub fn load(path: &Path) -> Result<WorkCalendar, CalendarError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| CalendarError::Read { path: path.to_owned(), source })?;
        WorkCalendar::parse(&path.display().to_string(), &text).map_err(CalendarError::Invalid)
    }

    /// Parses calendar text; `file` names it in messages.
    pub fn parse(file: &str, text: &str) -> Result<WorkCalendar, Diagnostics> {
        let mut src = Source::new(file, text);
        let Some(doc) = src.parse() else { return Err(Diagnostics(src.into_diagnostics())) };
        let root = Table::root(&doc);
        root.deny_unknown(&mut src, KEYS);
        let mut cal = WorkCalendar::default();
        if let Some((s, span)) = root.opt_str(&mut src, "utc_offset") {
            match parse_offset(s) {
                Some(offset) => cal.offset = offset,
                None => src.error(span, format!("`utc_offset` must look like \"+08:00\", not {s:?}")),
            }
        }
        if root.get("weekend").is_some() {
            cal.weekend.clear();
            for (s, span) in root.str_list(&mut src, "weekend") {
                match parse_weekday(s) {
                    Some(d) => {
                        cal.weekend.insert(d.number_days_from_monday());
                    }
                    None => src.error(span, format!("`weekend`: {s:?} is not a day (mon, tue, … sun)")),
                }
            }
            if cal.weekend.len() == 7 {
                src.error(root.key_span("weekend"), "`weekend` leaves no day of the week to work on");
            }
        }
        cal.holidays = dates(&root, &mut src, "holidays");
        cal.workdays = dates(&root, &mut src, "workdays");
        for day in cal.holidays.intersection(&cal.workdays) {
            src.error(
                root.key_span("workdays"),
                format!("{day} is listed both as a holiday and as a workday"),
            );
        }
        src.finish(cal)
    }

    /// The local time the calendar's days are in.
    pub fn offset(&self) -> UtcOffset {
        self.offset
    }

    /// True if `day` is worked: a weekday that is not a holiday, or a weekend day listed as worked.
    pub fn is_working_day(&self, day: Date) -> bool {
        if self.workdays.contains(&day) {
            return true;
        }
        !self.weekend.contains(&day.weekday().number_days_from_monday()) && !self.holidays.contains(&day)
    }

    /// The deadline `days` working days after `start`: midnight (local) ending the `days`th
    /// working day after `start`'s own day. Zero days ends `start`'s own day. Capped at
    /// [`MAX_WORKING_DAYS`].
    pub fn add_working_days(&self, start: OffsetDateTime, days: u32) -> OffsetDateTime {
        let mut day = start.to_offset(self.offset).date();
        let mut left = days.min(MAX_WORKING_DAYS);
        while left > 0 {
            day = next_day(day);
            if self.is_working_day(day) {
                left -= 1;
            }
        }
        self.start_of(next_day(day))
    }

    /// Working days from `from`'s day (excluded) to `to`'s day (included): how many working
    /// days an answer took, or how far past a deadline a case is. Zero when `to` is not later.
    pub fn working_days_between(&self, from: OffsetDateTime, to: OffsetDateTime) -> u32 {
        let end = to.to_offset(self.offset).date();
        let mut day = from.to_offset(self.offset).date();
        let mut count = 0u32;
        while day < end && count < MAX_WORKING_DAYS {
            day = next_day(day);
            if self.is_working_day(day) {
                count += 1;
            }
        }
        count
    }

    /// True once `now` has reached `deadline`.
    pub fn is_overdue(deadline: OffsetDateTime, now: OffsetDateTime) -> bool {
        now >= deadline
    }

    fn start_of(&self, day: Date) -> OffsetDateTime {
        day.with_time(Time::MIDNIGHT).assume_offset(self.offset)
    }
}

/// The calendar a node counts in: its `[calendar] file`, or Monday–Friday in UTC+8.
pub fn for_config(cfg: &crate::config::Config) -> Result<WorkCalendar, CalendarError> {
    cfg.calendar.as_deref().map_or_else(|| Ok(WorkCalendar::default()), WorkCalendar::load)
}

fn next_day(day: Date) -> Date {
    day.next_day().unwrap_or(day + Duration::days(1))
}

fn parse_offset(s: &str) -> Option<UtcOffset> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1i8, &s[1..]),
        b'-' => (-1i8, &s[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m) = (h.parse::<i8>().ok()?, m.parse::<i8>().ok()?);
    if !(0..=14).contains(&h) || !(0..=59).contains(&m) {
        return None;
    }
    UtcOffset::from_hms(sign * h, sign * m, 0).ok()
}

fn parse_weekday(s: &str) -> Option<Weekday> {
    Some(match s.to_ascii_lowercase().get(..3)? {
        "mon" => Weekday::Monday,
        "tue" => Weekday::Tuesday,
        "wed" => Weekday::Wednesday,
        "thu" => Weekday::Thursday,
        "fri" => Weekday::Friday,
        "sat" => Weekday::Saturday,
        "sun" => Weekday::Sunday,
        _ => return None,
    })
}

fn parse_date(s: &str) -> Option<Date> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(s.trim(), format).ok()
}

/// A list of `YYYY-MM-DD` days and inclusive `YYYY-MM-DD..YYYY-MM-DD` ranges (at most a year).
fn dates(root: &Table<'_, '_>, src: &mut Source<'_>, key: &str) -> BTreeSet<Date> {
    let mut out = BTreeSet::new();
    for (s, span) in root.str_list(src, key) {
        let (first, last) = match s.split_once("..") {
            Some((a, b)) => (parse_date(a), parse_date(b)),
            None => (parse_date(s), parse_date(s)),
        };
        match (first, last) {
            (Some(a), Some(b)) if a <= b && (b - a).whole_days() <= 366 => {
                let mut day = a;
                while day <= b {
                    out.insert(day);
                    day = next_day(day);
                }
            }
            (Some(_), Some(_)) => {
                src.error(span, format!("`{key}`: {s:?} must run forward and span at most a year"))
            }
            _ => src.error(
                span,
                format!("`{key}`: {s:?} is not a date (YYYY-MM-DD) or range (YYYY-MM-DD..YYYY-MM-DD)"),
            ),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, datetime};

    const CHINA_2026: &str = r#"
utc_offset = "+08:00"
holidays = ["2026-10-01..2026-10-07"]
workdays = ["2026-09-27", "2026-10-10"]
"#;

    #[test]
    fn the_default_works_monday_to_friday_in_china_standard_time() {
        let cal = WorkCalendar::default();
        assert!(cal.is_working_day(date!(2026 - 11 - 27)), "a Friday");
        assert!(!cal.is_working_day(date!(2026 - 11 - 28)), "a Saturday");
        // Friday 23:30 in Beijing is still Friday: five working days end with the next Friday.
        let due = cal.add_working_days(datetime!(2026-11-27 15:30 UTC), 5);
        assert_eq!(due, datetime!(2026-12-05 00:00 +8));
        // Saturday 00:30 in Beijing (Friday 16:30 UTC) already counts from Saturday.
        let due = cal.add_working_days(datetime!(2026-11-27 16:30 UTC), 5);
        assert_eq!(due, datetime!(2026-12-05 00:00 +8));
        let due = cal.add_working_days(datetime!(2026-11-26 12:00 +8), 1);
        assert_eq!(due, datetime!(2026-11-28 00:00 +8), "Thursday + 1 = end of Friday");
        assert_eq!(cal.add_working_days(datetime!(2026-11-26 12:00 +8), 0), datetime!(2026-11-27 00:00 +8));
    }

    #[test]
    fn holidays_and_worked_weekend_days_move_deadlines() {
        let cal = WorkCalendar::parse("calendar.toml", CHINA_2026).expect("valid");
        assert!(!cal.is_working_day(date!(2026 - 10 - 05)), "a Monday in the National Day holiday");
        assert!(cal.is_working_day(date!(2026 - 09 - 27)), "a Sunday worked in exchange");
        assert!(cal.is_working_day(date!(2026 - 10 - 10)), "a Saturday worked in exchange");
        // From Wednesday 30 September: the holiday week counts nothing; Thu 8, Fri 9, Sat 10
        // (worked), Mon 12, Tue 13.
        let due = cal.add_working_days(datetime!(2026-09-30 09:00 +8), 5);
        assert_eq!(due, datetime!(2026-10-14 00:00 +8));
        let last_moment = due - Duration::seconds(1);
        assert_eq!(cal.working_days_between(datetime!(2026-09-30 09:00 +8), last_moment), 5);
        assert_eq!(cal.working_days_between(datetime!(2026-09-30 09:00 +8), due), 6, "the 14th has begun");
        assert_eq!(cal.working_days_between(due, datetime!(2026-09-30 09:00 +8)), 0);
    }

    #[test]
    fn days_counted_between_moments_follow_the_calendar() {
        let cal = WorkCalendar::default();
        let fri = datetime!(2026-11-27 10:00 +8);
        assert_eq!(cal.working_days_between(fri, datetime!(2026-11-27 18:00 +8)), 0);
        assert_eq!(cal.working_days_between(fri, datetime!(2026-11-29 18:00 +8)), 0, "over the weekend");
        assert_eq!(cal.working_days_between(fri, datetime!(2026-11-30 08:00 +8)), 1);
        assert!(WorkCalendar::is_overdue(fri, fri));
        assert!(!WorkCalendar::is_overdue(fri, fri - Duration::seconds(1)));
    }

    #[test]
    fn a_custom_weekend_and_offset_are_honoured() {
        let cal =
            WorkCalendar::parse("c.toml", "utc_offset = \"-05:00\"\nweekend = [\"fri\", \"saturday\"]\n")
                .expect("valid");
        assert!(cal.is_working_day(date!(2026 - 11 - 29)), "Sunday is worked");
        assert!(!cal.is_working_day(date!(2026 - 11 - 27)), "Friday is not");
        assert_eq!(cal.offset(), UtcOffset::from_hms(-5, 0, 0).expect("offset"));
        let due = cal.add_working_days(datetime!(2026-11-26 12:00 -5), 1);
        assert_eq!(due, datetime!(2026-11-30 00:00 -5), "Thursday + 1 skips Friday and Saturday");
    }

    #[test]
    fn every_mistake_is_located_and_named() {
        let text = "utc_offset = \"8\"\nweekend = [\"mon\", \"funday\"]\nholidays = [\"2026-13-01\", \
                    \"2026-10-07..2026-10-01\"]\nworkdays = [\"2026-10-01\"]\nholiday = []\n";
        let err = WorkCalendar::parse("cal.toml", text).expect_err("invalid").to_string();
        for want in [
            "cal.toml:1:14: `utc_offset` must look like \"+08:00\"",
            "cal.toml:2:19: `weekend`: \"funday\" is not a day",
            "`holidays`: \"2026-13-01\" is not a date",
            "`holidays`: \"2026-10-07..2026-10-01\" must run forward",
            "cal.toml:5:1:",
        ] {
            assert!(err.contains(want), "missing {want:?} in:\n{err}");
        }
        let all = "weekend = [\"mon\",\"tue\",\"wed\",\"thu\",\"fri\",\"sat\",\"sun\"]\n";
        let err = WorkCalendar::parse("c.toml", all).expect_err("no working day").to_string();
        assert!(err.contains("leaves no day of the week to work on"), "{err}");
        let both = "holidays = [\"2026-10-01\"]\nworkdays = [\"2026-10-01\"]\n";
        let err = WorkCalendar::parse("c.toml", both).expect_err("both").to_string();
        assert!(err.contains("2026-10-01 is listed both as a holiday and as a workday"), "{err}");
    }

    #[test]
    fn a_calendar_with_almost_no_working_days_still_answers_quickly() {
        let text = "weekend = [\"mon\",\"tue\",\"wed\",\"thu\",\"fri\",\"sat\"]\n";
        let cal = WorkCalendar::parse("c.toml", text).expect("Sundays only");
        let start = datetime!(2026-11-27 10:00 +8);
        let due = cal.add_working_days(start, u32::MAX);
        assert_eq!(cal.working_days_between(start, due - Duration::seconds(1)), MAX_WORKING_DAYS);
        assert_eq!(due.weekday(), Weekday::Monday, "ends at the midnight after a Sunday");
    }
}
