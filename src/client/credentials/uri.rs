//! A credentials URI (`ALIBABA_CLOUD_CREDENTIALS_URI`, or an aliyun CLI profile of mode
//! `CredentialsURI`): a GET that answers
//! `{"Code":"Success","AccessKeyId","AccessKeySecret","SecurityToken","Expiration"}`. Any other
//! answer is refused.

use std::time::Duration;

use super::{
    describe, env_var, http_client, parse_code_credentials, read_capped, Context, CredentialError,
    Found, Lookup, Provider, Source,
};
use crate::client::assume_role::TempCredentials;

pub const URI_ENV: &str = "ALIBABA_CLOUD_CREDENTIALS_URI";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A URL that serves credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialsUri {
    pub url: String,
}

/// `ALIBABA_CLOUD_CREDENTIALS_URI`.
pub struct UriEnv;

impl Source for UriEnv {
    fn locate(&self, ctx: &Context<'_>) -> Result<Lookup, CredentialError> {
        Ok(match env_var(ctx.env, URI_ENV) {
            None => Lookup::NotHere(format!("credentials URI ({URI_ENV}: not set)")),
            Some(url) => Lookup::Found(Box::new(Found {
                provider: Provider::Uri(CredentialsUri {
                    url: url.trim().to_string(),
                }),
                role: None,
                source: format!("credentials URI ({URI_ENV})"),
                profile: None,
                probe: false,
            })),
        })
    }
}

impl CredentialsUri {
    /// The URL without credentials in it (user info, query), for messages.
    pub fn shown(&self) -> String {
        let bare = self.url.split(['?', '#']).next().unwrap_or(&self.url);
        match bare.split_once("://") {
            Some((scheme, rest)) => {
                let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                let host = authority.rsplit('@').next().unwrap_or(authority);
                format!("{scheme}://{host}{path}")
            }
            None => bare.to_string(),
        }
    }

    /// GETs the credentials.
    pub async fn fetch(&self) -> Result<TempCredentials, CredentialError> {
        let failed = |detail: String| CredentialError::Failed {
            what: format!("credentials URI {}", self.shown()),
            detail,
        };
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(failed("not an http:// or https:// URL".into()));
        }
        let http = http_client(CONNECT_TIMEOUT, REQUEST_TIMEOUT).map_err(failed)?;
        let resp = http
            .get(&self.url)
            .send()
            .await
            .map_err(|e| failed(describe(&e)))?;
        let status = resp.status();
        let body = read_capped(resp).await.map_err(failed)?;
        if !status.is_success() {
            return Err(failed(format!("answered HTTP {}", status.as_u16())));
        }
        parse_code_credentials(&body).map_err(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_hide_secrets_in_the_url() {
        let shown = |url: &str| CredentialsUri { url: url.into() }.shown();
        assert_eq!(
            shown("https://u:SECRET@creds.example/v1/c?token=SECRET#x"),
            "https://creds.example/v1/c"
        );
        assert_eq!(shown("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_eq!(shown("not a url?x"), "not a url");
    }
}
