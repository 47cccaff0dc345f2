//! Waiting helpers shared by the suites: poll until a condition holds, bound a whole test.

use std::future::Future;
use std::time::Duration;

/// How long [`eventually`] waits before failing.
pub(crate) const WAIT: Duration = Duration::from_secs(60);

/// How long [`bounded`] lets a whole test body run.
pub(crate) const TEST_TIMEOUT: Duration = Duration::from_secs(180);

/// Polls `check` every 100 ms until it returns `Some`, failing after [`WAIT`].
pub(crate) async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs a test body under [`TEST_TIMEOUT`].
pub(crate) async fn bounded(body: impl Future<Output = ()>) {
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .expect("test finished in time");
}
