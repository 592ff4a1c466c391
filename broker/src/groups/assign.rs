//! The consumer-group assignors: from a group's members, their subscriptions, the topics and the
//! previous target assignment, the next target assignment. `Range` is Kafka's RangeAssignor per
//! topic; `Uniform` is KIP-848's sticky uniform assignor. Pure functions of their inputs: no I/O,
//! no clock, no randomness and no other broker module, so the coordinator can call them anywhere
//! and every replica of the coordinator computes the same answer. They never refuse an input:
//! unknown topics, gone members and stale previous entries are ignored.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

/// A topic partition: (topic name, partition index).
pub type TopicPartition = (String, u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignor {
    Uniform,
    Range,
}

impl Assignor {
    pub const DEFAULT: Assignor = Assignor::Uniform;

    /// "uniform" or "range"; anything else None.
    pub fn from_name(name: &str) -> Option<Assignor> {
        match name {
            "uniform" => Some(Assignor::Uniform),
            "range" => Some(Assignor::Range),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Assignor::Uniform => "uniform",
            Assignor::Range => "range",
        }
    }
}

/// One member as the assignor sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSpec {
    pub member_id: String,
    /// Topics the member subscribes to, already resolved (a regex subscription was evaluated by
    /// the caller).
    pub topics: BTreeSet<String>,
}

/// The target assignment: every member of `members` gets an entry (possibly empty).
/// - `partitions`: topic name -> partition count of every existing topic;
/// - `previous`: the last target assignment per member id (members not in `members` are gone;
///   entries for partitions that no longer exist or that the member no longer subscribes to are
///   ignored);
/// - `excluded`: partitions that must be assigned to nobody for now (an offset reset in progress).
///
/// A member id listed twice in `members` is one member subscribing to the union of both lists (so
/// the order of `members` never matters). A partition two members held in `previous` (which a
/// target never does) counts as held by the first by member id.
pub fn assign(
    assignor: Assignor,
    members: &[MemberSpec],
    partitions: &BTreeMap<String, u32>,
    previous: &BTreeMap<String, BTreeSet<TopicPartition>>,
    excluded: &BTreeSet<TopicPartition>,
) -> BTreeMap<String, BTreeSet<TopicPartition>> {
    let problem = Problem::new(members, partitions, excluded);
    let owner = match assignor {
        Assignor::Range => range(&problem),
        Assignor::Uniform => {
            let held = problem.previous_owners(previous);
            if problem.homogeneous() {
                uniform_homogeneous(&problem, &held)
            } else {
                uniform_heterogeneous(&problem, held)
            }
        }
    };
    problem.assert_valid(&owner);
    problem.output(&owner)
}

/// Owner of a partition not given to anybody yet.
const NOBODY: usize = usize::MAX;

/// The inputs in indices: members by id, topics by name, and the assignable partitions numbered in
/// (topic name, partition) order. Every algorithm below works on these numbers only.
struct Problem<'a> {
    member_ids: Vec<&'a str>,
    /// Per member, the existing topics it subscribes to, ascending.
    member_topics: Vec<Vec<usize>>,
    topic_names: Vec<&'a str>,
    /// Per topic, its subscribers ascending (so by member id).
    subscribers: Vec<Vec<usize>>,
    /// Per topic, where its partitions start in `slot` and how many it has there (0 for a topic no
    /// member subscribes to: its partitions are nobody's business).
    span: Vec<(usize, u32)>,
    /// Per (topic, partition) of a subscribed topic, its index in `parts`; None if excluded.
    slot: Vec<Option<usize>>,
    /// The assignable partitions: (topic, partition).
    parts: Vec<(usize, u32)>,
}

impl<'a> Problem<'a> {
    fn new(
        members: &'a [MemberSpec],
        partitions: &'a BTreeMap<String, u32>,
        excluded: &BTreeSet<TopicPartition>,
    ) -> Problem<'a> {
        let topic_names: Vec<&str> = partitions.keys().map(String::as_str).collect();
        let mut by_id: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for m in members {
            let topics = by_id.entry(m.member_id.as_str()).or_default();
            // Topics that do not exist are ignored: nothing to assign from them.
            topics.extend(
                m.topics
                    .iter()
                    .filter_map(|t| topic_names.binary_search(&t.as_str()).ok()),
            );
        }
        let mut member_ids = Vec::with_capacity(by_id.len());
        let mut member_topics = Vec::with_capacity(by_id.len());
        let mut subscribers = vec![Vec::new(); topic_names.len()];
        for (x, (id, mut topics)) in by_id.into_iter().enumerate() {
            topics.sort_unstable();
            topics.dedup();
            for &t in &topics {
                subscribers[t].push(x);
            }
            member_ids.push(id);
            member_topics.push(topics);
        }

