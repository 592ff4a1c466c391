//! Shared helpers for the end-to-end tests live here as they are needed; the tests are in `tests/tests/`.
