//! `sluice-bench` run as a user runs it: the real binary against a real broker (spawned by the
//! bench, or started by the harness). Checks the interface scripts rely on: exit status, the
//! figures table, and the last line being one JSON object with the documented keys and the exact
//! record count. Counts are small: this checks behaviour, not speed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

use serde_json::Value;
use sluice_tests::{bench_bin, sluice_bin, Broker};

/// Runs the bench with `args` from a fresh directory (spawned brokers keep their data under it).
fn bench(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    Command::new(bench_bin())
        .args(args)
        .current_dir(dir.path())
        .output()
        .expect("run sluice-bench")
}

/// Stdout and its last line as JSON, after checking the run succeeded.
fn last_json(out: &Output) -> (String, Value) {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "sluice-bench failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().expect("some output");
    let v: Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {last}"));
    (stdout, v)
}

/// The last stdout line as JSON, after checking the run succeeded and printed the keys every
/// mode promises.
fn summary(out: &Output) -> Value {
    let (stdout, v) = last_json(out);
    let last = stdout.lines().last().unwrap_or_default();
    for key in ["records_per_s", "mb_per_s", "p50_ms", "p99_ms", "p999_ms"] {
        assert!(v[key].is_number(), "{key} missing in {last}");
    }
    assert!(stdout.contains("records/s"), "no figures table:\n{stdout}");
    v
}

#[test]
fn produce_with_a_spawned_broker_reports_every_record() {
    let sluice = sluice_bin();
    let out = bench(&[
        "produce",
        "--spawn-broker",
        "--sluice-bin",
        sluice.to_str().unwrap(),
        "--record-size",
        "100",
        "--count",
        "20000",
    ]);
    let v = summary(&out);
    assert_eq!(v["records"], 20000);
    assert_eq!(v["mode"], "produce");
    assert!(v["records_per_s"].as_f64().unwrap() > 0.0);
    assert!(v["p50_ms"].as_f64().unwrap() <= v["p99_ms"].as_f64().unwrap());
}

#[test]
fn paced_e2e_and_consume_against_a_running_broker() {
    let broker = Broker::start(&[]);
    let addr = broker.addr.to_string();
    // Paced: the collector runs in a task of its own; several producers and partitions.
    let out = bench(&[
        "e2e",
        "--broker",
        &addr,
        "--producers",
        "2",
        "--partitions",
        "3",
        "--record-size",
        "64",
        "--rate",
        "4000",
        "--count",
        "4000",
    ]);
    let v = summary(&out);
    assert_eq!(v["records"], 4000);
    assert_eq!(v["produce_records"], 4000);
    let out = bench(&[
        "consume",
        "--broker",
        &addr,
        "--record-size",
        "512",
        "--count",
        "10000",
    ]);
    let v = summary(&out);
    assert_eq!(v["records"], 10000);
}

/// A tiny cold replay with a tail (a 4 MiB backlog behind a 1 MiB page-cache window): the report
/// says the backlog exceeds the window, has the `pread` baselines and the tail's two phases, and
/// the replay read every record. No figure is judged: this checks the interface of the catch-up
/// benchmark (docs/benchmarks.md, "Cold reads").
#[test]
fn a_cold_consume_with_a_tail_reports_baselines_and_both_phases() {
    let sluice = sluice_bin();
    let out = bench(&[
        "consume",
        "--spawn-broker",
        "--sluice-bin",
        sluice.to_str().unwrap(),
        "--broker-page-cache-window-mb",
        "1",
        "--record-size",
        "1024",
        "--count",
        "4000",
        "--cold",
        "--tail-rate",
        "2000",
    ]);
    let v = summary(&out);
    assert_eq!(v["records"], 4000);
    assert_eq!(v["cold"], true);
    assert_eq!(v["backlog_exceeds_window"], true);
    for key in [
        "consume_file_mb_per_s",
        "pread_mb_per_s",
        "pread_drop_behind_mb_per_s",
        "cold_vs_pread_drop_behind",
        "tail_alone_p99_ms",
        "tail_replay_p99_ms",
        "tail_p99_ratio",
        "replay_under_tail_mb_per_s",
    ] {
        assert!(
            v[key].as_f64().is_some_and(|x| x > 0.0),
            "{key}: {}",
            v[key]
        );
    }
    assert_eq!(v["tail_pairs"], 1);
    assert_eq!(v["tail_replay_capped"], false);
    let ratios = v["tail_p99_ratios"].as_array().expect("tail_p99_ratios");
    assert_eq!(ratios.len(), 1);
    assert_eq!(
        ratios[0], v["tail_p99_ratio"],
        "one pair: its ratio is the median"
    );
}

#[test]
fn an_unreachable_broker_is_a_clear_error() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap().to_string();
    drop(free);
    let out = bench(&["produce", "--broker", &addr, "--count", "10"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&addr),
        "error does not name the broker: {stderr}"
    );
}

