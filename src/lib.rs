//! ram-authenticator: a Kubernetes token-authentication webhook for Alibaba Cloud RAM identities.
//!
//! The request path, top to bottom: [`review`] decodes a TokenReview, [`token`] parses and
//! checks the token locally, [`authenticator`] caches identities STS confirmed, [`sts`] asks STS,
//! [`mapping`] turns the identity into a Kubernetes user, and [`review`] encodes the answer.

pub mod arn;
pub mod audit;
pub mod authenticator;
pub mod build_info;
pub mod cli;
pub mod client;
pub mod config;
pub mod emulator;
pub mod files;
pub mod kube;
pub mod logging;
pub mod mapping;
pub mod metrics;
pub mod output;
pub mod review;
pub mod server;
pub mod signing;
pub mod sts;
pub mod token;
pub mod types;
