//! Tests of the assignors: worked examples, then properties over random groups (members,
//! subscriptions with unknown topics, stale previous assignments, exclusions) for both assignors,
//! and the scale of a large group.
#![allow(clippy::unwrap_used)]
use super::*;
use proptest::prelude::*;

type Target = BTreeMap<String, BTreeSet<TopicPartition>>;

fn member(id: &str, topics: &[&str]) -> MemberSpec {
    MemberSpec {
        member_id: id.into(),
        topics: topics.iter().map(|t| t.to_string()).collect(),
    }
}

fn topics(counts: &[(&str, u32)]) -> BTreeMap<String, u32> {
    counts.iter().map(|(t, n)| (t.to_string(), *n)).collect()
}

fn tps(topic: &str, ps: impl IntoIterator<Item = u32>) -> BTreeSet<TopicPartition> {
    ps.into_iter().map(|p| (topic.to_string(), p)).collect()
}

fn run(
    a: Assignor,
    members: &[MemberSpec],
    parts: &BTreeMap<String, u32>,
    prev: &Target,
) -> Target {
    assign(a, members, parts, prev, &BTreeSet::new())
}

/// Who owns each partition.
fn owners(t: &Target) -> BTreeMap<&TopicPartition, &str> {
    t.iter()
        .flat_map(|(m, ps)| ps.iter().map(move |p| (p, m.as_str())))
        .collect()
}

/// Partitions of `next` whose owner is not their owner in `prev`.
fn moved(prev: &Target, next: &Target) -> usize {
    let before = owners(prev);
    owners(next)
        .iter()
        .filter(|(p, m)| before.get(*p) != Some(*m))
        .count()
}

#[test]
fn assignor_names() {
    assert_eq!(Assignor::DEFAULT, Assignor::Uniform);
    for a in [Assignor::Uniform, Assignor::Range] {
        assert_eq!(Assignor::from_name(a.name()), Some(a));
    }
    assert_eq!(Assignor::from_name("Range"), None);
    assert_eq!(Assignor::from_name("sticky"), None);
}

#[test]
fn range_splits_7_partitions_over_3_members_as_3_2_2() {
    let members = [
        member("c", &["t"]),
        member("a", &["t"]),
        member("b", &["t"]),
    ];
    let got = run(
        Assignor::Range,
        &members,
        &topics(&[("t", 7)]),
        &Target::new(),
    );
    let want: Target = [
        ("a".to_string(), tps("t", 0..3)),
        ("b".to_string(), tps("t", 3..5)),
        ("c".to_string(), tps("t", 5..7)),
    ]
    .into();
    assert_eq!(got, want);
}

#[test]
fn range_leaves_an_excluded_partition_out_without_shifting_the_others() {
    let members = [member("a", &["t", "u"]), member("b", &["t"])];
    let excluded = tps("t", [1]);
    let got = assign(
        Assignor::Range,
        &members,
        &topics(&[("t", 4), ("u", 2)]),
        &Target::new(),
        &excluded,
    );
    let mut a = tps("t", [0]);
    a.extend(tps("u", 0..2));
    assert_eq!(got["a"], a);
    assert_eq!(got["b"], tps("t", 2..4));
}

#[test]
fn uniform_join_moves_only_what_the_newcomer_gets_and_leave_only_what_the_leaver_had() {
    let parts = topics(&[("t", 8), ("u", 4)]);
    let three = [
        member("a", &["t", "u"]),
        member("b", &["t", "u"]),
        member("c", &["t", "u"]),
    ];
    let first = run(Assignor::Uniform, &three, &parts, &Target::new());
    assert!(first.values().all(|ps| ps.len() == 4), "{first:?}");

    let mut four = three.to_vec();
    four.push(member("d", &["t", "u"]));
    let joined = run(Assignor::Uniform, &four, &parts, &first);
    assert!(joined.values().all(|ps| ps.len() == 3), "{joined:?}");
    assert_eq!(moved(&first, &joined), 3);
    for m in ["a", "b", "c"] {
        assert!(joined[m].is_subset(&first[m]), "{m} only gave");
    }

    let left = run(Assignor::Uniform, &four[1..], &parts, &joined);
    assert!(left.values().all(|ps| ps.len() == 4), "{left:?}");
    assert_eq!(moved(&joined, &left), 3);
    for m in ["b", "c", "d"] {
        assert!(left[m].is_superset(&joined[m]), "{m} only took");
    }
}

#[test]
fn uniform_over_quota_gives_up_its_highest_partitions() {
    let members = [member("a", &["t"]), member("b", &["t"])];
    let prev: Target = [("a".to_string(), tps("t", 0..6))].into();
    let got = run(Assignor::Uniform, &members, &topics(&[("t", 6)]), &prev);
    assert_eq!(got["a"], tps("t", 0..3));
    assert_eq!(got["b"], tps("t", 3..6));
}