        let mut span = Vec::with_capacity(topic_names.len());
        let mut slots = 0;
        for (t, &count) in partitions.values().enumerate() {
            let count = if subscribers[t].is_empty() { 0 } else { count };
            span.push((slots, count));
            slots += count as usize;
        }
        let mut problem = Problem {
            member_ids,
            member_topics,
            topic_names,
            subscribers,
            span,
            slot: Vec::new(),
            parts: Vec::new(),
        };
        let mut live = vec![true; slots];
        for (name, p) in excluded {
            if let Some(s) = problem.slot_of(name, *p) {
                live[s] = false;
            }
        }
        let mut slot = Vec::with_capacity(slots);
        let mut parts = Vec::with_capacity(slots);
        for (t, &(start, count)) in problem.span.iter().enumerate() {
            for p in 0..count {
                let here = live[start + p as usize];
                slot.push(here.then_some(parts.len()));
                if here {
                    parts.push((t, p));
                }
            }
        }
        assert_eq!(slot.len(), slots);
        problem.slot = slot;
        problem.parts = parts;
        problem
    }

    /// Where (topic, partition) sits in `slot`, if the topic exists, is subscribed and has it.
    fn slot_of(&self, topic: &str, partition: u32) -> Option<usize> {
        let t = self.topic_names.binary_search(&topic).ok()?;
        let (start, count) = self.span[t];
        (partition < count).then_some(start + partition as usize)
    }

    fn part_of(&self, topic: &str, partition: u32) -> Option<usize> {
        self.slot[self.slot_of(topic, partition)?]
    }

    fn subscribes(&self, member: usize, topic: usize) -> bool {
        self.member_topics[member].binary_search(&topic).is_ok()
    }

    /// Whether every member subscribes to the same existing topics (then every member may own
    /// every partition, and the balance is a plain quota).
    fn homogeneous(&self) -> bool {
        self.member_topics.windows(2).all(|w| w[0] == w[1])
    }

    /// Per assignable partition, the member that held it in `previous` and may keep it
    /// (still a member, still subscribed), or NOBODY.
    fn previous_owners(&self, previous: &BTreeMap<String, BTreeSet<TopicPartition>>) -> Vec<usize> {
        let mut owner = vec![NOBODY; self.parts.len()];
        for (x, id) in self.member_ids.iter().enumerate() {
            let Some(held) = previous.get(*id) else {
                continue;
            };
            for (topic, p) in held {
                if let Some(i) = self.part_of(topic, *p) {
                    if owner[i] == NOBODY && self.subscribes(x, self.parts[i].0) {
                        owner[i] = x;
                    }
                }
            }
        }
        owner
    }

    /// The postcondition of every assignor: each assignable partition has exactly one owner (one
    /// entry in `owner`), a member subscribing to its topic.
    fn assert_valid(&self, owner: &[usize]) {
        assert_eq!(owner.len(), self.parts.len());
        for (i, &x) in owner.iter().enumerate() {
            assert!(
                x < self.member_ids.len(),
                "partition {i} assigned to nobody"
            );
            assert!(
                self.subscribes(x, self.parts[i].0),
                "partition {i} assigned to a non-subscriber"
            );
        }
    }

    fn output(&self, owner: &[usize]) -> BTreeMap<String, BTreeSet<TopicPartition>> {
        let mut sets: Vec<BTreeSet<TopicPartition>> = vec![BTreeSet::new(); self.member_ids.len()];
        for (&x, &(t, p)) in owner.iter().zip(&self.parts) {
            sets[x].insert((self.topic_names[t].to_string(), p));
        }
        let out: BTreeMap<String, BTreeSet<TopicPartition>> = self
            .member_ids
            .iter()
            .map(|id| id.to_string())
            .zip(sets)
            .collect();
        assert_eq!(out.len(), self.member_ids.len());
        assert_eq!(
            out.values().map(BTreeSet::len).sum::<usize>(),
            self.parts.len(),
            "each partition once"
        );
        out
    }
}

