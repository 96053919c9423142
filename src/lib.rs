//! ram-authenticator: a Kubernetes token-authentication webhook for Alibaba Cloud RAM identities.
//!
//! The request path, top to bottom: [`review`] decodes a TokenReview, [`token`] parses and
//! checks the token locally, [`cache`] remembers identities STS confirmed, [`sts`] asks STS,
//! [`mapping`] turns the identity into a Kubernetes user, and [`review`] encodes the answer.

pub mod signing;
pub mod token;
pub mod types;