#[test]
fn unknown_topics_gone_members_and_stale_entries_are_ignored() {
    let members = [
        member("a", &["t", "nope"]),
        member("b", &["nope"]),
        member("c", &[]),
    ];
    let mut prev: Target = [
        ("gone".to_string(), tps("t", 0..2)),
        ("b".to_string(), tps("t", 0..2)),
    ]
    .into();
    prev.insert("a".into(), tps("t", [2, 9]));
    prev.get_mut("a").unwrap().extend(tps("u", [0]));
    for a in [Assignor::Uniform, Assignor::Range] {
        let got = run(a, &members, &topics(&[("t", 3), ("u", 1)]), &prev);
        let want: Target = [
            ("a".to_string(), tps("t", 0..3)),
            ("b".to_string(), BTreeSet::new()),
            ("c".to_string(), BTreeSet::new()),
        ]
        .into();
        assert_eq!(got, want, "{a:?}");
    }
}

#[test]
fn a_member_listed_twice_subscribes_to_both_lists() {
    let parts = topics(&[("t", 2), ("u", 2)]);
    let one = [
        member("a", &["t"]),
        member("b", &["t", "u"]),
        member("a", &["u"]),
    ];
    let other = [
        member("a", &["u"]),
        member("a", &["t"]),
        member("b", &["t", "u"]),
    ];
    for a in [Assignor::Uniform, Assignor::Range] {
        let got = run(a, &one, &parts, &Target::new());
        assert_eq!(got, run(a, &other, &parts, &Target::new()));
        assert_eq!(got.len(), 2);
        assert_eq!(got.values().map(BTreeSet::len).collect::<Vec<_>>(), [2, 2]);
    }
}

#[test]
fn uniform_heterogeneous_fills_the_constrained_topic_first_then_rebalances() {
    let members = [member("a", &["t"]), member("b", &["t", "u"])];
    let parts = topics(&[("t", 4), ("u", 4)]);
    let fresh = run(Assignor::Uniform, &members, &parts, &Target::new());
    assert_eq!(fresh["a"], tps("t", 0..4));
    assert_eq!(fresh["b"], tps("u", 0..4));

    // b held everything: it gives a its `t` partitions, highest first, until they are even.
    let mut all = tps("t", 0..4);
    all.extend(tps("u", 0..4));
    let prev: Target = [("b".to_string(), all)].into();
    assert_eq!(run(Assignor::Uniform, &members, &parts, &prev), fresh);
}

// ---- properties over random groups ----

/// A random group: up to 8 members (ids m0..m11), each subscribing to some of t0..t6 of which only
/// some exist (with 0 to 9 partitions); a previous assignment naming members that may be gone and
/// partitions that may not exist or be subscribed; some excluded partitions.
#[derive(Debug, Clone)]
struct Case {
    members: Vec<MemberSpec>,
    partitions: BTreeMap<String, u32>,
    previous: Target,
    excluded: BTreeSet<TopicPartition>,
}

fn tp() -> impl Strategy<Value = TopicPartition> {
    (0..7u8, 0..11u32).prop_map(|(t, p)| (format!("t{t}"), p))
}

/// With `homogeneous`, every member subscribes to every existing topic (some to a missing one too).
fn case(homogeneous: bool) -> impl Strategy<Value = Case> {
    let partitions = prop::collection::btree_map(0..5u8, 0..10u32, 2..5).prop_map(|m| {
        m.into_iter()
            .map(|(t, n)| (format!("t{t}"), n))
            .collect::<BTreeMap<String, u32>>()
    });
    let subscription = prop::collection::btree_set(0..6u8, 1..4);
    let members = prop::collection::btree_map(0..12u8, subscription, 0..10);
    let previous =
        prop::collection::btree_map(0..14u8, prop::collection::btree_set(tp(), 0..12), 0..8);
    let excluded = prop::collection::btree_set(tp(), 0..4);
    (partitions, members, previous, excluded).prop_map(
        move |(partitions, members, previous, excluded)| {
            let members = members
                .into_iter()
                .map(|(id, subs)| {
                    let mut topics: BTreeSet<String> =
                        subs.iter().map(|t| format!("t{t}")).collect();
                    if homogeneous {
                        topics.retain(|t| !partitions.contains_key(t));
                        topics.extend(partitions.keys().cloned());
                    }
                    MemberSpec {
                        member_id: format!("m{id}"),
                        topics,
                    }
                })
                .collect();
            let previous = previous
                .into_iter()
                .map(|(id, ps)| (format!("m{id}"), ps))
                .collect();
            Case {
                members,
                partitions,
                previous,
                excluded,
            }
        },
    )
}

