//! The assignors at the scale the coordinator must handle: 1000 members over 10 000 partitions,
//! in several subscription shapes, from scratch, from everything piled on one member, and after a
//! leave. Ignored by default (a debug build is slow and timing is noisy);
//! `cargo test --release -p sluice-broker --lib scale -- --ignored --nocapture` prints the times
//! (a measurement to read, not a check: no test fails on wall-clock time) and checks the results.
#![allow(clippy::unwrap_used)]
use super::*;
use std::time::{Duration, Instant};

type Target = BTreeMap<String, BTreeSet<TopicPartition>>;

fn topics(count: u32, partitions: u32) -> BTreeMap<String, u32> {
    (0..count)
        .map(|t| (format!("topic-{t:04}"), partitions))
        .collect()
}

/// 1000 members; member `m` subscribes to topic `t` of `0..topics` when `subscribes(m, t)`.
fn members(topics: u64, subscribes: impl Fn(u64, u64) -> bool) -> Vec<MemberSpec> {
    (0..1000)
        .map(|m| MemberSpec {
            member_id: format!("member-{m:04}"),
            topics: (0..topics)
                .filter(|&t| subscribes(m, t))
                .map(|t| format!("topic-{t:04}"))
                .collect(),
        })
        .collect()
}

/// A fixed pseudo-random bit per (member, topic).
fn hash(m: u64, t: u64) -> u64 {
    (m * 2_654_435_761 + t * 40_503 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

fn moved(prev: &Target, next: &Target) -> usize {
    let before: BTreeMap<&TopicPartition, &String> = prev
        .iter()
        .flat_map(|(m, ps)| ps.iter().map(move |p| (p, m)))
        .collect();
    next.iter()
        .flat_map(|(m, ps)| ps.iter().map(move |p| (p, m)))
        .filter(|(p, m)| before.get(p) != Some(m))
        .count()
}

#[test]
#[ignore]
fn scale_1000_members_10000_partitions() {
    let none = BTreeSet::new();
    let shapes = [
        ("homogeneous", topics(100, 100), members(100, |_, _| true)),
        (
            "half the topics each",
            topics(100, 100),
            members(100, |m, t| hash(m, t) >> 63 == 0),
        ),
        (
            "3 of 1000 topics each",
            topics(1000, 10),
            members(1000, |m, t| hash(m, t).is_multiple_of(333)),
        ),
        (
            "half on one topic only",
            topics(100, 100),
            members(100, |m, t| t == 0 || m >= 500),
        ),
    ];
    for (name, parts, members) in &shapes {
        let (fresh, t_fresh) =
            timed(|| assign(Assignor::Uniform, members, parts, &Target::new(), &none));
        let mut piled = Target::new();
        for (_, ps) in fresh {
            piled.entry("member-0999".into()).or_default().extend(ps);
        }
        let (balanced, t_piled) =
            timed(|| assign(Assignor::Uniform, members, parts, &piled, &none));
        let (left, t_leave) =
            timed(|| assign(Assignor::Uniform, &members[1..], parts, &balanced, &none));
        let (_, t_range) = timed(|| assign(Assignor::Range, members, parts, &Target::new(), &none));
        println!(
            "{name}: fresh {t_fresh:?}, all on one {t_piled:?}, a leave {t_leave:?} \
             ({} of {} moved, the leaver had {}), range {t_range:?}",
            moved(&balanced, &left),
            balanced.values().map(BTreeSet::len).sum::<usize>(),
            balanced["member-0000"].len(),
        );
    }
}
