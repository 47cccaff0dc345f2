//! AWS errors classified in one place: every failed call becomes an [`AwsError`] whose [`AwsErrorKind`]
//! comes from the error code (and HTTP status), and whose [`ErrorClass`] drives the requeue.

use std::fmt;

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response as HttpResponse;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use kubezero_capi::runtime::errors::ErrorClass;

/// What went wrong with an AWS call, as far as a reconcile cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AwsErrorKind {
    /// The API asked us to slow down (`RequestLimitExceeded`, `Throttling`, HTTP 429).
    Throttled,
    /// The resource does not exist (`*.NotFound`, `NoSuchEntity`, `LoadBalancerNotFound`).
    NotFound,
    /// Something still depends on the resource (`DependencyViolation`, `*InUse`, `DeleteConflict`,
    /// an instance or gateway in the wrong state): retry once the dependent is gone.
    InUse,
    /// A resource with that name or rule already exists (`*.Duplicate`, `EntityAlreadyExists`).
    AlreadyExists,
    /// The request is invalid; retrying it unchanged will not help.
    Invalid,
    /// An account quota is exhausted (`VpcLimitExceeded`, `TooManyLoadBalancers`).
    QuotaExceeded,
    /// Credentials are missing, expired or lack a permission.
    Auth,
    /// 5xx, timeouts, connection failures, capacity shortages: retry soon.
    Transient,
    /// Anything else.
    Other,
}

impl AwsErrorKind {
    /// The project-wide error class the error policy requeues by.
    pub fn class(self) -> ErrorClass {
        match self {
            AwsErrorKind::Throttled => ErrorClass::Throttled,
            AwsErrorKind::NotFound => ErrorClass::NotFound,
            AwsErrorKind::InUse | AwsErrorKind::AlreadyExists => ErrorClass::Conflict,
            AwsErrorKind::Invalid | AwsErrorKind::QuotaExceeded => ErrorClass::Invalid,
            AwsErrorKind::Auth => ErrorClass::Auth,
            AwsErrorKind::Transient => ErrorClass::Transient,
            AwsErrorKind::Other => ErrorClass::Other,
        }
    }

    /// Whether the call may succeed when simply sent again a little later.
    pub fn is_retryable(self) -> bool {
        matches!(self, AwsErrorKind::Throttled | AwsErrorKind::Transient)
    }
}

const THROTTLING_CODES: &[&str] = &[
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "SlowDown",
    "BandwidthLimitExceeded",
    "EC2ThrottledException",
    "PriorRequestNotComplete",
];

const AUTH_CODES: &[&str] = &[
    "AuthFailure",
    "UnauthorizedOperation",
    "AccessDenied",
    "AccessDeniedException",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "InvalidAccessKeyId",
    "ExpiredToken",
    "ExpiredTokenException",
    "RequestExpired",
    "OptInRequired",
    "Blocked",
];

const TRANSIENT_CODES: &[&str] = &[
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "ServiceFailure",
    "Unavailable",
    "RequestTimeout",
    "RequestTimeoutException",
    "InsufficientInstanceCapacity",
    "InsufficientAddressCapacity",
    "InsufficientCapacity",
    "InsufficientFreeAddressesInSubnet",
];

const IN_USE_CODES: &[&str] = &[
    "DependencyViolation",
    "DeleteConflict",
    "ResourceInUse",
    "IncorrectState",
    "IncorrectInstanceState",
    "InvalidState",
    "InvalidStateException",
    "ConcurrentModification",
    "OperationNotPermitted",
    "Gateway.NotAttached",
];

const NOT_FOUND_CODES: &[&str] = &["NoSuchEntity", "InvalidTarget"];

