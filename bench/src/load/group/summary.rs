//! The output of `sluice-bench group`: a title line, the drain pairs (plain and group MiB/s, their
//! ratio, the group's duplicates), a table of the leave and join times in ms and in heartbeat
//! intervals (with the goals), then one JSON object as the last line. Its keys are an
//! interface: `mode` (`group`), the settings under their flag names, the drain's
//! `plain_mb_per_s`, `group_mb_per_s`, `ratios` (per pair), `median_ratio`, `group_settled_ms`,
//! `group_settled_mb_per_s` (from the group's last assignment change), `duplicates`, `missing`; the leave's `leave_*` and the join's `join_*` figures (`*_ms` and `*_intervals`).
//! A measurement left out by `--only` leaves its keys out.

use std::time::Duration;

use serde_json::{json, Map, Value};

use super::drain::Drain;
use super::join::Join;
use super::leave::Leave;
use super::GroupSettings;
use crate::load::median;
use crate::load::report::{mib, round1, round3};

/// What the run measured.
#[derive(Debug, Default)]
pub(super) struct Report {
    pub broker: String,
    pub spawned: bool,
    pub drain: Option<Drain>,
    pub leave: Option<Leave>,
    pub join: Option<Join>,
}

fn ms(d: Duration) -> f64 {
    round1(d.as_secs_f64() * 1000.0)
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

/// One row of the times table.
struct Row {
    name: String,
    value: Duration,
    goal: String,
}

impl Report {
    /// Prints the tables, then the JSON object as the last line.
    pub fn print(&self, g: &GroupSettings) {
        let h = g.heartbeat;
        let iv = |d: Duration| round3(d.as_secs_f64() / h.as_secs_f64());
        let mut j = Map::new();
        let spawned = if self.spawned { " (spawned)" } else { "" };
        let session = if self.spawned {
            format!(", session {} ms", g.session.as_millis())
        } else {
            String::new()
        };
        println!(
            "group: broker {}{spawned}, heartbeat interval {} ms{session}",
            self.broker,
            h.as_millis(),
        );
        for (k, v) in [
            ("mode", json!("group")),
            ("broker", json!(self.broker)),
            ("spawn_broker", json!(self.spawned)),
            ("heartbeat_interval_ms", json!(h.as_millis() as u64)),
            (
                "session_timeout_ms",
                json!(self.spawned.then_some(g.session.as_millis() as u64)),
            ),
            ("members", json!(g.members)),
            ("partitions", json!(g.partitions)),
            ("record_size", json!(g.record_size)),
            ("backlog_mb", json!(g.backlog_mb)),
            ("pairs", json!(g.pairs)),
            ("join_members", json!(g.join_members)),
            (
                "produce_interval_ms",
                json!(g.produce_interval.as_millis() as u64),
            ),
        ] {
            j.insert(k.to_string(), v);
        }
        if let Some(d) = &self.drain {
            print_drain(d, g, &mut j);
        }
        let mut rows = Vec::new();
        if let Some(l) = &self.leave {
            leave_rows(l, g, &mut rows, &mut j, &iv);
        }
        if let Some(x) = &self.join {
            join_rows(x, g, &mut rows, &mut j, &iv);
        }
        if !rows.is_empty() {
            println!("{:<58} {:>10} {:>10}  goal", "time", "ms", "intervals");
            for r in &rows {
                println!(
                    "{:<58} {:>10.1} {:>10.3}  {}",
                    r.name,
                    ms(r.value),
                    iv(r.value),
                    r.goal
                );
            }
        }
        println!("{}", Value::Object(j));
    }
}

fn print_drain(d: &Drain, g: &GroupSettings, j: &mut Map<String, Value>) {
    println!(
        "drain: {:.1} MiB backlog ({} records of {} B) in {} partitions of {}, filled in {:.2} s \
         (not measured); plain: one consumer assigned every partition; group: {} members, fresh \
         group, reset earliest",
        mib(d.backlog_bytes),
        d.backlog_records,
        g.record_size,
        g.partitions,
        d.topic,
        d.fill_elapsed.as_secs_f64(),
        g.members
    );
    println!(
        "{:<6} {:>12} {:>12} {:>8} {:>16} {:>15} {:>15} {:>11} {:>8}",
        "pair",
        "plain MiB/s",
        "group MiB/s",
        "ratio",
        "1st record ms",
        "settled ms",
        "settled MiB/s",
        "duplicates",
        "missing"
    );
    let plain: Vec<f64> = d.plain.iter().map(|r| round1(r.mib_per_s())).collect();
    let group: Vec<f64> = d.group.iter().map(|r| round1(r.read.mib_per_s())).collect();
    let ratios: Vec<f64> = d
        .plain
        .iter()
        .zip(&d.group)
        .map(|(p, q)| {
            let p = p.mib_per_s();
            if p > 0.0 {
                q.read.mib_per_s() / p
            } else {
                0.0
            }
        })
        .collect();
    for (i, ((p, q), r)) in d.plain.iter().zip(&d.group).zip(&ratios).enumerate() {
        println!(
            "{:<6} {:>12.1} {:>12.1} {:>8.3} {:>16.1} {:>15.1} {:>15} {:>11} {:>8}",
            i + 1,
            p.mib_per_s(),
            q.read.mib_per_s(),
            r,
            ms(q.first_record),
            ms(q.settled),
            q.after_settled
                .map_or("-".to_string(), |a| format!("{:.1}", a.mib_per_s())),
            q.duplicates,
            q.missing
        );
    }
    let med = median(&ratios);
    println!("median ratio group/plain {med:.3}");
    if let Some(p) = d.plain.iter().find(|p| p.records != d.backlog_records) {
        println!(
            "  the plain consumer read {} records of the {} produced",
            p.records, d.backlog_records
        );
    }
    for (k, v) in [
        ("drain_topic", json!(d.topic)),
        ("backlog_records", json!(d.backlog_records)),
        ("plain_mb_per_s", json!(plain)),
        ("group_mb_per_s", json!(group)),
        (
            "ratios",
            json!(ratios.iter().map(|r| round3(*r)).collect::<Vec<_>>()),
        ),
        ("median_ratio", json!(round3(med))),
        (
            "group_first_record_ms",
            json!(d
                .group
                .iter()
                .map(|q| ms(q.first_record))
                .collect::<Vec<_>>()),
        ),
        (
            "group_settled_ms",
            json!(d.group.iter().map(|q| ms(q.settled)).collect::<Vec<_>>()),
        ),
        (
            "group_settled_mb_per_s",
            json!(d
                .group
                .iter()
                .map(|q| q.after_settled.map(|a| round1(a.mib_per_s())))
                .collect::<Vec<_>>()),
        ),
        (
            "duplicates",
            json!(d.group.iter().map(|q| q.duplicates).sum::<u64>()),
        ),
        (
            "missing",
            json!(d.group.iter().map(|q| q.missing).sum::<u64>()),
        ),
    ] {
        j.insert(k.to_string(), v);
    }
}

fn leave_rows(
    l: &Leave,
    g: &GroupSettings,
    rows: &mut Vec<Row>,
    j: &mut Map<String, Value>,
    iv: &dyn Fn(Duration) -> f64,
) {
    println!(
        "leave: {} members over {} partitions, one record per partition every {} ms, settled in \
         {:.1} s; a member owning {} partitions closes; duplicates {}, skipped {}",
        l.members,
        l.partitions,
        g.produce_interval.as_millis(),
        l.settle.as_secs_f64(),
        l.resumed.len(),
        l.duplicates,
        l.skipped
    );
    let resumed = l.resumed.iter().max().copied().unwrap_or_default();
    let first = l.resumed.iter().min().copied().unwrap_or_default();
    let paused = l.paused.iter().max().copied().unwrap_or_default();
    rows.push(Row {
        name: "leave: its close() (commit, revoke, leave)".into(),
        value: l.close_took,
        goal: String::new(),
    });
    rows.push(Row {
        name: "leave: close -> first partition read by another member".into(),
        value: first,
        goal: String::new(),
    });
    rows.push(Row {
        name: format!(
            "leave: close -> all {} read by others (max)",
            l.resumed.len()
        ),
        value: resumed,
        goal: String::new(),
    });
    rows.push(Row {
        name: "leave: its last record -> another's first (max)".into(),
        value: paused,
        goal: String::new(),
    });
    for (k, v) in [
        ("leave_partitions", json!(l.resumed.len())),
        ("leave_settle_s", json!(round3(l.settle.as_secs_f64()))),
        ("leave_close_ms", json!(ms(l.close_took))),
        ("leave_first_resumed_ms", json!(ms(first))),
        ("leave_resumed_ms", json!(ms(resumed))),
        ("leave_resumed_intervals", json!(iv(resumed))),
        ("leave_paused_ms", json!(ms(paused))),
        ("leave_paused_intervals", json!(iv(paused))),
        ("leave_duplicates", json!(l.duplicates)),
        ("leave_skipped", json!(l.skipped)),
    ] {
        j.insert(k.to_string(), v);
    }
}

fn join_rows(
    x: &Join,
    g: &GroupSettings,
    rows: &mut Vec<Row>,
    j: &mut Map<String, Value>,
    iv: &dyn Fn(Duration) -> f64,
) {
    let h = g.heartbeat;
    println!(
        "join: {} members over {} partitions, one record per partition every {} ms, settled in \
         {:.1} s; one more joins: partitions moved to it {}, staying {}{}; duplicates {}, skipped {}",
        x.members,
        x.partitions,
        g.produce_interval.as_millis(),
        x.settle.as_secs_f64(),
        x.moved.len(),
        x.unmoved,
        if x.other_moves.is_empty() {
            String::new()
        } else {
            format!(
                ", {} moved elsewhere: {:?}",
                x.other_moves.len(),
                x.other_moves
            )
        },
        x.duplicates,
        x.skipped
    );
    println!(
        "  windows: {:.1} ms each (the newcomer's first record {:.1} ms after its join, plus one \
         interval){}",
        ms(x.window),
        ms(x.first_record),
        match x.baseline_cut {
            Some(d) => format!(
                "; the one before the join cut to {:.1} ms (settled only that long)",
                ms(d)
            ),
            None => String::new(),
        }
    );
    let (pb, pa) = (x.probe_before, x.probe_after);
    println!(
        "  coordinator write probe (admin offset reset): before the join median {:.1} ms, longest \
         {:.1} ms ({} writes); after: median {:.1} ms, longest {:.1} ms ({} writes)",
        ms(pb.0),
        ms(pb.1),
        pb.2,
        ms(pa.0),
        ms(pa.1),
        pa.2
    );
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0} %"));
    println!(
        "  CPU (of one core) settled before the join / after it: broker {} / {}, bench {} / {}",
        pct(x.cpu_before.0),
        pct(x.cpu_after.0),
        pct(x.cpu_before.1),
        pct(x.cpu_after.1)
    );
    if let Some((p, gave)) = x.worst_unmoved {
        println!(
            "  longest gap after the join on staying partition {p}, whose owner {} a partition to \
             the newcomer",
            if gave { "gave" } else { "did not give" }
        );
    }
    let resumed = x.moved.iter().map(|m| m.1).max().unwrap_or_default();
    let paused = x.moved.iter().map(|m| m.2).max().unwrap_or_default();
    let unmoved_ok = x.gap_after <= h;
    let moved_ok = !x.moved.is_empty() && resumed <= 2 * h;
    rows.push(Row {
        name: format!("join: {} staying, longest gap before the join", x.unmoved),
        value: x.gap_before,
        goal: String::new(),
    });
    rows.push(Row {
        name: format!("join: {} staying, longest gap after the join", x.unmoved),
        value: x.gap_after,
        goal: format!(
            "<= 1 interval: {} ({} over)",
            met(unmoved_ok),
            x.unmoved_over_interval
        ),
    });
    rows.push(Row {
        name: format!(
            "join: {} moved, join -> newcomer's record (max)",
            x.moved.len()
        ),
        value: resumed,
        goal: format!("<= 2 intervals: {}", met(moved_ok)),
    });
    rows.push(Row {
        name: "join: moved, old owner's last -> newcomer's first (max)".into(),
        value: paused,
        goal: String::new(),
    });
    let ratio = if x.gap_before.is_zero() {
        0.0
    } else {
        x.gap_after.as_secs_f64() / x.gap_before.as_secs_f64()
    };
    for (k, v) in [
        ("join_partitions", json!(x.partitions)),
        ("join_settle_s", json!(round3(x.settle.as_secs_f64()))),
        ("join_first_record_ms", json!(ms(x.first_record))),
        ("join_window_ms", json!(ms(x.window))),
        ("join_baseline_cut_ms", json!(x.baseline_cut.map(ms))),
        ("join_unmoved_partitions", json!(x.unmoved)),
        ("join_gap_before_ms", json!(ms(x.gap_before))),
        ("join_gap_after_ms", json!(ms(x.gap_after))),
        ("join_gap_before_intervals", json!(iv(x.gap_before))),
        ("join_gap_after_intervals", json!(iv(x.gap_after))),
        ("join_gap_ratio", json!(round3(ratio))),
        ("join_unmoved_over_interval", json!(x.unmoved_over_interval)),
        ("join_moved_partitions", json!(x.moved.len())),
        ("join_moved_resumed_ms", json!(ms(resumed))),
        ("join_moved_resumed_intervals", json!(iv(resumed))),
        ("join_moved_paused_ms", json!(ms(paused))),
        ("join_other_moves", json!(x.other_moves.len())),
        ("join_duplicates", json!(x.duplicates)),
        ("join_skipped", json!(x.skipped)),
        ("join_probe_before_p50_ms", json!(ms(pb.0))),
        ("join_probe_before_max_ms", json!(ms(pb.1))),
        ("join_probe_after_p50_ms", json!(ms(pa.0))),
        ("join_probe_after_max_ms", json!(ms(pa.1))),
        (
            "join_cpu_broker_before_pct",
            json!(x.cpu_before.0.map(round1)),
        ),
        (
            "join_cpu_broker_after_pct",
            json!(x.cpu_after.0.map(round1)),
        ),
        (
            "join_cpu_bench_before_pct",
            json!(x.cpu_before.1.map(round1)),
        ),
        ("join_cpu_bench_after_pct", json!(x.cpu_after.1.map(round1))),
        (
            "join_worst_unmoved_owner_gave",
            json!(x.worst_unmoved.map(|w| w.1)),
        ),
        ("join_unmoved_goal_met", json!(unmoved_ok)),
        ("join_moved_goal_met", json!(moved_ok)),
    ] {
        j.insert(k.to_string(), v);
    }
}
