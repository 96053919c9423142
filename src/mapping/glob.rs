//! ARN wildcards: `*` matches any run of characters (also none), `?` exactly one character.
//! Patterns are anchored at both ends and compared without case. No other syntax: a `.`, `[`
//! or `+` in a pattern is a literal character.

/// A compiled, lower-cased pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    pattern: Vec<char>,
    source: String,
}

impl Glob {
    pub fn new(pattern: &str) -> Self {
        Self {
            pattern: pattern.to_lowercase().chars().collect(),
            source: pattern.to_string(),
        }
    }

    /// Whether a string contains wildcard characters.
    pub fn is_pattern(s: &str) -> bool {
        s.contains(['*', '?'])
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Characters that are not wildcards: the more, the more specific the pattern.
    pub fn literal_len(&self) -> usize {
        self.pattern
            .iter()
            .filter(|c| !matches!(c, '*' | '?'))
            .count()
    }

    /// Matches an already lower-cased string, in linear time (no backtracking blow-up).
    pub fn matches_lower(&self, text: &str) -> bool {
        let text: Vec<char> = text.chars().collect();
        let (mut p, mut t) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while t < text.len() {
            if p < self.pattern.len()
                && self.pattern[p] != '*'
                && (self.pattern[p] == '?' || self.pattern[p] == text[t])
            {
                p += 1;
                t += 1;
            } else if p < self.pattern.len() && self.pattern[p] == '*' {
                star = Some((p, t));
                p += 1;
            } else if let Some((sp, st)) = star {
                p = sp + 1;
                t = st + 1;
                star = Some((sp, st + 1));
            } else {
                return false;
            }
        }
        while p < self.pattern.len() && self.pattern[p] == '*' {
            p += 1;
        }
        p == self.pattern.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchored_globs() {
        let g = Glob::new("acs:ram::123:role/dev-*");
        assert!(g.matches_lower("acs:ram::123:role/dev-alice"));
        assert!(g.matches_lower("acs:ram::123:role/dev-"));
        assert!(!g.matches_lower("xacs:ram::123:role/dev-alice"));
        assert!(!g.matches_lower("acs:ram::1234:role/dev-alice"));
        let q = Glob::new("acs:ram::12?:role/A");
        assert!(q.matches_lower("acs:ram::124:role/a"));
        assert!(!q.matches_lower("acs:ram::12:role/a"));
        assert!(!q.matches_lower("acs:ram::1245:role/a"));
        // A dot is literal, not "any character" as in a regular expression.
        assert!(!Glob::new("a.c").matches_lower("abc"));
        assert!(Glob::new("*").matches_lower(""));
        assert!(Glob::new("a*b*c").matches_lower("axxbyyc"));
        assert!(!Glob::new("a*b*c").matches_lower("axxbyy"));
    }
}
