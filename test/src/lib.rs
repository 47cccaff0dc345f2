//! kubezero's test support: the test world shared by the end-to-end suites, and offline validation of
//! manifests against the kubezero CRDs ([`validation`]).

#![deny(missing_docs)]

pub mod validation;
