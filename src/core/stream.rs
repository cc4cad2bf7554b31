//! User streams' names. A user's stream (section 7 of the protocol) is a second kind of stream
//! beside a topic, on the same path: the broker keeps its offset, epoch, history and
//! idempotency like a topic's, and this node's topic table joins the user's connections to it,
//! so resume at connect is a topic join (a connection whose stream is empty is parked until
//! its first message: `topic_table/park.rs`). To share that machinery without ever being mistaken
//! for a topic, its name is `#` and the user id: no topic name can hold `#`
//! ([`super::topic::validate_name`]), so no client or backend can name one, and the places
//! that show topics (Connection.topics, Presence, events, Stats) skip such names.
//!
//! Pure.

use super::CoreError;

/// What starts a user stream's name (and the Centrifugo personal channel's, which is the same).
pub const USER_MARK: char = '#';

/// The longest epoch a resuming client may send.
pub const MAX_EPOCH_LEN: usize = 64;

/// The stream name of `user`'s direct messages.
pub fn of_user(user: &str) -> String {
    let mut s = String::with_capacity(user.len() + 1);
    s.push(USER_MARK);
    s.push_str(user);
    s
}

/// The user whose stream `name` is, or `None` for a topic.
pub fn user_of(name: &str) -> Option<&str> {
    name.strip_prefix(USER_MARK)
}

/// Whether `name` is a topic (not a user stream): what listings and counts show.
pub fn is_topic(name: &str) -> bool {
    !name.starts_with(USER_MARK)
}

/// An epoch as a number, when it is one the stores make (8 lowercase hex digits): what a
/// compact record of a stream's epoch keeps. `None` for any other text.
pub fn epoch_number(epoch: &str) -> Option<u32> {
    let digits = epoch.len() == 8
        && epoch
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    digits
        .then(|| u32::from_str_radix(epoch, 16).ok())
        .flatten()
}

/// The epoch text of [`epoch_number`]'s number.
pub fn epoch_text(n: u32) -> String {
    format!("{n:08x}")
}

/// Where a reconnecting client says it stands in its user stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    pub offset: u64,
    pub epoch: String,
}

/// Reads `since` and `epoch` as a client sends them (query parameters, or the first frame's
/// `since` object): both or neither; `since` a non-negative integer; `epoch` at most
/// [`MAX_EPOCH_LEN`] characters. The error names what was wrong.
pub fn resume(since: Option<&str>, epoch: Option<&str>) -> Result<Option<Resume>, CoreError> {
    match (since, epoch) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(CoreError::invalid("epoch", "is required with since")),
        (None, Some(_)) => Err(CoreError::invalid("since", "is required with epoch")),
        (Some(s), Some(e)) => {
            let offset = s.parse::<u64>().map_err(|_| {
                CoreError::invalid("since", "must be a non-negative integer (an offset)")
            })?;
            if e.chars().count() > MAX_EPOCH_LEN {
                return Err(CoreError::invalid(
                    "epoch",
                    format!("is longer than {MAX_EPOCH_LEN} characters"),
                ));
            }
            Ok(Some(Resume {
                offset,
                epoch: e.to_owned(),
            }))
        }
    }
}

/// [`resume`] from an upgrade's query string (`?token=...&since=17&epoch=e1`).
pub fn resume_from_query(query: Option<&str>) -> Result<Option<Resume>, CoreError> {
    let Some(q) = query else {
        return Ok(None);
    };
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q)
        .map_err(|_| CoreError::invalid("query", "is not a valid query string"))?;
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    resume(get("since"), get("epoch"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_stream_is_never_a_topic() {
        let s = of_user("alice");
        assert_eq!(s, "#alice");
        assert_eq!(user_of(&s), Some("alice"));
        assert!(!is_topic(&s));
        assert!(is_topic("orders:1"));
        assert_eq!(user_of("orders:1"), None);
        assert!(super::super::topic::validate_name("topic", &s).is_err());
    }

    #[test]
    fn resume_needs_both_values_well_formed() {
        assert_eq!(resume(None, None).unwrap(), None);
        assert_eq!(
            resume(Some("17"), Some("e1")).unwrap(),
            Some(Resume {
                offset: 17,
                epoch: "e1".into()
            })
        );
        let msg = |r: Result<Option<Resume>, CoreError>| r.unwrap_err().to_string();
        assert!(msg(resume(Some("1"), None)).contains("epoch"));
        assert!(msg(resume(None, Some("e"))).contains("since"));
        assert!(msg(resume(Some("-1"), Some("e"))).contains("non-negative"));
        assert!(msg(resume(Some("x"), Some("e"))).contains("since"));
        let long = "e".repeat(65);
        assert!(msg(resume(Some("1"), Some(&long))).contains("64"));
        assert!(resume(Some("0"), Some(&"e".repeat(64))).is_ok());
    }

    #[test]
    fn resume_is_read_from_the_query() {
        assert_eq!(resume_from_query(None).unwrap(), None);
        assert_eq!(resume_from_query(Some("token=t")).unwrap(), None);
        assert_eq!(
            resume_from_query(Some("token=t&since=0&epoch=a%20b")).unwrap(),
            Some(Resume {
                offset: 0,
                epoch: "a b".into()
            })
        );
        assert!(resume_from_query(Some("token=t&since=3")).is_err());
    }

    #[test]
    fn store_made_epochs_round_trip_as_numbers_and_nothing_else_does() {
        assert_eq!(epoch_number("00ab12ff"), Some(0x00ab_12ff));
        assert_eq!(epoch_text(0x00ab_12ff), "00ab12ff");
        for other in ["", "ab12", "00AB12FF", "00ab12ff0", "0xab12ff", "zzzzzzzz"] {
            assert_eq!(epoch_number(other), None, "{other:?}");
        }
    }
}