/// Kafka's RangeAssignor, topic by topic: the topic's subscribers by id each get a contiguous range
/// of its partitions, the first `n % m` one more. An excluded partition is left out of its range
/// without shifting the others (so a reset moves nothing).
fn range(problem: &Problem) -> Vec<usize> {
    let mut owner = vec![NOBODY; problem.parts.len()];
    for (subs, &(start, count)) in problem.subscribers.iter().zip(&problem.span) {
        if subs.is_empty() {
            continue;
        }
        let n = count as usize;
        let (base, extra) = (n / subs.len(), n % subs.len());
        let mut next = 0;
        for (k, &x) in subs.iter().enumerate() {
            let size = base + usize::from(k < extra);
            for s in start + next..start + next + size {
                if let Some(i) = problem.slot[s] {
                    owner[i] = x;
                }
            }
            next += size;
        }
        assert_eq!(next, n, "the ranges cover the topic");
    }
    owner
}

/// Uniform when every member may own every partition: each member's quota is floor(N/M), and the
/// N % M members that held the most get one more, so the most partitions stay put. A member keeps
/// its lowest held partitions up to its quota; the rest, and the partitions nobody held, go to the
/// members under quota, fewest first, ties by member id. Every partition that changes owner had to:
/// the kept count is the largest any balanced result allows.
fn uniform_homogeneous(problem: &Problem, held: &[usize]) -> Vec<usize> {
    let (n, m) = (problem.parts.len(), problem.member_ids.len());
    if m == 0 {
        assert_eq!(n, 0, "no member, no subscribed partition");
        return Vec::new();
    }
    let mut previous: Vec<Vec<usize>> = vec![Vec::new(); m];
    for (i, &x) in held.iter().enumerate() {
        if x != NOBODY {
            previous[x].push(i);
        }
    }
    let (base, extra) = (n / m, n % m);
    let mut by_held: Vec<usize> = (0..m).collect();
    by_held.sort_by_key(|&x| (Reverse(previous[x].len()), x));
    let mut quota = vec![base; m];
    for &x in &by_held[..extra] {
        quota[x] += 1;
    }

    let mut owner = vec![NOBODY; n];
    let mut count = vec![0; m];
    for x in 0..m {
        // `previous[x]` is ascending: the highest partitions are the ones given up.
        for &i in previous[x].iter().take(quota[x]) {
            owner[i] = x;
            count[x] += 1;
        }
    }
    let mut under: BinaryHeap<Reverse<(usize, usize)>> = (0..m)
        .filter(|&x| count[x] < quota[x])
        .map(|x| Reverse((count[x], x)))
        .collect();
    for o in owner.iter_mut().filter(|o| **o == NOBODY) {
        let Some(Reverse((c, x))) = under.pop() else {
            unreachable!("the quotas add up to the partition count");
        };
        *o = x;
        count[x] = c + 1;
        if count[x] < quota[x] {
            under.push(Reverse((count[x], x)));
        }
    }
    assert!(under.is_empty(), "every quota filled");
    assert_eq!(count, quota);
    owner
}

