//! The admin API's bearer token: every guarded request must carry `Authorization: Bearer TOKEN`,
//! compared in constant time (a timing difference would tell an attacker how many leading bytes
//! they guessed). A listener on a non-loopback address without a token refuses to start: an
//! unprotected admin API reachable from the network is a mistake, not a setting. Checks only:
//! this never decides what a request may do once it is let in.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::error::ApiError;

/// Refuses an admin listener that would be reachable from other machines without a token.
pub fn check_exposure(addr: SocketAddr, has_token: bool) -> Result<(), String> {
    if addr.ip().is_loopback() || has_token {
        return Ok(());
    }
    Err(format!(
        "the admin API would listen on {addr}, which is not a loopback address, without a token: \
         set admin_token (SLUICE_ADMIN_TOKEN or --admin-token-file), or bind admin_listen to \
         127.0.0.1, or turn it off with --admin-listen off"
    ))
}

/// Whether `presented` (the `Authorization` header's value) carries `token`.
fn authorized(presented: Option<&[u8]>, token: &[u8]) -> bool {
    let Some(value) = presented else {
        return false;
    };
    let Some(given) = value.strip_prefix(b"Bearer ") else {
        return false;
    };
    // Lengths differ: not equal. Only the token's length leaks, which a long random token survives.
    given.ct_eq(token).into()
}

/// Paths answered without the token: probes carry no secret and reveal nothing.
pub const OPEN_PATHS: [&str; 2] = ["/healthz", "/readyz"];

/// Middleware: lets the request through when no token is set, it is a probe, or it presents the
/// token.
pub async fn require(State(token): State<Option<Arc<str>>>, req: Request, next: Next) -> Response {
    let Some(token) = token else {
        return next.run(req).await;
    };
    if OPEN_PATHS.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if authorized(presented, token.as_bytes()) {
        return next.run(req).await;
    }
    let message = if presented.is_none() {
        "this admin API needs a bearer token (Authorization: Bearer TOKEN)"
    } else {
        "wrong bearer token"
    };
    let mut r = ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message).into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_passes() {
        assert!(authorized(Some(b"Bearer s3cret"), b"s3cret"));
        assert!(!authorized(Some(b"Bearer s3cre"), b"s3cret"));
        assert!(!authorized(Some(b"Bearer s3cret2"), b"s3cret"));
        assert!(!authorized(Some(b"bearer s3cret"), b"s3cret"));
        assert!(!authorized(Some(b"s3cret"), b"s3cret"));
        assert!(!authorized(None, b"s3cret"));
    }

    #[test]
    fn a_non_loopback_listener_needs_a_token() {
        let lo: SocketAddr = "127.0.0.1:9493".parse().unwrap_or_else(|_| unreachable!());
        let any: SocketAddr = "0.0.0.0:9493".parse().unwrap_or_else(|_| unreachable!());
        assert!(check_exposure(lo, false).is_ok());
        assert!(check_exposure(any, true).is_ok());
        let e = check_exposure(any, false).err().unwrap_or_default();
        assert!(e.contains("without a token"), "{e}");
    }
}
