//! Waiting for conditions without sleeping as synchronisation.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How often a condition is re-checked.
const POLL: Duration = Duration::from_millis(5);

/// Waits until `done()` is true.
///
/// # Panics
/// When `timeout` passes first, naming `what`.
pub async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the future made by `done()` resolves to true.
///
/// # Panics
/// When `timeout` passes first, naming `what`.
pub async fn wait_until_async<F, Fut>(what: &str, timeout: Duration, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !done().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}
