//! Topic patterns: segment-based filters over topic names (`prices/*`, `prices/**`), the one
//! grammar shared by wildcard subscriptions and by the flags that pick topics
//! (`--presence`, `--metrics-topics`), so a pattern means the same thing everywhere.
//!
//! A topic's segments are the parts between `/`. In a pattern, a segment `*` matches exactly
//! one segment (any text, even empty), and a last segment `**` matches one or more segments
//! (any depth). Every other segment matches itself. `*` may not appear inside a segment
//! (`pri*` is refused), and `**` only as the last segment, so matching is a walk over the
//! segments with no backtracking.

use crate::topic::{self, TopicError, MAX_TOPIC_LEN};

/// Why a string is not a pattern; becomes `bad_topic` (herald.v1) or a start-up error (flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error(transparent)]
    Topic(#[from] TopicError),
    #[error("'*' and '**' must be whole segments (between '/')")]
    PartialWildcard,
    #[error("'**' may only be the last segment")]
    InnerDeepWildcard,
}

/// One segment of a pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// Matches this text exactly.
    Literal(Box<str>),
    /// `*`: matches any one segment.
    One,
    /// `**` (last only): matches one or more segments.
    Rest,
}

/// A parsed topic pattern. `Display` gives back the text it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    text: Box<str>,
    segments: Vec<Segment>,
}

/// Whether `s` is meant as a pattern (has a `*`) rather than a topic name.
pub fn is_pattern(s: &str) -> bool {
    s.contains('*')
}

