//! Username and group templates: `{{AccountID}}`, `{{SessionName}}` (with `@` replaced by `-`)
//! and `{{SessionNameRaw}}`. An unknown placeholder is refused when the mapping is loaded.

use super::Identity;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    AccountId,
    SessionName,
    SessionNameRaw,
}

/// A parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
    source: String,
}

/// A template that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown placeholder {{{{{0}}}}} (known: {{{{AccountID}}}}, {{{{SessionName}}}}, {{{{SessionNameRaw}}}})")]
    Unknown(String),
    #[error("unclosed {{{{ in {0:?}")]
    Unclosed(String),
}

impl Template {
    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = source;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| TemplateError::Unclosed(source.to_string()))?;
            parts.push(match after[..end].trim() {
                "AccountID" => Part::AccountId,
                "SessionName" => Part::SessionName,
                "SessionNameRaw" => Part::SessionNameRaw,
                other => return Err(TemplateError::Unknown(other.to_string())),
            });
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Self {
            parts,
            source: source.to_string(),
        })
    }

    /// The text before the first placeholder (the whole text when there is none): what every
    /// rendering starts with.
    pub fn literal_prefix(&self) -> &str {
        match self.parts.first() {
            Some(Part::Text(t)) => t,
            _ => "",
        }
    }

    /// Whether the template has a placeholder whose value the person assuming a role chooses
    /// (`{{SessionName}}`, `{{SessionNameRaw}}`).
    pub fn uses_session_name(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::SessionName | Part::SessionNameRaw))
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn render(&self, identity: &Identity) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::AccountId => out.push_str(&identity.account_id),
                Part::SessionName => out.push_str(&identity.session_name.replace('@', "-")),
                Part::SessionNameRaw => out.push_str(&identity.session_name),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_unknown_and_unclosed() {
        assert_eq!(
            Template::parse("x{{Foo}}"),
            Err(TemplateError::Unknown("Foo".into()))
        );
        assert!(matches!(
            Template::parse("x{{AccountID"),
            Err(TemplateError::Unclosed(_))
        ));
        assert!(Template::parse("plain").is_ok());
        assert!(TemplateError::Unknown("Foo".into())
            .to_string()
            .contains("{{Foo}}"));
    }
}
