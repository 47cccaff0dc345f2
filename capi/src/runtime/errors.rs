//! Error classes: every reconcile error maps to one class, which decides the requeue and labels metrics.

use std::time::Duration;

use kube::runtime::controller::Action;

/// Coarse class of a reconcile error, used by the error policy and the `errors_total` metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Something the reconcile needs does not exist (yet).
    NotFound,
    /// Optimistic-concurrency conflict or an object changed underneath us.
    Conflict,
    /// An API asked us to slow down.
    Throttled,
    /// Credentials or permissions are missing.
    Auth,
    /// The request or the object is invalid; retrying unchanged will not help.
    Invalid,
    /// Timeouts, connection errors, 5xx: retry soon.
    Transient,
    /// Anything else.
    Other,
}

impl ErrorClass {
    /// Metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::NotFound => "not_found",
            ErrorClass::Conflict => "conflict",
            ErrorClass::Throttled => "throttled",
            ErrorClass::Auth => "auth",
            ErrorClass::Invalid => "invalid",
            ErrorClass::Transient => "transient",
            ErrorClass::Other => "other",
        }
    }

    /// The first wait after an error of this class; each further error in a row doubles it up to
    /// [`ErrorClass::requeue_after`] ([`Backoff`]).
    pub fn first_requeue(self) -> Duration {
        match self {
            ErrorClass::Conflict => Duration::from_millis(500),
            ErrorClass::NotFound | ErrorClass::Transient => Duration::from_secs(1),
            ErrorClass::Throttled => Duration::from_secs(2),
            ErrorClass::Other => Duration::from_secs(4),
            ErrorClass::Auth | ErrorClass::Invalid => Duration::from_secs(300),
        }
    }

    /// The longest wait before reconciling again after an error of this class.
    pub fn requeue_after(self) -> Duration {
        match self {
            ErrorClass::Conflict => Duration::from_secs(1),
            ErrorClass::NotFound | ErrorClass::Transient => Duration::from_secs(10),
            ErrorClass::Throttled => Duration::from_secs(30),
            ErrorClass::Other => Duration::from_secs(60),
            ErrorClass::Auth | ErrorClass::Invalid => Duration::from_secs(300),
        }
    }

    /// The controller action for this class.
    pub fn action(self) -> Action {
        Action::requeue(self.requeue_after())
    }
}

/// Per-object exponential backoff of a controller's errors: the first error of an object waits
/// [`ErrorClass::first_requeue`], each further one in a row twice as long, up to
/// [`ErrorClass::requeue_after`]. An error that differs from the object's previous one (the
/// reconcile got further, or failed elsewhere) starts over, as does an object whose last error is
/// older than twice the longest wait. A failure that moves on is retried soon, a persistent one (a
/// throttled account, an invalid spec) no more often than its class allows.
#[derive(Debug, Default)]
pub struct Backoff {
    errors: std::sync::Mutex<std::collections::HashMap<(String, String), Failures>>,
}

#[derive(Debug)]
struct Failures {
    in_a_row: u32,
    last: tokio::time::Instant,
    error: String,
}

impl Backoff {
    /// How long object `key` waits after `error` of `class` now.
    pub fn next(&self, key: (String, String), class: ErrorClass, error: &str) -> Duration {
        let now = tokio::time::Instant::now();
        let longest = class.requeue_after();
        let mut errors = self
            .errors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        errors.retain(|_, failures| now.duration_since(failures.last) < 2 * ErrorClass::Auth.requeue_after());
        let failures = errors.entry(key).or_insert_with(|| Failures {
            in_a_row: 0,
            last: now,
            error: error.to_owned(),
        });
        if failures.error != error || now.duration_since(failures.last) >= 2 * longest {
            failures.in_a_row = 0;
            error.clone_into(&mut failures.error);
        }
        let wait = class
            .first_requeue()
            .saturating_mul(1u32 << failures.in_a_row.min(16))
            .min(longest);
        failures.in_a_row = failures.in_a_row.saturating_add(1);
        failures.last = now;
        wait
    }
}

/// Implemented by every reconciler's error type.
pub trait ReconcileError: std::error::Error + Send + Sync + 'static {
    /// The class of this error.
    fn class(&self) -> ErrorClass;
}

/// Classifies an error returned by the Kubernetes client.
pub fn classify_kube(error: &kube::Error) -> ErrorClass {
    match error {
        kube::Error::Api(status) => match status.code {
            404 | 410 => ErrorClass::NotFound,
            409 => ErrorClass::Conflict,
            429 => ErrorClass::Throttled,
            401 | 403 => ErrorClass::Auth,
            400 | 422 => ErrorClass::Invalid,
            code if code >= 500 => ErrorClass::Transient,
            _ => ErrorClass::Other,
        },
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => {
            ErrorClass::Transient
        }
        kube::Error::SerdeError(_) => ErrorClass::Invalid,
        _ => ErrorClass::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status::failure("x", "y").with_code(code)))
    }

    #[test]
    fn api_status_codes_map_to_classes() {
        assert_eq!(classify_kube(&api_error(404)), ErrorClass::NotFound);
        assert_eq!(classify_kube(&api_error(409)), ErrorClass::Conflict);
        assert_eq!(classify_kube(&api_error(429)), ErrorClass::Throttled);
        assert_eq!(classify_kube(&api_error(403)), ErrorClass::Auth);
        assert_eq!(classify_kube(&api_error(422)), ErrorClass::Invalid);
        assert_eq!(classify_kube(&api_error(503)), ErrorClass::Transient);
    }

    #[test]
    fn conflicts_retry_faster_than_invalid_input() {
        assert!(ErrorClass::Conflict.requeue_after() < ErrorClass::Transient.requeue_after());
        assert!(ErrorClass::Transient.requeue_after() < ErrorClass::Invalid.requeue_after());
    }
}

#[cfg(test)]
mod backoff_tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn errors_in_a_row_back_off_to_the_class_limit_and_start_over_after_quiet() {
        let backoff = Backoff::default();
        let key = || ("team-a".to_owned(), "prod".to_owned());
        let throttled = "DescribeVpcs: RequestLimitExceeded";
        let waits: Vec<u64> = (0..6)
            .map(|_| backoff.next(key(), ErrorClass::Throttled, throttled).as_secs())
            .collect();
        assert_eq!(waits, [2, 4, 8, 16, 30, 30]);
        assert_eq!(
            backoff.next(("team-b".into(), "prod".into()), ErrorClass::Throttled, throttled),
            Duration::from_secs(2),
            "each object has its own"
        );
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(
            backoff.next(key(), ErrorClass::Throttled, throttled),
            Duration::from_secs(2),
            "quiet long enough: start over"
        );
        assert_eq!(
            backoff.next(key(), ErrorClass::Throttled, throttled),
            Duration::from_secs(4)
        );
        assert_eq!(
            backoff.next(
                key(),
                ErrorClass::Throttled,
                "CreateRouteTable: RequestLimitExceeded"
            ),
            Duration::from_secs(2),
            "a failure further on starts over"
        );
        assert_eq!(
            backoff.next(key(), ErrorClass::Invalid, "bad CIDR"),
            Duration::from_secs(300)
        );
        assert_eq!(
            backoff.next(key(), ErrorClass::Conflict, "bad CIDR"),
            Duration::from_secs(1)
        );
    }
}
