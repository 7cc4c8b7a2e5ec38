//! The pattern index: which keys (workers, subscribers) registered a topic pattern that a
//! topic name matches, found by one walk down a segment trie instead of a scan of every
//! pattern. Matching is meant to run once per topic state (when a topic is created, or when
//! the pattern set changes), with the answer cached on the topic, so a publish pays nothing
//! for patterns.
//!
//! Cost of one match: the topic's segments are walked once per live trie branch; a branch
//! forks only at a `*` node, so the work is bounded by the number of distinct pattern
//! *shapes* along the topic's path, never by the number of patterns (100k patterns under
//! `prices/<x>/*` cost one hash lookup per segment for a topic outside `prices/`).

use std::collections::HashMap;

use crate::proto::pattern::{Pattern, Segment};

/// Why a pattern was not added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    /// The index already holds its maximum number of (pattern, key) entries.
    #[error("pattern index full ({0} entries)")]
    Full(usize),
    /// Cluster mode: the broker could not follow the pattern's topics (Redis unreachable,
    /// or too many topics followed for patterns already).
    #[error("the broker cannot follow the pattern now")]
    Unavailable,
}

/// One trie node: the pattern prefix spelled by the path from the root.
#[derive(Debug)]
struct Node<K> {
    /// Children by literal segment text.
    literal: HashMap<Box<str>, Node<K>>,
    /// The child reached through a `*` segment.
    one: Option<Box<Node<K>>>,
    /// Keys whose pattern ends exactly here.
    ends: Vec<K>,
    /// Keys whose pattern is this prefix followed by `**` (one or more further segments).
    rest: Vec<K>,
}

impl<K> Default for Node<K> {
    fn default() -> Self {
        Node {
            literal: HashMap::new(),
            one: None,
            ends: Vec::new(),
            rest: Vec::new(),
        }
    }
}

impl<K> Node<K> {
    fn is_empty(&self) -> bool {
        self.literal.is_empty()
            && self.one.is_none()
            && self.ends.is_empty()
            && self.rest.is_empty()
    }
}

/// A bounded set of (pattern, key) entries, searchable by topic name.
#[derive(Debug)]
pub struct PatternIndex<K> {
    root: Node<K>,
    len: usize,
    max: usize,
}

impl<K: Copy + Ord> PatternIndex<K> {
    /// An empty index that accepts at most `max` entries (a bound on memory: each entry is
    /// one key in one trie node, plus the nodes its pattern's segments need).
    pub fn new(max: usize) -> Self {
        PatternIndex {
            root: Node::default(),
            len: 0,
            max,
        }
    }

    /// How many (pattern, key) entries the index holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the index holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Add `key` under `pattern`. `Ok(false)` when that entry was already there (an entry
    /// is a set member, added once, removed once).
    pub fn insert(&mut self, pattern: &Pattern, key: K) -> Result<bool, IndexError> {
        let mut node = &mut self.root;
        let mut deep = false;
        for seg in pattern.segments() {
            node = match seg {
                Segment::Literal(text) => node.literal.entry(text.clone()).or_default(),
                Segment::One => node.one.get_or_insert_with(Default::default),
                Segment::Rest => {
                    deep = true;
                    break;
                }
            };
        }
        let keys = if deep { &mut node.rest } else { &mut node.ends };
        match keys.binary_search(&key) {
            Ok(_) => Ok(false),
            Err(_) if self.len >= self.max => Err(IndexError::Full(self.max)),
            Err(at) => {
                keys.insert(at, key);
                self.len += 1;
                Ok(true)
            }
        }
    }