impl Pattern {
    /// Parse and check a pattern. A plain topic name is a valid pattern matching only itself.
    pub fn parse(text: &str) -> Result<Pattern, PatternError> {
        if text.is_empty() {
            return Err(TopicError::Empty.into());
        }
        if text.len() > MAX_TOPIC_LEN {
            return Err(TopicError::TooLong.into());
        }
        let parts: Vec<&str> = text.split('/').collect();
        let last = parts.len() - 1;
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let segment = match *part {
                "*" => Segment::One,
                "**" if i == last => Segment::Rest,
                "**" => return Err(PatternError::InnerDeepWildcard),
                p if p.contains('*') => return Err(PatternError::PartialWildcard),
                p => {
                    if !p.is_empty() {
                        topic::validate(p)?;
                    }
                    Segment::Literal(p.into())
                }
            };
            segments.push(segment);
        }
        Ok(Pattern {
            text: text.into(),
            segments,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The parsed segments, for indexes that walk them (a segment trie).
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Whether the pattern has no wildcard (matches exactly one topic).
    pub fn is_literal(&self) -> bool {
        self.segments
            .iter()
            .all(|s| matches!(s, Segment::Literal(_)))
    }

    /// The literal segments before the first wildcard, joined with `/` (`prices/eu/*` →
    /// `prices/eu`); empty when the pattern starts with a wildcard. Every matching topic
    /// starts with this prefix followed by `/` (or is it, for a literal pattern).
    pub fn literal_prefix(&self) -> String {
        let mut out = String::new();
        for (i, seg) in self.segments.iter().enumerate() {
            match seg {
                Segment::Literal(l) => {
                    if i > 0 {
                        out.push('/');
                    }
                    out.push_str(l);
                }
                _ => break,
            }
        }
        out
    }

    /// Whether `topic` matches the pattern.
    pub fn matches(&self, topic: &str) -> bool {
        let mut parts = topic.split('/');
        for seg in &self.segments {
            match seg {
                Segment::Rest => return parts.next().is_some(),
                Segment::One => {
                    if parts.next().is_none() {
                        return false;
                    }
                }
                Segment::Literal(l) => {
                    if parts.next() != Some(&**l) {
                        return false;
                    }
                }
            }
        }
        parts.next().is_none()
    }
}

impl Pattern {
    /// Whether some topic matches both patterns. A connection may not hold two
    /// subscriptions that overlap (each message reaches it once), so this decides a refusal.
    pub fn overlaps(&self, other: &Pattern) -> bool {
        overlap(&self.segments, &other.segments)
    }
}

/// Segment by segment: literals must agree, `*` takes any one segment, and `**` (always
/// last) takes one or more, so it overlaps anything with at least one segment left.
fn overlap(a: &[Segment], b: &[Segment]) -> bool {
    match (a.split_first(), b.split_first()) {
        (None, None) => true,
        (Some((Segment::Rest, _)), Some(_)) | (Some(_), Some((Segment::Rest, _))) => true,
        (None, Some(_)) | (Some(_), None) => false,
        (Some((x, a)), Some((y, b))) => {
            let agree = match (x, y) {
                (Segment::Literal(x), Segment::Literal(y)) => x == y,
                _ => true,
            };
            agree && overlap(a, b)
        }
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for Pattern {
    type Err = PatternError;
    fn from_str(s: &str) -> Result<Pattern, PatternError> {
        Pattern::parse(s)
    }
}

/// A few patterns picked by flags (`--presence`, `--metrics-topics`): matched once per topic
/// when the topic's state is created, never per message, so a linear scan is right.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatternList(Vec<Pattern>);

impl PatternList {
    /// The list of these patterns.
    pub fn new(patterns: Vec<Pattern>) -> PatternList {
        PatternList(patterns)
    }

    /// Whether no pattern is set (the feature is off).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether any pattern matches `topic`.
    pub fn matches(&self, topic: &str) -> bool {
        self.0.iter().any(|p| p.matches(topic))
    }

    /// The patterns, in the order given.
    pub fn patterns(&self) -> &[Pattern] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        Pattern::parse(s).unwrap()
    }

    #[test]
    fn one_segment_wildcard() {
        let pat = p("prices/*");
        assert!(pat.matches("prices/BTC"));
        assert!(pat.matches("prices/"));
        assert!(!pat.matches("prices"));
        assert!(!pat.matches("prices/BTC/eu"));
        assert!(!pat.matches("news/BTC"));
        assert!(p("*/eu").matches("prices/eu"));
        assert!(!p("*/eu").matches("prices/us"));
    }

    #[test]
    fn any_depth_wildcard() {
        let pat = p("prices/**");
        assert!(pat.matches("prices/BTC"));
        assert!(pat.matches("prices/BTC/eu/x"));
        assert!(!pat.matches("prices"));
        assert!(!pat.matches("pricesX/a"));
        assert!(p("**").matches("anything/at/all"));
        assert!(p("a/*/c/**").matches("a/b/c/d"));
        assert!(!p("a/*/c/**").matches("a/b/c"));
    }

    #[test]
    fn literals_match_only_themselves() {
        assert!(p("chat").matches("chat"));
        assert!(!p("chat").matches("chat/x"));
        assert!(p("chat").is_literal());
        assert!(!p("chat/*").is_literal());
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert_eq!(Pattern::parse("pri*"), Err(PatternError::PartialWildcard));
        assert_eq!(
            Pattern::parse("a/**/b"),
            Err(PatternError::InnerDeepWildcard)
        );
        assert_eq!(
            Pattern::parse(""),
            Err(PatternError::Topic(TopicError::Empty))
        );
        assert_eq!(
            Pattern::parse("a b/*"),
            Err(PatternError::Topic(TopicError::BadChar))
        );
        assert!(Pattern::parse(&"a".repeat(257)).is_err());
    }

    #[test]
    fn overlapping_patterns_share_a_topic() {
        let yes = [
            ("a/*", "a/b"),
            ("a/*", "*/b"),
            ("a/**", "a/b/c"),
            ("a/**", "*/*"),
            ("**", "x"),
            ("a/*/c", "a/b/*"),
            ("a/b/**", "a/*/c/**"),
        ];
        for (x, y) in yes {
            assert!(p(x).overlaps(&p(y)), "{x} {y}");
            assert!(p(y).overlaps(&p(x)), "{y} {x}");
        }
        let no = [
            ("a/*", "b/*"),
            ("a/*", "a"),
            ("a/*", "a/b/c"),
            ("a/**", "a"),
            ("a/**", "b/**"),
            ("a/*/c", "a/*/d"),
        ];
        for (x, y) in no {
            assert!(!p(x).overlaps(&p(y)), "{x} {y}");
            assert!(!p(y).overlaps(&p(x)), "{y} {x}");
        }
    }

    #[test]
    fn prefixes() {
        assert_eq!(p("prices/eu/*").literal_prefix(), "prices/eu");
        assert_eq!(p("*/eu").literal_prefix(), "");
        assert_eq!(p("chat").literal_prefix(), "chat");
    }

    #[test]
    fn lists_match_any() {
        let list = PatternList::new(vec![p("a/*"), p("b/**")]);
        assert!(list.matches("a/x"));
        assert!(list.matches("b/x/y"));
        assert!(!list.matches("c"));
        assert!(PatternList::default().is_empty());
    }
}
