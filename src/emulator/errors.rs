//! The STS error codes the emulator answers with, their HTTP statuses and messages.
//!
//! Messages are written for the caller and never quote a signature, a secret or a security
//! token; untrusted text they do quote (an action name, a date, an ARN) is shortened.

use crate::sts::ErrorBody;

/// The host name STS reports in `HostId`.
pub const HOST_ID: &str = "sts.aliyuncs.com";

/// One reason STS refuses a request. [`StsErrorCode::code`] is the real STS `Code`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StsErrorCode {
    #[error("Specified access key is not found.")]
    AccessKeyNotFound,
    #[error("Specified access key is disabled.")]
    AccessKeyInactive,
    #[error("Specified signature is not matched with our calculation.")]
    SignatureDoesNotMatch,
    #[error("The request signature does not conform to Aliyun standards: {0}.")]
    IncompleteSignature(String),
    #[error(
        "Specified time stamp or date value is expired: {date} is more than 15 minutes away from the server time {now}."
    )]
    TimestampExpired { date: String, now: String },
    #[error(
        "Specified time stamp or date value {0:?} is not well formatted (want YYYY-MM-DDThh:mm:ssZ)."
    )]
    TimestampFormat(String),
    #[error("Specified signature nonce was used already.")]
    SignatureNonceUsed,
    #[error("SecurityToken is mandatory for this action: this AccessKey is temporary and needs its security token.")]
    MissingSecurityToken,
    #[error("Specified SecurityToken mismatch with the AccessKey.")]
    SecurityTokenMismatch,
    #[error("Specified SecurityToken is malformed: this AccessKey takes no security token.")]
    SecurityTokenMalformed,
    #[error("Specified SecurityToken is expired.")]
    SecurityTokenExpired,
    #[error("Specified api {0:?} is not found, please check your url and method.")]
    ActionNotFound(String),
    #[error("Specified parameter Version {0:?} is not valid (want 2015-04-01).")]
    InvalidVersion(String),
    #[error(
        "The input parameter {0:?} that is mandatory for processing this request is not supplied."
    )]
    MissingParameter(String),
    #[error("The parameter {0:?} appears more than once.")]
    DuplicateParameter(String),
    #[error("The query string or form body is not valid percent-encoded UTF-8.")]
    MalformedQuery,
    #[error("The request has more than {0} parameters.")]
    TooManyParameters(usize),
    #[error("The parameter RoleSessionName is wrongly formed: 2 to 64 characters of A-Z a-z 0-9 . @ - _.")]
    InvalidRoleSessionName,
    #[error("The parameter DurationSeconds {0:?} is not valid: a whole number from 900 to 43200.")]
    InvalidDurationSeconds(String),
    #[error("The role not exists: {0}.")]
    RoleNotFound(String),
    #[error("You are not authorized to do this action: {0}")]
    NoPermission(String),
    #[error("HTTP method {0} is not supported; use GET or POST.")]
    UnsupportedMethod(String),
    #[error("The OIDCToken is invalid: {0}.")]
    OidcTokenInvalid(String),
    #[error("OIDC token validate failed: invalid signature.")]
    OidcTokenSignature,
    #[error("This JsonWebToken is expired.")]
    OidcTokenExpired,
    #[error("Invalid issuer: the token's iss is not the issuer URL of the OIDC provider.")]
    OidcIssuerNotMatch,
    #[error(
        "Invalid audience: the token's aud holds none of the client IDs of the OIDC provider."
    )]
    OidcAudienceNotMatch,
    #[error("There is no permission: {0}")]
    AuthNoPermission(String),
    #[error("The parameter Policy is not a JSON policy document of at most 2048 characters.")]
    InvalidPolicy,
    #[error("Request was denied due to user flow control.")]
    Throttling,
    #[error("The request processing has failed due to some unknown error, exception or failure.")]
    InternalError,
}

