//! Subscriptions, evaluated on the coordinator: a member names topics, a regular expression, or
//! both, and the coordinator resolves them against the topics that exist now (so a topic created
//! later, or a topic's new partitions, are picked up at the next evaluation without a restart).
//! Pure but for a bounded cache of compiled patterns (the coordinator's tick resolves every
//! member's subscription every half heartbeat interval): the caller passes the topic list.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, OnceLock};

use regex::Regex;
use sluice_protocol::wire::ErrorCode;

use crate::error::ServiceError;

/// Longest subscription pattern accepted, in bytes.
pub const MAX_REGEX_BYTES: usize = 1024;
/// Compiled-program size cap: a pattern that would take more is refused, not built.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Compiles a subscription pattern; the whole topic name must match (it is anchored).
pub fn compile(pattern: &str) -> Result<Regex, ServiceError> {
    if pattern.len() > MAX_REGEX_BYTES {
        return Err(ServiceError::new(
            ErrorCode::INVALID_REGULAR_EXPRESSION,
            format!("subscription pattern longer than {MAX_REGEX_BYTES} bytes"),
        ));
    }
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| {
            ServiceError::new(
                ErrorCode::INVALID_REGULAR_EXPRESSION,
                format!("subscription pattern {pattern:?} does not compile: {e}"),
            )
        })
}

/// Compiled patterns kept at most; past it the cache starts over (patterns are few in practice:
/// one per group's subscription, not one per member).
const CACHED_PATTERNS: usize = 1024;

/// `compile(pattern)`, from the cache when it was compiled before.
pub fn compiled(pattern: &str) -> Result<Regex, ServiceError> {
    static CACHE: OnceLock<Mutex<HashMap<String, Regex>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let lock = || {
        cache
            .lock()
            .unwrap_or_else(|_| panic!("pattern cache lock poisoned"))
    };
    if let Some(re) = lock().get(pattern) {
        return Ok(re.clone());
    }
    let re = compile(pattern)?;
    let mut c = lock();
    if c.len() >= CACHED_PATTERNS {
        c.clear();
    }
    c.insert(pattern.to_string(), re.clone());
    Ok(re)
}

/// Internal topics are never matched by a pattern, and named explicitly they are not assignable.
use crate::replica::settings::is_internal;

/// The existing, non-internal topics a subscription covers. An uncompilable pattern covers nothing
/// (it was refused when the member sent it; this only guards a record written by another version).
pub fn resolve(
    topics: &[String],
    pattern: &str,
    existing: &BTreeMap<String, u32>,
) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = topics
        .iter()
        .filter(|t| existing.contains_key(t.as_str()) && !is_internal(t))
        .cloned()
        .collect();
    if !pattern.is_empty() {
        if let Ok(re) = compiled(pattern) {
            out.extend(
                existing
                    .keys()
                    .filter(|t| !is_internal(t) && re.is_match(t))
                    .cloned(),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_anchored_and_skip_internal_topics() {
        let existing: BTreeMap<String, u32> = [
            ("orders", 3),
            ("orders-eu", 2),
            ("__consumer_offsets", 16),
            ("x", 1),
        ]
        .into_iter()
        .map(|(t, n)| (t.to_string(), n))
        .collect();
        let got = resolve(&["x".into(), "missing".into()], "orders.*", &existing);
        assert_eq!(
            got,
            ["orders", "orders-eu", "x"]
                .into_iter()
                .map(String::from)
                .collect()
        );
        assert_eq!(
            resolve(&[], "rders", &existing),
            BTreeSet::new(),
            "anchored"
        );
        assert_eq!(
            resolve(&[], ".*", &existing).len(),
            3,
            "internal topics never match"
        );
        assert_eq!(
            compile("(").unwrap_err().code,
            ErrorCode::INVALID_REGULAR_EXPRESSION
        );
    }
}
