//! Sharing governance (政务数据共享条例): sharing requests and their answers with deadlines,
//! and the grants approvals write.
//!
//! - [`request`]: the pure core: what each side signs, intake, approvals as grants.
//! - [`stats`]: usage statistics per dataset and peer from the audit log and the stores.
//! - [`store`]: both sides' requests, durably (`state_dir/requests.db`), and the grants file the
//!   gateway manages from the approvals (`state_dir/approved-grants.toml`).
//!
//! - [`objection`]: objections (数据异议), pure: what each side signs, intake, the marker set.
//! - [`objection_store`]: both sides' objections, durably (`state_dir/objections.db`).
//!
//! The QUIC driver is [`crate::quic::request`], the local API [`crate::api_requests`], the CLI
//! [`crate::request_cli`].

pub mod objection;
pub mod objection_source;
pub mod objection_store;
pub mod request;
pub mod stats;
pub mod store;

/// The moment an answer to a request received at `received` (Unix seconds) is due: the end of
/// the `days`th working day after the day it arrived, in `calendar`. 0 days is due at once
/// (`[requests] answer_days = 0`, for drills: every unanswered request is overdue).
pub fn answer_deadline(calendar: &crate::calendar::WorkCalendar, received: i64, days: u32) -> i64 {
    if days == 0 {
        return received;
    }
    match time::OffsetDateTime::from_unix_timestamp(received) {
        Ok(t) => calendar.add_working_days(t, days).unix_timestamp(),
        Err(_) => received,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_count_working_days_in_the_calendar() {
        let cal = crate::calendar::WorkCalendar::default();
        // 2026-11-27 10:00 +08:00 is a Friday: five working days end with Friday 2026-12-04.
        let friday = time::macros::datetime!(2026-11-27 10:00 +8).unix_timestamp();
        let end = time::macros::datetime!(2026-12-05 00:00 +8).unix_timestamp();
        assert_eq!(answer_deadline(&cal, friday, 5), end);
        assert_eq!(answer_deadline(&cal, friday, 0), friday, "0 days: due at once");
    }
}