/// Classifies an AWS error code (and the HTTP status when there is one). Pure; the table every
/// module relies on.
pub fn classify_code(code: &str, status: Option<u16>) -> AwsErrorKind {
    if THROTTLING_CODES.contains(&code) || status == Some(429) {
        return AwsErrorKind::Throttled;
    }
    if AUTH_CODES.contains(&code) {
        return AwsErrorKind::Auth;
    }
    if code == "Gateway.NotAttached" {
        // Detaching an internet gateway that is no longer attached: already done.
        return AwsErrorKind::NotFound;
    }
    if NOT_FOUND_CODES.contains(&code) || code.ends_with("NotFound") || code.ends_with("NotFoundException") {
        return AwsErrorKind::NotFound;
    }
    if IN_USE_CODES.contains(&code) || code.ends_with(".InUse") || code.ends_with("InUse") {
        return AwsErrorKind::InUse;
    }
    if code.contains("Duplicate")
        || code.contains("AlreadyExists")
        || code.ends_with("AlreadyAssociated")
        || code == "IdempotentParameterMismatch"
    {
        return AwsErrorKind::AlreadyExists;
    }
    if code.ends_with("LimitExceeded") || code.starts_with("TooMany") || code == "LimitExceeded" {
        return AwsErrorKind::QuotaExceeded;
    }
    if TRANSIENT_CODES.contains(&code) {
        return AwsErrorKind::Transient;
    }
    if code.starts_with("Invalid")
        || code.starts_with("Missing")
        || code.starts_with("Malformed")
        || code.starts_with("Validation")
        || code.starts_with("Unsupported")
    {
        return AwsErrorKind::Invalid;
    }
    match status {
        Some(401 | 403) => AwsErrorKind::Auth,
        Some(404) => AwsErrorKind::NotFound,
        Some(s) if s >= 500 => AwsErrorKind::Transient,
        Some(400..=499) => AwsErrorKind::Invalid,
        _ => AwsErrorKind::Other,
    }
}

/// A failed AWS API call: which operation, the AWS code and message, and its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsError {
    /// The API operation, e.g. `CreateVpc`.
    pub operation: &'static str,
    /// AWS error code, e.g. `InvalidVpcID.NotFound`; empty when no response arrived.
    pub code: String,
    /// AWS error message or the transport failure.
    pub message: String,
    /// HTTP status of the response, when there was one.
    pub status: Option<u16>,
    /// Classification of the error.
    pub kind: AwsErrorKind,
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.code.is_empty() {
            write!(f, "AWS {} failed: {}", self.operation, self.message)
        } else {
            write!(
                f,
                "AWS {} failed: {}: {}",
                self.operation, self.code, self.message
            )
        }
    }
}

impl std::error::Error for AwsError {}

impl AwsError {
    /// Builds an error from an SDK error of `operation`.
    pub fn from_sdk<E>(operation: &'static str, error: &SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let status = error.raw_response().map(|r| r.status().as_u16());
        match error {
            SdkError::ServiceError(service) => {
                let inner = service.err();
                let code = inner.code().unwrap_or_default().to_owned();
                let message = inner
                    .message()
                    .map(str::to_owned)
                    .unwrap_or_else(|| inner.to_string());
                let kind = classify_code(&code, status);
                Self {
                    operation,
                    code,
                    message,
                    status,
                    kind,
                }
            }
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => Self {
                operation,
                code: String::new(),
                message: error_chain(error),
                status,
                kind: match status {
                    Some(s) if (400..500).contains(&s) && s != 429 => classify_code("", status),
                    _ => AwsErrorKind::Transient,
                },
            },
            _ => Self {
                operation,
                code: String::new(),
                message: error_chain(error),
                status,
                kind: AwsErrorKind::Invalid,
            },
        }
    }

    /// An error that did not come from the SDK (e.g. a response missing a field we need).
    pub fn unexpected(operation: &'static str, message: impl Into<String>) -> Self {
        Self {
            operation,
            code: String::new(),
            message: message.into(),
            status: None,
            kind: AwsErrorKind::Other,
        }
    }

    /// The project-wide error class.
    pub fn class(&self) -> ErrorClass {
        self.kind.class()
    }

    /// The resource is gone (a delete of it is done).
    pub fn is_not_found(&self) -> bool {
        self.kind == AwsErrorKind::NotFound
    }

