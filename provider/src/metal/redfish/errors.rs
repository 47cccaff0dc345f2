//! Redfish errors classified in one place: every failed BMC call becomes a [`RedfishError`] whose
//! [`RedfishErrorKind`] comes from the HTTP status or the transport failure, and whose kind gives
//! both the requeue class and the condition reason a host reports.

use kubezero_capi::runtime::errors::ErrorClass;

/// What went wrong talking to a BMC, as far as a reconcile cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RedfishErrorKind {
    /// The BMC address cannot be used (scheme, path, several systems and none named).
    Address,
    /// The BMC refused the credentials (HTTP 401, 403, or a session that cannot be created).
    Auth,
    /// No connection: refused, unresolvable, TLS handshake or certificate failure.
    Unreachable,
    /// The BMC took longer than the request timeout.
    Timeout,
    /// The BMC answered 5xx.
    Server,
    /// The resource does not exist (HTTP 404).
    NotFound,
    /// The BMC rejected the request (other 4xx: wrong state, bad value).
    Rejected,
    /// The BMC lacks what the operation needs (a reset type, boot target or media slot).
    Unsupported,
    /// The answer was not the Redfish document expected.
    Protocol,
}

impl RedfishErrorKind {
    /// The project-wide error class the error policy requeues by.
    pub fn class(self) -> ErrorClass {
        match self {
            RedfishErrorKind::Address | RedfishErrorKind::Unsupported => ErrorClass::Invalid,
            RedfishErrorKind::Auth => ErrorClass::Auth,
            RedfishErrorKind::Unreachable | RedfishErrorKind::Timeout | RedfishErrorKind::Server => {
                ErrorClass::Transient
            }
            RedfishErrorKind::NotFound => ErrorClass::NotFound,
            RedfishErrorKind::Rejected => ErrorClass::Conflict,
            RedfishErrorKind::Protocol => ErrorClass::Other,
        }
    }

    /// Whether the request may succeed when simply sent again a little later.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            RedfishErrorKind::Unreachable | RedfishErrorKind::Timeout | RedfishErrorKind::Server
        )
    }

    /// The reason a KubeZeroHost condition gives for this failure.
    pub fn reason(self) -> &'static str {
        match self {
            RedfishErrorKind::Address => "InvalidBMCAddress",
            RedfishErrorKind::Auth => "BMCAuthFailed",
            RedfishErrorKind::Unreachable | RedfishErrorKind::Timeout => "BMCUnreachable",
            RedfishErrorKind::Unsupported => "BMCUnsupported",
            RedfishErrorKind::Server
            | RedfishErrorKind::NotFound
            | RedfishErrorKind::Rejected
            | RedfishErrorKind::Protocol => "BMCError",
        }
    }
}

/// A failed BMC operation: what was asked of which BMC, and why it failed.
#[derive(Debug, thiserror::Error)]
#[error("Redfish {operation} on {bmc}: {detail}")]
pub struct RedfishError {
    /// The classification.
    pub kind: RedfishErrorKind,
    /// The operation (the `operation` label of the request counter).
    pub operation: &'static str,
    /// The BMC (`host:port`).
    pub bmc: String,
    /// What happened, with the HTTP status or the transport error chain.
    pub detail: String,
}

impl RedfishError {
    /// An error of `kind` from `operation` on `bmc`.
    pub fn new(
        kind: RedfishErrorKind,
        operation: &'static str,
        bmc: &str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            operation,
            bmc: bmc.to_string(),
            detail: detail.into(),
        }
    }

    /// The error an HTTP `status` answer (not 2xx) gives; `body` is the start of the answer, which
    /// for Redfish carries `error.@Message.ExtendedInfo`.
    pub fn from_status(operation: &'static str, bmc: &str, path: &str, status: u16, body: &str) -> Self {
        let kind = match status {
            401 | 403 => RedfishErrorKind::Auth,
            404 => RedfishErrorKind::NotFound,
            405 | 501 => RedfishErrorKind::Unsupported,
            500..=599 => RedfishErrorKind::Server,
            _ => RedfishErrorKind::Rejected,
        };
        let message = redfish_message(body);
        let detail = match message {
            Some(message) => format!("{path}: HTTP {status}: {message}"),
            None => format!("{path}: HTTP {status}"),
        };
        Self::new(kind, operation, bmc, detail)
    }

    /// The error a transport failure gives (no HTTP answer).
    pub fn from_transport(operation: &'static str, bmc: &str, path: &str, error: &reqwest::Error) -> Self {
        let kind = if error.is_timeout() {
            RedfishErrorKind::Timeout
        } else {
            RedfishErrorKind::Unreachable
        };
        Self::new(kind, operation, bmc, format!("{path}: {}", error_chain(error)))
    }

    /// The condition reason for this error.
    pub fn reason(&self) -> &'static str {
        self.kind.reason()
    }
}

/// The human message of a Redfish error body (`error.message`, else the first extended info
/// message), if the body is one.
fn redfish_message(body: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    let error = value.get("error")?;
    let extended = error
        .get("@Message.ExtendedInfo")
        .and_then(|info| info.get(0))
        .and_then(|info| info.get("Message"))
        .and_then(|message| message.as_str());
    let message = error.get("message").and_then(|message| message.as_str());
    match (message, extended) {
        (Some(message), Some(extended)) if message != extended => Some(format!("{message} ({extended})")),
        (Some(message), _) => Some(message.to_string()),
        (None, Some(extended)) => Some(extended.to_string()),
        (None, None) => None,
    }
}

/// `error` and its sources, joined by `: ` (reqwest's own message hides the cause).
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        let kind = |status| RedfishError::from_status("GetSystem", "bmc:443", "/x", status, "").kind;
        assert_eq!(kind(401), RedfishErrorKind::Auth);
        assert_eq!(kind(403), RedfishErrorKind::Auth);
        assert_eq!(kind(404), RedfishErrorKind::NotFound);
        assert_eq!(kind(400), RedfishErrorKind::Rejected);
        assert_eq!(kind(409), RedfishErrorKind::Rejected);
        assert_eq!(kind(405), RedfishErrorKind::Unsupported);
        assert_eq!(kind(500), RedfishErrorKind::Server);
        assert_eq!(kind(503), RedfishErrorKind::Server);
        assert!(kind(503).is_retryable() && !kind(400).is_retryable() && !kind(401).is_retryable());
        assert_eq!(kind(401).reason(), "BMCAuthFailed");
        assert_eq!(kind(401).class(), ErrorClass::Auth);
    }

    #[test]
    fn redfish_error_bodies_become_the_message() {
        let body = r#"{"error": {"code": "Base.1.0.GeneralError", "message": "A general error has occurred.",
            "@Message.ExtendedInfo": [{"Message": "The power is already on."}]}}"#;
        let error = RedfishError::from_status("Reset", "bmc:443", "/redfish/v1/Systems/1", 409, body);
        assert_eq!(
            error.to_string(),
            "Redfish Reset on bmc:443: /redfish/v1/Systems/1: HTTP 409: A general error has occurred. \
             (The power is already on.)"
        );
        let plain = RedfishError::from_status("Reset", "bmc:443", "/p", 500, "<html>oops</html>");
        assert_eq!(plain.detail, "/p: HTTP 500");
    }
}
