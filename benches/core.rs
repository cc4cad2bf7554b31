//! Criterion benchmarks of the pure core's hot paths: a message validated and encoded to its
//! frame, the registry's routing lookups (user, role, broadcast) with 100k connections
//! registered, registry insert/remove, and Presence on a topic of 100k subscribers (the
//! counts, a 1,000-entry page, and the memory a subscriber costs). Not run by `cargo test` or CI; run with
//! `cargo bench --bench core` (figures in docs/benchmarks.md).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use boundary_realtime::core::event::Event;
use boundary_realtime::core::message::{self, MessageInput};
use boundary_realtime::core::native;
use boundary_realtime::core::registry::{Conn, ConnInfo, Offer, Outbox, Registry, Target};
use boundary_realtime::core::topic_table::{HistoryRead, JoinStart, Topics};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

/// An outbox that only counts what it is offered: the bench measures the lookup and the
/// per-recipient work of the registry, not a queue.
#[derive(Default)]
struct Counting(AtomicU64);

impl Outbox for Counting {
    type Item = Arc<String>;
    fn offer(&self, _frame: &Arc<String>) -> Offer {
        self.0.fetch_add(1, Ordering::Relaxed);
        Offer::Queued
    }
    fn close_from(
        &self,
        _code: u16,
        _reason: &str,
        _origin: boundary_realtime::core::close::Origin,
    ) {
    }
    fn ping(&self) {}
}

const CONNS: u64 = 100_000;
/// 100k connections: 50k users with two each, 100 roles of 1,000 connections.
fn conn(seq: u64) -> Arc<Conn<Counting>> {
    Arc::new(Conn::new(
        ConnInfo {
            id: format!("bench.{seq:016x}"),
            seq,
            user_id: format!("user-{}", seq / 2),
            roles: vec![format!("role-{}", seq % 100)],
            topic_patterns: Vec::new(),
            metadata: BTreeMap::new(),
            connected_at_ms: 0,
            remote_addr: "127.0.0.1:1".into(),
            user_agent: String::new(),
            protocol: Default::default(),
        },
        None,
        Counting::default(),
    ))
}

fn registry() -> Registry<Counting> {
    let r = Registry::new();
    for seq in 0..CONNS {
        r.insert(conn(seq));
    }
    r
}

fn encoding(c: &mut Criterion) {
    let payload = format!(
        r#"{{"order":42,"status":"shipped","note":"{}"}}"#,
        "x".repeat(50)
    );
    let mut g = c.benchmark_group("frame");
    g.throughput(Throughput::Elements(1));
    g.bench_function("validate_and_encode_100b", |b| {
        b.iter(|| {
            let input = MessageInput {
                kind: "order.updated",
                payload_json: black_box(&payload),
                id: "",
            };
            let valid = message::validate("message", input, 65_536).expect("valid");
            let event = Event::Message(valid.to_message("m-1", 1_732_000_000_000));
            black_box(native::event(&event))
        })
    });
    g.finish();
}

fn routing(c: &mut Criterion) {
    let r = registry();
    let frame = Arc::new(String::from(r#"{"type":"t","payload":{}}"#));
    let mut g = c.benchmark_group("route_100k");
    g.throughput(Throughput::Elements(1));
    g.bench_function("user_2_conns", |b| {
        let mut n = 0u64;
        b.iter(|| {
            n = (n + 7919) % (CONNS / 2);
            let user = format!("user-{n}");
            black_box(r.deliver(Target::User(&user), &frame).queued)
        })
    });
    g.throughput(Throughput::Elements(1000));
    g.bench_function("role_1000_conns", |b| {
        b.iter(|| black_box(r.deliver(Target::Role("role-42"), &frame).queued))
    });
    g.throughput(Throughput::Elements(CONNS));
    g.sample_size(20);
    g.bench_function("broadcast_100k_conns", |b| {
        b.iter(|| black_box(r.deliver(Target::All, &frame).queued))
    });
    g.finish();
}

fn insert_remove(c: &mut Criterion) {
    let r = registry();
    let mut g = c.benchmark_group("registry_100k");
    g.throughput(Throughput::Elements(1));
    let mut next = CONNS;
    g.bench_function("insert_then_remove", |b| {
        b.iter_batched(
            || {
                next += 1;
                conn(next)
            },
            |c| {
                let seq = c.info.seq;
                r.insert(c);
                black_box(r.remove(seq))
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// The system allocator, counting the bytes live: what a structure costs, whatever the
/// allocator keeps around.
struct Counted;

static LIVE_BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is added.
unsafe impl std::alloc::GlobalAlloc for Counted {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counted = Counted;

fn presence(c: &mut Criterion) {
    let conns: Vec<_> = (0..CONNS).map(conn).collect();
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let t: Topics<Counting> = Topics::new();
    for c in &conns {
        let JoinStart::Joining(ticket) = t.begin_join("room", c, 0).expect("joins") else {
            unreachable!("each connection joins once")
        };
        let read = HistoryRead {
            epoch: "E".into(),
            latest: 0,
            pubs: Vec::new(),
            complete: true,
        };
        t.finish_join(
            ticket,
            read,
            None,
            |_, _, _| None,
            |_, _| Arc::new(String::new()),
        );
    }
    let cost = LIVE_BYTES.load(Ordering::Relaxed).saturating_sub(before);
    eprintln!(
        "presence: 100k subscribers of one topic (50k users) cost {} KiB in the topic table, {:.0} bytes each",
        cost / 1024,
        cost as f64 / CONNS as f64
    );
    assert_eq!(t.counts("room"), (CONNS, CONNS / 2));
    let mut g = c.benchmark_group("presence_100k");
    g.bench_function("counts", |b| {
        b.iter(|| black_box(t.counts(black_box("room"))))
    });
    g.bench_function("page_1000_mid", |b| {
        b.iter(|| black_box(t.page("room", None, Some(CONNS / 2), 1000).items.len()))
    });
    g.finish();
}

criterion_group!(benches, encoding, routing, insert_remove, presence);
criterion_main!(benches);