    /// EC2 does not know the image id asked for (malformed or not found).
    pub fn is_unknown_image(&self) -> bool {
        self.is_not_found() || self.code.starts_with("InvalidAMIID")
    }

    /// EC2 does not know the instance type asked for.
    pub fn is_unknown_instance_type(&self) -> bool {
        self.code.starts_with("InvalidInstanceType")
    }

    /// EC2 lacks the capacity (instances, addresses) the call asked for; a smaller request may fit.
    pub fn is_insufficient_capacity(&self) -> bool {
        self.code.starts_with("Insufficient")
    }

    /// The resource or rule exists already.
    pub fn is_already_exists(&self) -> bool {
        self.kind == AwsErrorKind::AlreadyExists
    }

    /// Something still depends on the resource.
    pub fn is_in_use(&self) -> bool {
        self.kind == AwsErrorKind::InUse
    }

    /// The API throttled the call.
    pub fn is_throttled(&self) -> bool {
        self.kind == AwsErrorKind::Throttled
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Maps `Err(NotFound)` to `Ok(None)`: for lookups and deletes where "gone" is an answer.
pub fn ok_if_not_found<T>(result: Result<T, AwsError>) -> Result<Option<T>, AwsError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(error) if error.is_not_found() => Ok(None),
        Err(error) => Err(error),
    }
}

