//! The environment's AccessKey (first in the chain).

use super::{env_var, Context, CredentialError, Credentials, Env, Found, Lookup, Source};

const ENV_ID: [&str; 2] = ["ALIBABA_CLOUD_ACCESS_KEY_ID", "ALICLOUD_ACCESS_KEY"];
const ENV_SECRET: [&str; 2] = ["ALIBABA_CLOUD_ACCESS_KEY_SECRET", "ALICLOUD_SECRET_KEY"];
const ENV_TOKEN: [&str; 2] = [
    "ALIBABA_CLOUD_SECURITY_TOKEN",
    "ALICLOUD_ACCESS_KEY_STS_TOKEN",
];

/// `ALIBABA_CLOUD_ACCESS_KEY_ID` and friends.
pub struct Environment;

impl Source for Environment {
    fn locate(&self, ctx: &Context<'_>) -> Result<Lookup, CredentialError> {
        Ok(match from_env(ctx.env)? {
            Some(found) => Lookup::Found(Box::new(found)),
            None => Lookup::NotHere(format!(
                "environment ({} / {}: not set)",
                ENV_ID[0], ENV_ID[1]
            )),
        })
    }
}

/// The first of `names` that is set, with its name.
fn first_set<'a>(env: &'a Env, names: &[&'static str]) -> Option<(&'static str, &'a str)> {
    names.iter().find_map(|n| env_var(env, n).map(|v| (*n, v)))
}

/// Credentials from the environment, `None` when none of the variables is set.
pub fn from_env(env: &Env) -> Result<Option<Found>, CredentialError> {
    let id = first_set(env, &ENV_ID);
    let secret = first_set(env, &ENV_SECRET);
    let token = first_set(env, &ENV_TOKEN);
    match (id, secret) {
        (Some((id_name, id)), Some((_, secret))) => Ok(Some(Found::fixed(
            Credentials::new(id, secret, token.map(|(_, t)| t)),
            format!("environment ({id_name})"),
            None,
        ))),
        (Some((set, _)), None) => Err(CredentialError::EnvIncomplete {
            set,
            missing: if set == ENV_ID[0] {
                ENV_SECRET[0]
            } else {
                ENV_SECRET[1]
            },
        }),
        (None, Some((set, _))) => Err(CredentialError::EnvIncomplete {
            set,
            missing: if set == ENV_SECRET[0] {
                ENV_ID[0]
            } else {
                ENV_ID[1]
            },
        }),
        (None, None) => match token {
            Some((set, _)) => Err(CredentialError::EnvIncomplete {
                set,
                missing: if set == ENV_TOKEN[0] {
                    "ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET"
                } else {
                    "ALICLOUD_ACCESS_KEY and ALICLOUD_SECRET_KEY"
                },
            }),
            None => Ok(None),
        },
    }
}