impl StsErrorCode {
    /// The STS error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::AccessKeyNotFound => "InvalidAccessKeyId.NotFound",
            Self::AccessKeyInactive => "InvalidAccessKeyId.Inactive",
            Self::SignatureDoesNotMatch => "SignatureDoesNotMatch",
            Self::IncompleteSignature(_) => "IncompleteSignature",
            Self::TimestampExpired { .. } => "InvalidTimeStamp.Expired",
            Self::TimestampFormat(_) => "InvalidTimeStamp.Format",
            Self::SignatureNonceUsed => "SignatureNonceUsed",
            Self::MissingSecurityToken => "MissingSecurityToken",
            Self::SecurityTokenMismatch => "InvalidSecurityToken.MismatchWithAccessKey",
            Self::SecurityTokenMalformed => "InvalidSecurityToken.Malformed",
            Self::SecurityTokenExpired => "InvalidSecurityToken.Expired",
            Self::ActionNotFound(_) => "InvalidAction.NotFound",
            Self::InvalidVersion(_) => "InvalidVersion",
            Self::MissingParameter(_) => "MissingParameter",
            Self::DuplicateParameter(_) | Self::MalformedQuery | Self::TooManyParameters(_) => {
                "InvalidParameter"
            }
            Self::InvalidRoleSessionName => "InvalidParameter.RoleSessionName",
            Self::InvalidDurationSeconds(_) => "InvalidParameter.DurationSeconds",
            Self::RoleNotFound(_) => "EntityNotExist.Role",
            Self::NoPermission(_) => "NoPermission",
            Self::UnsupportedMethod(_) => "UnsupportedHTTPMethod",
            Self::OidcTokenInvalid(_) => "AuthenticationFail.OIDCToken.Invalid",
            Self::OidcTokenSignature => "AuthenticationFail.OIDCToken.InvalidSignature",
            Self::OidcTokenExpired => "AuthenticationFail.OIDCToken.Expired",
            Self::OidcIssuerNotMatch => "AuthenticationFail.OIDCToken.IssuerNotMatch",
            Self::OidcAudienceNotMatch => "AuthenticationFail.OIDCToken.AudienceNotMatch",
            Self::AuthNoPermission(_) => "AuthenticationFail.NoPermission",
            Self::InvalidPolicy => "InvalidParameter.PolicyGrammar",
            Self::Throttling => "Throttling.User",
            Self::InternalError => "InternalError",
        }
    }

    /// The HTTP status STS answers this error with.
    pub fn status(&self) -> u16 {
        match self {
            Self::AccessKeyNotFound | Self::ActionNotFound(_) | Self::RoleNotFound(_) => 404,
            Self::NoPermission(_) => 403,
            Self::OidcTokenInvalid(_)
            | Self::OidcTokenSignature
            | Self::OidcTokenExpired
            | Self::OidcIssuerNotMatch
            | Self::OidcAudienceNotMatch
            | Self::AuthNoPermission(_) => 401,
            Self::UnsupportedMethod(_) => 405,
            Self::InternalError => 500,
            // STS answers throttling with 400, not 429.
            _ => 400,
        }
    }

    /// The JSON error body.
    pub fn body(&self, request_id: &str) -> ErrorBody {
        let code = self.code();
        ErrorBody {
            request_id: request_id.to_string(),
            host_id: HOST_ID.to_string(),
            code: code.to_string(),
            message: self.to_string(),
            recommend: format!("https://api.aliyun.com/troubleshoot?q={code}&product=Sts"),
        }
    }
}

/// Untrusted text cut to a length fit for a message or a log line.
pub(crate) fn shorten(s: &str) -> String {
    crate::types::shorten(s, 128)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_statuses() {
        assert_eq!(StsErrorCode::AccessKeyNotFound.status(), 404);
        assert_eq!(StsErrorCode::SignatureDoesNotMatch.status(), 400);
        assert_eq!(StsErrorCode::Throttling.status(), 400);
        assert_eq!(StsErrorCode::Throttling.code(), "Throttling.User");
        assert_eq!(StsErrorCode::InternalError.status(), 500);
        assert_eq!(StsErrorCode::NoPermission(String::new()).status(), 403);
        assert_eq!(
            StsErrorCode::SecurityTokenMismatch.code(),
            "InvalidSecurityToken.MismatchWithAccessKey"
        );
    }

    #[test]
    fn body_has_every_field() {
        let body = StsErrorCode::MissingParameter("RoleArn".into()).body("R-1");
        let json = serde_json::to_value(&body).expect("json");
        assert_eq!(json["RequestId"], "R-1");
        assert_eq!(json["HostId"], HOST_ID);
        assert_eq!(json["Code"], "MissingParameter");
        assert!(json["Message"]
            .as_str()
            .is_some_and(|m| m.contains("RoleArn")));
        assert!(json["Recommend"]
            .as_str()
            .is_some_and(|m| m.contains("MissingParameter")));
    }

    #[test]
    fn shorten_cuts_long_text() {
        assert_eq!(shorten("abc"), "abc");
        assert_eq!(shorten(&"x".repeat(300)).chars().count(), 129);
    }
}
