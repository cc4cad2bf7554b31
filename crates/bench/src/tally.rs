//! The load tool's pure counting: the payload it sends (a sequence number and a send time,
//! padded to a size), reading them back out of a delivered frame without a JSON parse, and
//! per-connection order tracking. No I/O, no clock: times are passed in.

/// The payload of call `seq` sent at `sent_ns` (Unix nanoseconds), padded with `x` so the
/// JSON is at least `bytes` long: `{"seq":7,"sent_ns":1732...,"pad":"xxxx"}`.
pub fn payload(seq: u64, sent_ns: u64, bytes: usize) -> String {
    let mut out = format!("{{\"seq\":{seq},\"sent_ns\":{sent_ns},\"pad\":\"");
    let pad = bytes.saturating_sub(out.len() + 2);
    out.extend(std::iter::repeat_n('x', pad));
    out.push_str("\"}");
    out
}

/// The `(seq, sent_ns)` a delivered frame carries, if it is one of ours. The server forwards
/// the payload as written, so the keys appear exactly as [`payload`] wrote them.
pub fn parse(frame: &str) -> Option<(u64, u64)> {
    // Fast path: our server writes `type` then `payload` first.
    if let Some(rest) = frame.strip_prefix(FRAME_PREFIX) {
        let (seq, rest) = leading_number(rest)?;
        let (sent, _) = leading_number(rest.strip_prefix(SENT_KEY)?)?;
        return Some((seq, sent));
    }
    let (seq, _) = leading_number(after(frame, SEQ_KEY)?)?;
    let (sent, _) = leading_number(after(frame, SENT_KEY)?)?;
    Some((seq, sent))
}

/// [`parse`] for a binary frame (the Centrifugo Protobuf pushes carry the message object's
/// JSON bytes inside): from our payload's first key to the end of its valid UTF-8.
pub fn parse_bytes(frame: &[u8]) -> Option<(u64, u64)> {
    let key = SEQ_KEY.as_bytes();
    let at = frame.windows(key.len()).position(|w| w == key)?;
    let rest = &frame[at..];
    let text = match std::str::from_utf8(rest) {
        Ok(t) => t,
        // Valid up to there by the error's own account.
        Err(e) => std::str::from_utf8(&rest[..e.valid_up_to()]).ok()?,
    };
    parse(text)
}

const FRAME_PREFIX: &str = "{\"type\":\"bench\",\"payload\":{\"seq\":";
const SEQ_KEY: &str = "{\"seq\":";
const SENT_KEY: &str = ",\"sent_ns\":";

fn after<'a>(s: &'a str, key: &str) -> Option<&'a str> {
    s.find(key).map(|at| &s[at + key.len()..])
}

/// The decimal number `s` starts with, and what follows it.
fn leading_number(s: &str) -> Option<(u64, &str)> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).take(20).count();
    let n = s[..digits].parse().ok()?;
    Some((n, &s[digits..]))
}

/// How one delivery relates to the ones before it on the same connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    InOrder,
    /// A sequence number lower than one already seen.
    OutOfOrder,
    /// The same sequence number as the previous delivery.
    Duplicate,
}

/// Order tracking for one connection: sequence numbers must rise (a connection gets a
/// subsequence of the calls, in the order they were made).
#[derive(Debug, Default, Clone)]
pub struct Order {
    last: Option<u64>,
}

impl Order {
    pub fn see(&mut self, seq: u64) -> Seen {
        match self.last {
            Some(last) if seq == last => Seen::Duplicate,
            Some(last) if seq < last => Seen::OutOfOrder,
            _ => {
                self.last = Some(seq);
                Seen::InOrder
            }
        }
    }
}

/// Counts across connections (one shard of them; shards are summed for the report).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Frames of ours received, duplicates included.
    pub received: u64,
    pub out_of_order: u64,
    pub duplicates: u64,
    /// The latest receive time seen (Unix nanoseconds).
    pub last_ns: u64,
}

impl Counts {
    pub fn record(&mut self, seen: Seen, received_ns: u64) {
        self.received += 1;
        match seen {
            Seen::InOrder => {}
            Seen::OutOfOrder => self.out_of_order += 1,
            Seen::Duplicate => self.duplicates += 1,
        }
        self.last_ns = self.last_ns.max(received_ns);
    }

    pub fn add(&mut self, other: &Counts) {
        self.received += other.received;
        self.out_of_order += other.out_of_order;
        self.duplicates += other.duplicates;
        self.last_ns = self.last_ns.max(other.last_ns);
    }

    /// Distinct deliveries: what counts against the expected number.
    pub fn unique(&self) -> u64 {
        self.received - self.duplicates
    }

    /// Expected deliveries that did not arrive.
    pub fn lost(&self, expected: u64) -> u64 {
        expected.saturating_sub(self.unique())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_inside_a_delivered_frame() {
        let p = payload(42, 1_732_000_000_123_456_789, 100);
        assert_eq!(p.len(), 100);
        let v: serde_json::Value = serde_json::from_str(&p).unwrap();
        assert_eq!(v["seq"], 42);
        let frame = format!(r#"{{"type":"bench","payload":{p},"id":"m1","ts":1}}"#);
        assert_eq!(parse(&frame), Some((42, 1_732_000_000_123_456_789)));
        // Another field order still parses (the slow path).
        let frame = format!(r#"{{"id":"m1","payload":{p},"type":"bench"}}"#);
        assert_eq!(parse(&frame), Some((42, 1_732_000_000_123_456_789)));
    }

    #[test]
    fn small_sizes_still_give_a_valid_payload() {
        let p = payload(1, 2, 0);
        assert_eq!(p, r#"{"seq":1,"sent_ns":2,"pad":""}"#);
        assert_eq!(parse(&p), Some((1, 2)));
    }

    #[test]
    fn frames_that_are_not_ours_are_ignored() {
        assert_eq!(parse(r#"{"op":"pong"}"#), None);
        assert_eq!(parse(r#"{"seq":"x","sent_ns":1}"#), None);
    }

    #[test]
    fn order_tells_in_order_from_reordered_and_repeated() {
        let mut o = Order::default();
        assert_eq!(o.see(1), Seen::InOrder);
        assert_eq!(o.see(3), Seen::InOrder);
        assert_eq!(o.see(3), Seen::Duplicate);
        assert_eq!(o.see(2), Seen::OutOfOrder);
        assert_eq!(o.see(4), Seen::InOrder);
    }

    #[test]
    fn counts_sum_and_subtract_duplicates_from_losses() {
        let mut a = Counts::default();
        a.record(Seen::InOrder, 10);
        a.record(Seen::Duplicate, 30);
        let mut b = Counts::default();
        b.record(Seen::OutOfOrder, 20);
        a.add(&b);
        assert_eq!(a.received, 3);
        assert_eq!(a.unique(), 2);
        assert_eq!(a.lost(5), 3);
        assert_eq!(a.lost(1), 0);
        assert_eq!(a.last_ns, 30);
        assert_eq!((a.out_of_order, a.duplicates), (1, 1));
    }
}