#[test]
fn replication_pairs_report_every_ratio_and_their_median() {
    let sluice = sluice_bin();
    let out = bench(&[
        "replication",
        "--sluice-bin",
        sluice.to_str().unwrap(),
        "--pairs",
        "2",
        "--duration",
        "1",
        "--record-size",
        "256",
    ]);
    let (stdout, v) = last_json(&out);
    assert!(stdout.contains("median ratio"), "no table:\n{stdout}");
    let last = stdout.lines().last().unwrap_or_default();
    assert_eq!(v["mode"], "replication");
    assert_eq!(v["brokers"], 3);
    let figures = |key: &str| -> Vec<f64> {
        v[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} missing in {last}"))
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let (replicated, single, ratios) = (
        figures("replicated_mb_per_s"),
        figures("single_mb_per_s"),
        figures("ratios"),
    );
    assert_eq!((replicated.len(), single.len(), ratios.len()), (2, 2, 2));
    for i in 0..2 {
        assert!(replicated[i] > 0.0 && single[i] > 0.0, "{last}");
        // Each ratio is its own pair's quotient (rounded to 3 places, from unrounded figures).
        assert!(
            (ratios[i] - replicated[i] / single[i]).abs() < 0.01,
            "{last}"
        );
    }
    let median = v["median_ratio"].as_f64().unwrap();
    assert!(
        (median - (ratios[0] + ratios[1]) / 2.0).abs() < 0.002,
        "{last}"
    );
}

/// A tiny `group` run (a 4 MiB backlog, two members, a join into three): the three measurements'
/// keys are in the JSON last line, the drain read every record of its backlog, and the times are
/// numbers. No figure is judged: this checks the interface.
#[test]
fn group_reports_drain_leave_and_join() {
    let sluice = sluice_bin();
    let out = bench(&[
        "group",
        "--sluice-bin",
        sluice.to_str().unwrap(),
        "--backlog-mb",
        "4",
        "--partitions",
        "4",
        "--members",
        "2",
        "--join-members",
        "3",
        "--heartbeat-interval-ms",
        "200",
    ]);
    let (stdout, v) = last_json(&out);
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        stdout.contains("median ratio group/plain"),
        "no table:\n{stdout}"
    );
    assert_eq!(v["mode"], "group");
    assert_eq!(v["backlog_records"], 4096, "{last}");
    assert_eq!(v["missing"], 0, "{last}");
    for key in [
        "plain_mb_per_s",
        "group_mb_per_s",
        "ratios",
        "group_settled_ms",
    ] {
        let a = v[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} missing in {last}"));
        assert_eq!(a.len(), 1, "{key} in {last}");
    }
    for key in [
        "median_ratio",
        "duplicates",
        "leave_resumed_ms",
        "leave_resumed_intervals",
        "leave_close_ms",
        "join_first_record_ms",
        "join_gap_before_ms",
        "join_gap_after_ms",
        "join_gap_after_intervals",
        "join_moved_resumed_ms",
        "join_moved_resumed_intervals",
        "join_probe_before_p50_ms",
    ] {
        assert!(v[key].is_number(), "{key} missing in {last}");
    }
    assert_eq!(v["join_partitions"], 6, "{last}");
    assert!(v["join_moved_partitions"].as_u64().unwrap() >= 1, "{last}");
    assert!(v["join_moved_goal_met"].is_boolean(), "{last}");
}

#[test]
fn group_refuses_a_zero_heartbeat() {
    let out = bench(&["group", "--heartbeat-interval-ms", "0"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--heartbeat-interval-ms"), "{stderr}");
}

#[test]
fn replication_refuses_a_single_broker_side() {
    let out = bench(&["replication", "--brokers", "1"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--brokers must be at least 2"), "{stderr}");
}

/// A tiny `operator` run (20,000 events over 100 keys spanning 20 s of event time, tumbling 1 s):
/// the operator read every event, wrote results, and the last line has the documented keys. No
/// figure is judged.
#[test]
fn operator_reports_its_rate_state_and_emit_p99() {
    let sluice = sluice_bin();
    let out = bench(&[
        "operator",
        "--sluice-bin",
        sluice.to_str().unwrap(),
        "--events",
        "20000",
        "--keys",
        "100",
        "--event-rate",
        "1000",
    ]);
    let (stdout, v) = last_json(&out);
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        stdout.contains("plain consumer (baseline)"),
        "no table:\n{stdout}"
    );
    assert_eq!(v["mode"], "operator", "{last}");
    assert_eq!(v["window"], "tumbling:1s", "{last}");
    assert_eq!(v["events"], 20000, "{last}");
    assert_eq!(v["keys"], 100, "{last}");
    assert_eq!(v["bad"], 0, "{last}");
    assert!(v["emitted"].as_u64().unwrap() > 0, "{last}");
    for key in [
        "events_per_s",
        "consume_events_per_s",
        "state_bytes",
        "emit_p99_ms",
    ] {
        assert!(v[key].is_number(), "{key} missing in {last}");
    }
}
