//! A strict reader of Prometheus text (exposition format 0.0.4) for the tests of `/metrics`: every
//! line must be a HELP, a TYPE or a sample of a family whose TYPE came first, every value a number,
//! every histogram cumulative and ending at `+Inf`. Pure: text in, `Scrape` out, panics on
//! anything else (it is test code). One source for both users: the end-to-end test
//! (`tests/tests/metrics.rs`, through this crate) and the broker's rendering unit tests, which
//! include this file by path (`broker/src/metrics/tests.rs`) because the workspace dependency rule
//! keeps the broker from depending on this crate. Uses nothing but `prometheus_parse`.

use prometheus_parse::{LineInfo, Scrape, Value};

/// Parses `text` as Prometheus text, refusing any line that is not a HELP, a TYPE or a sample of a
/// family whose TYPE came first, and any histogram that is not cumulative.
pub fn parse(text: &str) -> Scrape {
    let mut typed: Vec<String> = Vec::new();
    for line in text.lines() {
        match LineInfo::parse(line) {
            LineInfo::Doc { .. } => {}
            LineInfo::Type {
                metric_name,
                metric_alias,
                ..
            } => typed.push(metric_alias.unwrap_or(metric_name)),
            LineInfo::Sample {
                metric_name, value, ..
            } => {
                let declared = |n: &str| typed.iter().any(|t| t == n);
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| metric_name.strip_suffix(s))
                    .filter(|b| declared(b))
                    .unwrap_or(metric_name);
                assert!(declared(base), "no TYPE before {line:?}");
                assert!(
                    value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
                    "not a number: {line:?}"
                );
            }
            other => panic!("not Prometheus text: {line:?} ({other:?})"),
        }
    }
    let scrape = match Scrape::parse(text.lines().map(|l| Ok(l.to_string()))) {
        Ok(s) => s,
        Err(e) => panic!("not Prometheus text: {e}"),
    };
    for s in &scrape.samples {
        if let Value::Histogram(h) = &s.value {
            assert!(
                h.windows(2).all(|w| w[0].count <= w[1].count),
                "{} is not cumulative",
                s.metric
            );
            assert_eq!(h.last().map(|b| b.less_than), Some(f64::INFINITY));
        }
    }
    scrape
}
