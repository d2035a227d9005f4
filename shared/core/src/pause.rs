//! Pausing a pair: an operator stops a destination from being written while the pair's buffer
//! keeps every change, then resumes and the backlog replays. The mark is a tag on the pair's
//! buffer queue: the drain already holds the buffer, reads the mark with one call per
//! invocation, and `ferry pause` sets it the same way on `ferry local up` and on AWS.
//!
//! Only the destination side pauses. The source side (the stream trigger) is bounded by the
//! stream's 24 hours of retention, after which changes are lost; the buffer keeps them for its
//! retention period (up to 14 days), which is why pausing belongs there.

/// The buffer tag that pauses its pair: `<since, ms since the epoch> <note>`.
pub const TAG_PAUSED: &str = "ferry:paused";

/// SQS tag values are at most 256 characters.
const TAG_VALUE_MAX: usize = 256;

/// A pair's pause, as its tag says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pause {
    /// When it was paused; `None` when the tag was set by hand without a time.
    pub since_ms: Option<u64>,
    /// Who paused it and why, as the operator wrote it.
    pub note: String,
}

impl Pause {
    pub fn new(since_ms: u64, note: &str) -> Pause {
        Pause {
            since_ms: Some(since_ms),
            note: note.trim().to_string(),
        }
    }

    /// The tag's value, the note cut to fit.
    pub fn tag_value(&self) -> String {
        let since = self.since_ms.map(|s| s.to_string()).unwrap_or_default();
        let mut value = format!("{since} {}", self.note);
        if value.len() > TAG_VALUE_MAX {
            let mut cut = TAG_VALUE_MAX;
            while !value.is_char_boundary(cut) {
                cut -= 1;
            }
            value.truncate(cut);
        }
        value.trim().to_string()
    }

    /// Any value pauses: a tag set by hand (no time, free text) is still a pause, only its
    /// start is unknown.
    pub fn parse(value: &str) -> Pause {
        let value = value.trim();
        let (first, rest) = value.split_once(' ').unwrap_or((value, ""));
        match first.parse::<u64>() {
            Ok(since) => Pause {
                since_ms: Some(since),
                note: rest.trim().to_string(),
            },
            Err(_) => Pause {
                since_ms: None,
                note: value.to_string(),
            },
        }
    }

    /// How long it has been paused.
    pub fn paused_for_ms(&self, now_ms: u64) -> Option<u64> {
        self.since_ms.map(|s| now_ms.saturating_sub(s))
    }

    /// How long until the first change held back by the pause would expire from the buffer
    /// (its retention counts from when it was sent, at the latest the pause's start for what
    /// waited in the buffer then). Zero once records may already have expired.
    pub fn expires_in_ms(&self, retention_s: u64, now_ms: u64) -> Option<u64> {
        let paused_for = self.paused_for_ms(now_ms)?;
        Some(retention_s.saturating_mul(1000).saturating_sub(paused_for))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_reads_back_from_its_tag() {
        let p = Pause::new(1_700_000_000_000, " maintenance of eu-west-1 ");
        assert_eq!(p.tag_value(), "1700000000000 maintenance of eu-west-1");
        assert_eq!(Pause::parse(&p.tag_value()), p);
        assert_eq!(
            Pause::parse("1700000000000"),
            Pause::new(1_700_000_000_000, "")
        );
    }

    #[test]
    fn a_tag_set_by_hand_still_pauses_with_its_start_unknown() {
        let p = Pause::parse("yes, ops ticket 42");
        assert_eq!(p.since_ms, None);
        assert_eq!(p.note, "yes, ops ticket 42");
        assert_eq!(p.expires_in_ms(1_209_600, 5), None);
    }

    #[test]
    fn a_long_note_is_cut_to_a_tag_value_on_a_char_boundary() {
        let p = Pause::new(1, &"é".repeat(300));
        let v = p.tag_value();
        assert!(v.len() <= 256);
        assert!(Pause::parse(&v).note.starts_with('é'));
    }

    #[test]
    fn time_left_counts_down_from_the_retention_and_stops_at_zero() {
        let p = Pause::new(1_000, "");
        let day_ms = 86_400_000;
        assert_eq!(
            p.expires_in_ms(14 * 86_400, 1_000 + day_ms),
            Some(13 * day_ms)
        );
        assert_eq!(p.expires_in_ms(60, 1_000 + day_ms), Some(0));
        assert_eq!(p.paused_for_ms(0), Some(0));
    }
}
