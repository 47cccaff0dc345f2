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

    /// How long to wait before reconciling again after an error of this class.
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