fn run_case(a: Assignor, c: &Case) -> Target {
    assign(a, &c.members, &c.partitions, &c.previous, &c.excluded)
}

/// Every partition of a subscribed existing topic, excluded ones left out.
fn assignable(c: &Case) -> BTreeSet<TopicPartition> {
    let subscribed: BTreeSet<&String> = c.members.iter().flat_map(|m| &m.topics).collect();
    c.partitions
        .iter()
        .filter(|(t, _)| subscribed.contains(t))
        .flat_map(|(t, &n)| (0..n).map(move |p| (t.clone(), p)))
        .filter(|p| !c.excluded.contains(p))
        .collect()
}

fn subscribes(c: &Case, id: &str, topic: &str) -> bool {
    c.members
        .iter()
        .any(|m| m.member_id == id && m.topics.contains(topic))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The coverage of both assignors: every member has an entry, every assignable partition is
    /// given exactly once and to a subscriber of its topic, nothing else is given. Broken once by
    /// letting a previous owner keep a partition of a topic it no longer subscribes to (the
    /// `subscribes` check in `previous_owners` removed): the postcondition assert in `assign`
    /// fired; and once by ignoring `excluded`: this failed.
    #[test]
    fn every_assignable_partition_goes_to_exactly_one_subscriber(
        c in case(false),
        range in any::<bool>(),
    ) {
        let a = if range { Assignor::Range } else { Assignor::Uniform };
        let got = run_case(a, &c);
        let ids: BTreeSet<&String> = c.members.iter().map(|m| &m.member_id).collect();
        prop_assert_eq!(got.keys().collect::<BTreeSet<_>>(), ids);
        let given: Vec<&TopicPartition> = got.values().flatten().collect();
        let once: BTreeSet<TopicPartition> = given.iter().map(|p| (*p).clone()).collect();
        prop_assert_eq!(given.len(), once.len(), "a partition given twice");
        prop_assert_eq!(once, assignable(&c));
        for (m, ps) in &got {
            for (t, _) in ps {
                prop_assert!(subscribes(&c, m, t), "{} does not subscribe to {}", m, t);
            }
        }
    }

    /// Determinism: members are sorted by id before anything is decided, so their order in the
    /// input changes nothing. Broken once by numbering members in input order (the `by_id` map in
    /// `Problem::new` replaced by a Vec): this failed.
    #[test]
    fn the_order_of_members_changes_nothing(
        (c, shuffled) in case(false).prop_flat_map(|c| {
            let members = c.members.clone();
            (Just(c), Just(members).prop_shuffle())
        }),
        range in any::<bool>(),
    ) {
        let a = if range { Assignor::Range } else { Assignor::Uniform };
        let reordered = Case { members: shuffled, ..c.clone() };
        prop_assert_eq!(run_case(a, &c), run_case(a, &reordered));
    }

    /// Range against a model of Kafka's RangeAssignor: per topic, its subscribers by id get
    /// contiguous ranges, the first n % m one more; excluded partitions are left out in place.
    /// Broken once by splitting only the non-excluded partitions into ranges: this failed.
    #[test]
    fn range_gives_each_subscriber_its_contiguous_range(c in case(false)) {
        let got = run_case(Assignor::Range, &c);
        let owner = owners(&got);
        for (t, &n) in &c.partitions {
            let subs: BTreeSet<&String> = c
                .members
                .iter()
                .filter(|m| m.topics.contains(t))
                .map(|m| &m.member_id)
                .collect();
            if subs.is_empty() {
                continue;
            }
            let (base, extra) = (n as usize / subs.len(), n as usize % subs.len());
            let mut p = 0u32;
            for (k, m) in subs.iter().enumerate() {
                for _ in 0..base + usize::from(k < extra) {
                    let key = (t.clone(), p);
                    let want = (!c.excluded.contains(&key)).then_some(m.as_str());
                    prop_assert_eq!(owner.get(&key).copied(), want, "{:?}", key);
                    p += 1;
                }
            }
        }
    }

    /// Homogeneous uniform: every member gets floor or ceil of N/M, and it keeps the most previous
    /// ownership any balanced result can (the ceil quotas go to the members that held the most).
    /// Broken once by ignoring `previous` (every partition handed out fresh): this failed; and
    /// once by giving the ceil quotas by member id instead of by held count: this failed too.
    #[test]
    fn uniform_homogeneous_is_balanced_and_keeps_the_most(
        c in case(true),
        owners_of in prop::collection::vec(0..14u8, 60),
    ) {
        // A previous target that is a real assignment: one owner per partition (maybe gone).
        let mut c = c;
        c.previous = Target::new();
        for (k, p) in assignable(&c).into_iter().enumerate() {
            let id = format!("m{}", owners_of[k % owners_of.len()]);
            c.previous.entry(id).or_default().insert(p);
        }
        let got = run_case(Assignor::Uniform, &c);
        let (n, m) = (assignable(&c).len(), got.len());
        if m == 0 {
            return Ok(());
        }
        for ps in got.values() {
            let k = ps.len();
            prop_assert!(k == n / m || k == n.div_ceil(m), "{} of {} over {}", k, n, m);
        }
        // The most any balanced target keeps: the larger quotas to those that held the most.
        let mut held: Vec<usize> =
            got.keys().map(|id| c.previous.get(id).map_or(0, BTreeSet::len)).collect();
        held.sort_unstable_by(|a, b| b.cmp(a));
        let quota = |k: usize| n / m + usize::from(k < n % m);
        let best: usize = held.iter().enumerate().map(|(k, &h)| h.min(quota(k))).sum();
        prop_assert_eq!(n - moved(&c.previous, &got), best);
    }

    /// Homogeneous stickiness on join and leave: from a balanced target, a newcomer takes exactly
    /// its share and nothing else moves; a leaver's partitions move and nothing else. Broken once
    /// by ignoring `previous`: this failed.
    #[test]
    fn uniform_join_and_leave_move_the_minimum(
        c in case(true),
        newcomer in 0..12u8,
        leaver in any::<prop::sample::Index>(),
    ) {
        let fresh = Case { previous: Target::new(), ..c.clone() };
        let first = run_case(Assignor::Uniform, &fresh);
        let id = format!("m{newcomer}");
        if !first.contains_key(&id) {
            let topics = c.partitions.keys().cloned().collect();
            let mut members = c.members.clone();
            members.push(MemberSpec { member_id: id.clone(), topics });
            let c2 = Case { members, previous: first.clone(), ..c.clone() };
            let joined = run_case(Assignor::Uniform, &c2);
            prop_assert_eq!(moved(&first, &joined), joined[&id].len());
            // The newcomer held nothing, so the larger quotas went to the others.
            prop_assert_eq!(joined[&id].len(), assignable(&c2).len() / joined.len());
        }
        if !c.members.is_empty() {
            let mut members = c.members.clone();
            let gone = members.remove(leaver.index(members.len()));
            let c2 = Case { members, previous: first.clone(), ..c.clone() };
            let left = run_case(Assignor::Uniform, &c2);
            let had = first[&gone.member_id].len();
            prop_assert_eq!(moved(&first, &left), if left.is_empty() { 0 } else { had });
        }
    }

    /// Heterogeneous uniform: no partition could move to a subscriber of its topic at least two
    /// lighter than its owner. Broken once by skipping the rebalancing passes: this failed (and so
    /// did the debug assertion in `assert_balanced`, once that was switched off to see this one).
    #[test]
    fn uniform_leaves_no_partition_a_subscriber_two_lighter_could_take(c in case(false)) {
        let got = run_case(Assignor::Uniform, &c);
        for (m, ps) in &got {
            for (t, _) in ps {
                for other in c.members.iter().filter(|o| o.topics.contains(t)) {
                    let lighter = &other.member_id;
                    let why = format!("{lighter} could take {m}'s {t}");
                    prop_assert!(got[lighter].len() + 1 >= ps.len(), "{}", why);
                }
            }
        }
    }

    /// Stickiness of both uniform paths: a previous target that is already valid and balanced is
    /// kept whole, even one this assignor would not have chosen from scratch (here: the target
    /// computed with the member ids renamed so that they sort the other way, renamed back).
    /// Broken once by ignoring `previous` in the heterogeneous path: this failed (the same test
    /// with the target of the unchanged group as `previous` did not: a fresh run reproduces it).
    #[test]
    fn uniform_keeps_a_balanced_previous_target_whole(c in any::<bool>().prop_flat_map(case)) {
        let flip = |id: &str| {
            let n: u32 = id[1..].parse().unwrap();
            format!("{}{}", if id.starts_with('m') { 'x' } else { 'm' }, 99 - n)
        };
        let members = c
            .members
            .iter()
            .map(|m| MemberSpec { member_id: flip(&m.member_id), topics: m.topics.clone() })
            .collect();
        let flipped = Case { members, ..c.clone() };
        let other: Target = run_case(Assignor::Uniform, &flipped)
            .into_iter()
            .map(|(id, ps)| (flip(&id), ps))
            .collect();
        let again = Case { previous: other.clone(), ..c.clone() };
        prop_assert_eq!(run_case(Assignor::Uniform, &again), other);
    }
}
