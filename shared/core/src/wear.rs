//! `wear`: what the drain does with a message SQS hands out again and again. SQS counts every
//! receive and, past the buffer's `maxReceiveCount`, moves the message to the dead-letter queue
//! with no reason. The drain settles everything it receives (done, re-queued or dead-lettered
//! with a reason), so a message only comes back when the drain holding it ended before settling:
//! killed, timed out, out of memory. A few such ends in a row must not dead-letter healthy
//! records, yet a message that ends every drain that takes it (a crash loop) must stop somewhere,
//! with a reason.
//!
//! So a message near its last delivery is *renewed* — sent again as a new message carrying the
//! receives so far, the original deleted — and one received [`CRASH_LOOP_FACTOR`] times the
//! limit across its copies is dead-lettered, saying so.

/// Receives across a message's copies, as a multiple of `maxReceiveCount`, after which it is
/// taken for a crash loop.
pub const CRASH_LOOP_FACTOR: u32 = 5;

/// What to do with a message on receive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wear {
    /// Take it as usual.
    Fresh,
    /// Send a copy carrying `receives` (its copies' receives so far), delete this one.
    Renew { receives: u32 },
    /// Dead-letter it with the reason.
    DeadLetter(String),
}

/// Decides for a message SQS handed out for the `receive_count`-th time, whose earlier copies
/// were received `carried` times, on a buffer that dead-letters past `max_receive_count`
/// (`None`: no redrive policy, nothing to fear). Renewing needs room: with a limit below 3 a
/// message would be renewed at every receive, so the limit the operator chose stands.
pub fn wear(receive_count: u32, carried: u32, max_receive_count: Option<u32>) -> Wear {
    let Some(max) = max_receive_count.filter(|m| *m >= 3) else {
        return Wear::Fresh;
    };
    let receives = carried.saturating_add(receive_count);
    if receives >= max.saturating_mul(CRASH_LOOP_FACTOR) {
        return Wear::DeadLetter(format!(
            "received {receives} times and never settled: every drain that took it ended first \
             (killed, timed out or out of memory) — look for a crash on this message"
        ));
    }
    if receive_count.saturating_add(1) >= max {
        Wear::Renew { receives }
    } else {
        Wear::Fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_renewed_before_its_last_delivery() {
        for n in 1..=8 {
            assert_eq!(wear(n, 0, Some(10)), Wear::Fresh);
        }
        assert_eq!(wear(9, 0, Some(10)), Wear::Renew { receives: 9 });
        assert_eq!(wear(10, 9, Some(10)), Wear::Renew { receives: 19 });
    }

    #[test]
    fn a_crash_loop_ends_in_the_dlq_with_its_reason() {
        assert_eq!(wear(9, 36, Some(10)), Wear::Renew { receives: 45 });
        match wear(9, 41, Some(10)) {
            Wear::DeadLetter(reason) => assert!(reason.contains("received 50 times")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn without_a_redrive_policy_or_room_to_renew_nothing_changes() {
        assert_eq!(wear(1000, 0, None), Wear::Fresh);
        assert_eq!(wear(2, 0, Some(2)), Wear::Fresh);
        assert_eq!(
            wear(u32::MAX, u32::MAX, Some(10)),
            wear(u32::MAX, 0, Some(10))
        );
    }
}