/// Maps `Err(AlreadyExists)` to `Ok(())`: for creates where "exists" is the goal.
pub fn ok_if_already_exists<T>(result: Result<T, AwsError>) -> Result<(), AwsError> {
    match result {
        Ok(_) => Ok(()),
        Err(error) if error.is_already_exists() => Ok(()),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_codes_are_throttled_whatever_the_status() {
        for code in [
            "RequestLimitExceeded",
            "Throttling",
            "ThrottlingException",
            "SlowDown",
        ] {
            assert_eq!(classify_code(code, Some(503)), AwsErrorKind::Throttled, "{code}");
            assert_eq!(classify_code(code, Some(400)), AwsErrorKind::Throttled, "{code}");
        }
        assert_eq!(classify_code("", Some(429)), AwsErrorKind::Throttled);
    }

    fn answered(operation: &'static str, code: &str) -> AwsError {
        AwsError {
            operation,
            code: code.to_owned(),
            message: String::new(),
            status: Some(400),
            kind: classify_code(code, Some(400)),
        }
    }

    #[test]
    fn unknown_images_instance_types_and_short_capacity_are_told_by_code() {
        assert!(answered("DescribeImages", "InvalidAMIID.Malformed").is_unknown_image());
        assert!(answered("DescribeImages", "InvalidAMIID.NotFound").is_unknown_image());
        assert!(!answered("DescribeImages", "UnauthorizedOperation").is_unknown_image());
        assert!(answered("DescribeInstanceTypes", "InvalidInstanceType").is_unknown_instance_type());
        assert!(!answered("DescribeInstanceTypes", "InvalidParameterValue").is_unknown_instance_type());
        assert!(answered("RunInstances", "InsufficientInstanceCapacity").is_insufficient_capacity());
        assert!(!answered("RunInstances", "InstanceLimitExceeded").is_insufficient_capacity());
    }

    #[test]
    fn not_found_codes_of_ec2_elbv2_and_iam() {
        for code in [
            "InvalidVpcID.NotFound",
            "InvalidSubnetID.NotFound",
            "InvalidGroup.NotFound",
            "InvalidInternetGatewayID.NotFound",
            "InvalidRouteTableID.NotFound",
            "InvalidAllocationID.NotFound",
            "NatGatewayNotFound",
            "InvalidInstanceID.NotFound",
            "LoadBalancerNotFound",
            "TargetGroupNotFound",
            "ListenerNotFound",
            "NoSuchEntity",
            "Gateway.NotAttached",
        ] {
            assert_eq!(classify_code(code, Some(400)), AwsErrorKind::NotFound, "{code}");
        }
    }

    #[test]
    fn dependencies_duplicates_and_user_errors() {
        assert_eq!(
            classify_code("DependencyViolation", Some(400)),
            AwsErrorKind::InUse
        );
        assert_eq!(classify_code("DeleteConflict", Some(409)), AwsErrorKind::InUse);
        assert_eq!(classify_code("ResourceInUse", Some(400)), AwsErrorKind::InUse);
        assert_eq!(
            classify_code("InvalidGroup.InUse", Some(400)),
            AwsErrorKind::InUse
        );
        assert_eq!(
            classify_code("InvalidPermission.Duplicate", Some(400)),
            AwsErrorKind::AlreadyExists
        );
        assert_eq!(
            classify_code("InvalidGroup.Duplicate", Some(400)),
            AwsErrorKind::AlreadyExists
        );
        assert_eq!(
            classify_code("EntityAlreadyExists", Some(409)),
            AwsErrorKind::AlreadyExists
        );
        assert_eq!(
            classify_code("DuplicateLoadBalancerName", Some(400)),
            AwsErrorKind::AlreadyExists
        );
        assert_eq!(
            classify_code("RouteAlreadyExists", Some(400)),
            AwsErrorKind::AlreadyExists
        );
        assert_eq!(
            classify_code("InvalidParameterValue", Some(400)),
            AwsErrorKind::Invalid
        );
        assert_eq!(
            classify_code("MalformedPolicyDocument", Some(400)),
            AwsErrorKind::Invalid
        );
        assert_eq!(classify_code("ValidationError", Some(400)), AwsErrorKind::Invalid);
        assert_eq!(
            classify_code("VpcLimitExceeded", Some(400)),
            AwsErrorKind::QuotaExceeded
        );
        assert_eq!(
            classify_code("TooManyLoadBalancers", Some(400)),
            AwsErrorKind::QuotaExceeded
        );
    }

    #[test]
    fn auth_and_server_errors() {
        assert_eq!(
            classify_code("UnauthorizedOperation", Some(403)),
            AwsErrorKind::Auth
        );
        assert_eq!(classify_code("ExpiredToken", Some(400)), AwsErrorKind::Auth);
        assert_eq!(classify_code("", Some(403)), AwsErrorKind::Auth);
        assert_eq!(classify_code("InternalError", Some(500)), AwsErrorKind::Transient);
        assert_eq!(classify_code("Unavailable", Some(503)), AwsErrorKind::Transient);
        assert_eq!(classify_code("SomethingNew", Some(502)), AwsErrorKind::Transient);
        assert_eq!(classify_code("SomethingNew", None), AwsErrorKind::Other);
    }

    #[test]
    fn kinds_map_onto_the_project_error_classes() {
        assert_eq!(AwsErrorKind::Throttled.class(), ErrorClass::Throttled);
        assert_eq!(AwsErrorKind::NotFound.class(), ErrorClass::NotFound);
        assert_eq!(AwsErrorKind::InUse.class(), ErrorClass::Conflict);
        assert_eq!(AwsErrorKind::AlreadyExists.class(), ErrorClass::Conflict);
        assert_eq!(AwsErrorKind::Invalid.class(), ErrorClass::Invalid);
        assert_eq!(AwsErrorKind::Auth.class(), ErrorClass::Auth);
        assert_eq!(AwsErrorKind::Transient.class(), ErrorClass::Transient);
        assert!(AwsErrorKind::Throttled.is_retryable());
        assert!(!AwsErrorKind::Invalid.is_retryable());
    }

    #[test]
    fn not_found_is_an_answer_for_lookups() {
        let gone = AwsError {
            operation: "DeleteVpc",
            code: "InvalidVpcID.NotFound".into(),
            message: "gone".into(),
            status: Some(400),
            kind: AwsErrorKind::NotFound,
        };
        assert_eq!(ok_if_not_found::<()>(Err(gone.clone())), Ok(None));
        assert_eq!(
            gone.to_string(),
            "AWS DeleteVpc failed: InvalidVpcID.NotFound: gone"
        );
    }
}