/// Uniform when subscriptions differ: every partition stays with its previous owner where it may,
/// the others go one by one to their topic's least loaded subscriber (topics with the fewest
/// subscribers first: they have the least choice), then partitions move from loaded members to
/// subscribers of their topic at least two lighter until none can. That loop ends: each move
/// lowers the sum of the squared counts by at least 2.
fn uniform_heterogeneous(problem: &Problem, held: Vec<usize>) -> Vec<usize> {
    let m = problem.member_ids.len();
    let mut loads = Loads {
        problem,
        count: vec![0; m],
        owned: vec![BTreeSet::new(); m],
        by_count: BTreeSet::new(),
        owner: held,
    };
    for (i, &x) in loads.owner.iter().enumerate() {
        if x != NOBODY {
            loads.count[x] += 1;
            loads.owned[x].insert(i);
        }
    }
    loads.by_count = (0..m).map(|x| (loads.count[x], x)).collect();

    let mut unowned: Vec<usize> = (0..loads.owner.len())
        .filter(|&i| loads.owner[i] == NOBODY)
        .collect();
    unowned.sort_by_key(|&i| (problem.subscribers[problem.parts[i].0].len(), i));
    for i in unowned {
        let Some(x) = loads.lightest_subscriber(problem.parts[i].0, usize::MAX) else {
            unreachable!("an assignable partition's topic has a subscriber");
        };
        loads.give(i, x);
    }

    // Passes over the members, most loaded first, each offering its partitions (highest first)
    // to the lightest subscriber at least two lighter. A pass that moves nothing ends it.
    let mut failed = vec![0usize; problem.topic_names.len()];
    let mut round = 0;
    loop {
        let mut moved = false;
        let donors: Vec<usize> = loads.by_count.iter().rev().map(|&(_, x)| x).collect();
        for x in donors {
            // While `x` gives, only it gets lighter: a topic with no taker stays without one.
            round += 1;
            let mine: Vec<usize> = loads.owned[x].iter().rev().copied().collect();
            for i in mine {
                let (c, t) = (loads.count[x], problem.parts[i].0);
                if c < 2 {
                    break;
                }
                if failed[t] == round {
                    continue;
                }
                match loads.lightest_subscriber(t, c - 2) {
                    Some(to) => {
                        loads.give(i, to);
                        moved = true;
                    }
                    None => failed[t] = round,
                }
            }
        }
        if !moved {
            break;
        }
    }
    #[cfg(debug_assertions)]
    loads.assert_balanced();
    loads.owner
}

/// The owners and loads of the heterogeneous uniform assignor, kept in step.
struct Loads<'p, 'a> {
    problem: &'p Problem<'a>,
    owner: Vec<usize>,
    count: Vec<usize>,
    owned: Vec<BTreeSet<usize>>,
    /// (count, member), ascending: the lightest members first, ties by member id.
    by_count: BTreeSet<(usize, usize)>,
}

impl Loads<'_, '_> {
    /// The subscriber of `topic` with the fewest partitions, at most `max`, ties by member id.
    /// Walks the members from the lightest, which finds one at once unless the lightest do not
    /// subscribe to `topic`; past as many steps as the topic has subscribers it asks those instead.
    fn lightest_subscriber(&self, topic: usize, max: usize) -> Option<usize> {
        let subs = &self.problem.subscribers[topic];
        for &(c, x) in self.by_count.iter().take(subs.len()) {
            if c > max {
                return None;
            }
            if self.problem.subscribes(x, topic) {
                return Some(x);
            }
        }
        subs.iter()
            .map(|&x| (self.count[x], x))
            .filter(|&(c, _)| c <= max)
            .min()
            .map(|(_, x)| x)
    }

    /// Moves partition `i` to member `to` (from its owner, if any).
    fn give(&mut self, i: usize, to: usize) {
        let from = self.owner[i];
        assert_ne!(from, to);
        assert!(self.problem.subscribes(to, self.problem.parts[i].0));
        if from != NOBODY {
            assert!(self.count[to] + 2 <= self.count[from], "a move balances");
            self.recount(from, self.count[from] - 1);
            self.owned[from].remove(&i);
        }
        self.recount(to, self.count[to] + 1);
        self.owned[to].insert(i);
        self.owner[i] = to;
    }

    fn recount(&mut self, x: usize, count: usize) {
        let was = self.by_count.remove(&(self.count[x], x));
        assert!(was);
        self.count[x] = count;
        self.by_count.insert((count, x));
    }

    /// No partition could move to a subscriber of its topic two lighter than its owner: per topic,
    /// its most loaded owner is at most one above its lightest subscriber.
    #[cfg(debug_assertions)]
    fn assert_balanced(&self) {
        let problem = self.problem;
        let mut heaviest = vec![0; problem.topic_names.len()];
        for (i, &x) in self.owner.iter().enumerate() {
            let t = problem.parts[i].0;
            heaviest[t] = heaviest[t].max(self.count[x]);
        }
        for (t, subs) in problem.subscribers.iter().enumerate() {
            if let Some(lightest) = subs.iter().map(|&x| self.count[x]).min() {
                assert!(heaviest[t] <= lightest + 1, "topic {t} unbalanced");
            }
        }
    }
}

#[cfg(test)]
#[path = "assign_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "assign_scale_tests.rs"]
mod scale_tests;