    /// Remove `key` from under `pattern`, pruning nodes left empty. Whether it was there.
    pub fn remove(&mut self, pattern: &Pattern, key: K) -> bool {
        let removed = remove_in(&mut self.root, pattern.segments(), key);
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Every key with a pattern matching `topic`, each once, in key order, into `out`
    /// (cleared first).
    pub fn matching(&self, topic: &str, out: &mut Vec<K>) {
        out.clear();
        if self.len == 0 {
            return;
        }
        let parts: Vec<&str> = topic.split('/').collect();
        collect(&self.root, &parts, out);
        out.sort_unstable();
        out.dedup();
    }
}

fn remove_in<K: Ord>(node: &mut Node<K>, segments: &[Segment], key: K) -> bool {
    let Some((first, rest)) = segments.split_first() else {
        return take(&mut node.ends, &key);
    };
    match first {
        Segment::Rest => take(&mut node.rest, &key),
        Segment::Literal(text) => {
            let Some(child) = node.literal.get_mut(text) else {
                return false;
            };
            let removed = remove_in(child, rest, key);
            if child.is_empty() {
                node.literal.remove(text);
            }
            removed
        }
        Segment::One => {
            let Some(child) = node.one.as_deref_mut() else {
                return false;
            };
            let removed = remove_in(child, rest, key);
            if child.is_empty() {
                node.one = None;
            }
            removed
        }
    }
}

fn take<K: Ord>(keys: &mut Vec<K>, key: &K) -> bool {
    match keys.binary_search(key) {
        Ok(at) => {
            keys.remove(at);
            true
        }
        Err(_) => false,
    }
}

fn collect<K: Copy>(node: &Node<K>, parts: &[&str], out: &mut Vec<K>) {
    let Some((first, rest)) = parts.split_first() else {
        out.extend_from_slice(&node.ends);
        return;
    };
    out.extend_from_slice(&node.rest);
    if let Some(child) = node.literal.get(*first) {
        collect(child, rest, out);
    }
    if let Some(child) = &node.one {
        collect(child, rest, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        Pattern::parse(s).expect("valid pattern")
    }

    fn found(index: &PatternIndex<u32>, topic: &str) -> Vec<u32> {
        let mut out = Vec::new();
        index.matching(topic, &mut out);
        out
    }

    #[test]
    fn agrees_with_pattern_matches() {
        let patterns = [
            "prices/*",
            "prices/**",
            "prices/*/eu",
            "*/eu",
            "*",
            "**",
            "a/b",
            "a/*/c/**",
            "x//*",
        ];
        let topics = [
            "prices",
            "prices/a",
            "prices/a/eu",
            "prices/a/b/c",
            "a/eu",
            "a/b",
            "a/x/c/d",
            "a/x/c",
            "x//y",
            "x/y",
            "eu",
        ];
        let mut index = PatternIndex::new(100);
        for (k, text) in patterns.iter().enumerate() {
            assert_eq!(index.insert(&p(text), k as u32), Ok(true));
        }
        for topic in topics {
            let want: Vec<u32> = patterns
                .iter()
                .enumerate()
                .filter(|(_, text)| p(text).matches(topic))
                .map(|(k, _)| k as u32)
                .collect();
            assert_eq!(found(&index, topic), want, "topic {topic}");
        }
    }

    #[test]
    fn keys_are_deduplicated_and_removed() {
        let mut index = PatternIndex::new(10);
        assert_eq!(index.insert(&p("prices/*"), 7), Ok(true));
        assert_eq!(index.insert(&p("prices/**"), 7), Ok(true));
        assert_eq!(index.insert(&p("prices/*"), 7), Ok(false));
        assert_eq!(index.insert(&p("prices/*"), 3), Ok(true));
        assert_eq!(found(&index, "prices/a"), vec![3, 7]);
        assert_eq!(index.len(), 3);
        assert!(index.remove(&p("prices/*"), 7));
        assert!(!index.remove(&p("prices/*"), 7));
        assert_eq!(found(&index, "prices/a"), vec![3, 7]);
        assert!(index.remove(&p("prices/**"), 7));
        assert_eq!(found(&index, "prices/a"), vec![3]);
        assert!(index.remove(&p("prices/*"), 3));
        assert!(index.is_empty());
        assert!(index.root.is_empty(), "empty nodes are pruned");
    }

    #[test]
    fn bounded() {
        let mut index = PatternIndex::new(2);
        assert_eq!(index.insert(&p("a/*"), 1), Ok(true));
        assert_eq!(index.insert(&p("b/*"), 1), Ok(true));
        assert_eq!(index.insert(&p("c/*"), 1), Err(IndexError::Full(2)));
        assert_eq!(
            index.insert(&p("a/*"), 1),
            Ok(false),
            "a present entry is no new entry"
        );
        assert!(index.remove(&p("a/*"), 1));
        assert_eq!(index.insert(&p("c/*"), 1), Ok(true));
        assert_eq!(found(&index, "c/x"), vec![1]);
    }
}
