//! Where a topic lives when cluster mode spans more than one Redis (sans-IO, unit-tested
//! without a server).
//!
//! `--broker` takes three forms ([`Broker::parse`]):
//!
//! - `redis://HOST:PORT[/DB]`: one Redis holds every topic.
//! - `redis://A:PORT,redis://B:PORT,...`: independent Redis instances; each topic lives on
//!   exactly one of them, chosen by rendezvous (highest random weight) hashing of the topic
//!   name against each instance's `HOST:PORT/DB` ([`shard_of`]). Every node computes the
//!   same owner from the same list, in any order; adding or removing an instance moves only
//!   the topics it gains or loses (their numbering starts a new epoch, told explicitly).
//! - `redis+cluster://[USER:PASSWORD@]HOST:PORT,HOST:PORT,...`: a Redis Cluster, reached
//!   through any of these seed nodes. A topic's keys and channel share the hash tag `{topic}`,
//!   so the topic lives in slot [`slot_of`] and the [`SlotMap`] learnt from `CLUSTER SLOTS`
//!   names its master.
//!
//! Other cluster features route per topic through the same two functions: [`shard_of`] for
//! the bridge a topic belongs to, [`slot_of`] + [`SlotMap::master_of`] inside a Redis
//! Cluster bridge.

use redis::Value;

/// Slots in a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// The parsed `--broker` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broker {
    /// One or more independent Redis instances (one is plain cluster mode), each a
    /// `redis://` URL.
    Instances(Vec<String>),
    /// A Redis Cluster, through its seed nodes.
    Cluster(ClusterSeeds),
}

/// How to reach a Redis Cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSeeds {
    /// `USER:PASSWORD@` or `:PASSWORD@` as written (URL-encoded), or empty; every node of
    /// the cluster is reached with it.
    pub credentials: String,
    /// `HOST:PORT` of the nodes to ask for the slot layout first.
    pub seeds: Vec<String>,
}

impl ClusterSeeds {
    /// The `redis://` URL of one node of the cluster.
    pub fn url_of(&self, addr: &str) -> String {
        format!("redis://{}{addr}", self.credentials)
    }
}

impl Broker {
    /// Parse `--broker`; the error is a sentence for the command line.
    pub fn parse(value: &str) -> Result<Broker, String> {
        if let Some(rest) = value.strip_prefix("redis+cluster://") {
            let (credentials, hosts) = match rest.rfind('@') {
                Some(at) => (&rest[..=at], &rest[at + 1..]),
                None => ("", rest),
            };
            let seeds: Vec<String> = hosts.split(',').map(|s| s.trim().to_owned()).collect();
            for seed in &seeds {
                let port = seed.rsplit_once(':').map(|(h, p)| (h, p.parse::<u16>()));
                if !matches!(port, Some((h, Ok(p))) if !h.is_empty() && p > 0) {
                    return Err(format!(
                        "--broker: redis+cluster:// takes HOST:PORT seed nodes separated by commas, not {seed:?}"
                    ));
                }
            }
            return Ok(Broker::Cluster(ClusterSeeds {
                credentials: credentials.to_owned(),
                seeds,
            }));
        }
        let urls: Vec<String> = value.split(',').map(|s| s.trim().to_owned()).collect();
        for url in &urls {
            if !url.starts_with("redis://") {
                return Err(format!(
                    "--broker {}: only redis://HOST:PORT URLs (a comma-separated list for independent instances) or redis+cluster://HOST:PORT,HOST:PORT are supported",
                    super::redacted(url)
                ));
            }
            if let Err(e) = redis::Client::open(url.as_str()) {
                return Err(format!("--broker {}: {e}", super::redacted(url)));
            }
        }
        let mut names: Vec<String> = urls.iter().map(|u| instance_name(u)).collect();
        names.sort();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err("--broker: the same Redis instance is listed twice".into());
        }
        Ok(Broker::Instances(urls))
    }

    /// How many bridges (each a publishing and a listening thread) this broker needs: one
    /// per independent instance; one for a whole Redis Cluster (it follows the cluster's
    /// slot layout itself).
    pub fn bridges(&self) -> usize {
        match self {
            Broker::Instances(urls) => urls.len(),
            Broker::Cluster(_) => 1,
        }
    }
}

/// An instance's identity for hashing: `HOST:PORT/DB` (credentials and spelling of the
/// scheme do not move topics).
pub fn instance_name(url: &str) -> String {
    use redis::IntoConnectionInfo;
    match url.into_connection_info() {
        Ok(info) => match info.addr() {
            redis::ConnectionAddr::Tcp(host, port) => {
                format!("{host}:{port}/{}", info.redis_settings().db())
            }
            other => format!("{other}/{}", info.redis_settings().db()),
        },
        Err(_) => url.to_owned(),
    }
}

/// FNV-1a, 64 bits: stable across versions, platforms and processes (every node must pick
/// the same instance for a topic), unlike `std`'s randomly keyed hasher.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    // splitmix64 finaliser: FNV's low bits alone spread short similar names poorly.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The instance (index into `names`) that owns `topic`: rendezvous hashing, so each
/// instance gets an even share, and adding or removing one moves only its own share.
pub fn shard_of(topic: &str, names: &[String]) -> usize {
    names
        .iter()
        .enumerate()
        .max_by_key(|(_, name)| fnv1a(&[name.as_bytes(), b"\0", topic.as_bytes()]))
        .map_or(0, |(i, _)| i)
}

/// CRC16-CCITT (XMODEM), the checksum Redis Cluster hashes keys with.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The Redis Cluster slot of a key (its `{hash tag}` if it has a non-empty one).
pub fn key_slot(key: &str) -> u16 {
    let tagged = key.find('{').and_then(|open| {
        let rest = &key[open + 1..];
        rest.find('}')
            .filter(|&close| close > 0)
            .map(|close| &rest[..close])
    });
    crc16(tagged.unwrap_or(key).as_bytes()) % SLOTS
}

/// The slot every key and the channel of `topic` live in (`herald:{topic}…`: topic names
/// have no braces, so the tag is the whole name).
pub fn slot_of(topic: &str) -> u16 {
    crc16(topic.as_bytes()) % SLOTS
}

/// Which master serves which slots, from `CLUSTER SLOTS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotMap {
    /// `(first, last, "HOST:PORT")`, sorted by `first`.
    ranges: Vec<(u16, u16, String)>,
}

impl SlotMap {
    /// Parse a `CLUSTER SLOTS` answer; `asked` is the node that gave it (a master listed
    /// with an empty host lives there). `None` if it is not a slot table.
    pub fn parse(value: &Value, asked_host: &str) -> Option<SlotMap> {
        let Value::Array(rows) = value else {
            return None;
        };
        let mut ranges = Vec::with_capacity(rows.len());
        for row in rows {
            let Value::Array(fields) = row else {
                return None;
            };
            let (Some(Value::Int(first)), Some(Value::Int(last)), Some(Value::Array(master))) =
                (fields.first(), fields.get(1), fields.get(2))
            else {
                return None;
            };
            let host = match master.first()? {
                Value::BulkString(h) => String::from_utf8(h.clone()).ok()?,
                Value::SimpleString(h) => h.clone(),
                _ => return None,
            };
            let Some(Value::Int(port)) = master.get(1) else {
                return None;
            };
            let host = if host.is_empty() || host == "?" {
                asked_host.to_owned()
            } else {
                host
            };
            let first = u16::try_from(*first).ok().filter(|&s| s < SLOTS)?;
            let last = u16::try_from(*last)
                .ok()
                .filter(|&s| s < SLOTS && s >= first)?;
            ranges.push((first, last, format!("{host}:{port}")));
        }
        ranges.sort();
        Some(SlotMap { ranges })
    }

    /// The master (`HOST:PORT`) serving `slot`, if any.
    pub fn master_of(&self, slot: u16) -> Option<&str> {
        let i = self.ranges.partition_point(|r| r.0 <= slot);
        let (first, last, addr) = self.ranges.get(i.checked_sub(1)?)?;
        (*first <= slot && slot <= *last).then_some(addr.as_str())
    }

    /// Every master, once.
    pub fn masters(&self) -> Vec<String> {
        let mut all: Vec<String> = self.ranges.iter().map(|r| r.2.clone()).collect();
        all.sort();
        all.dedup();
        all
    }

    /// Slots that no master serves (a cluster missing a shard).
    pub fn uncovered(&self) -> u32 {
        let covered: u32 = self
            .ranges
            .iter()
            .map(|(a, b, _)| u32::from(*b) - u32::from(*a) + 1)
            .sum();
        u32::from(SLOTS) - covered.min(u32::from(SLOTS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis_cluster() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16(b"123456789"), 0x31c3);
        assert_eq!(key_slot("foo"), 12182);
        assert_eq!(key_slot("{user1000}.following"), key_slot("user1000"));
        assert_eq!(key_slot("foo{}{bar}"), crc16(b"foo{}{bar}") % SLOTS);
        assert_eq!(slot_of("room"), key_slot("herald:{room}:seq"));
        assert_eq!(slot_of("room"), key_slot("herald:{room}"));
    }

    #[test]
    fn rendezvous_spreads_topics_and_moves_only_a_removed_share() {
        let names: Vec<String> = ["a:1/0", "b:1/0", "c:1/0"].map(String::from).to_vec();
        let topics: Vec<String> = (0..3000).map(|i| format!("t{i}")).collect();
        let owners: Vec<usize> = topics.iter().map(|t| shard_of(t, &names)).collect();
        for shard in 0..3 {
            let n = owners.iter().filter(|&&o| o == shard).count();
            assert!((800..1200).contains(&n), "shard {shard} got {n} of 3000");
        }
        // Order of the list does not matter.
        let reversed: Vec<String> = names.iter().rev().cloned().collect();
        for (t, &o) in topics.iter().zip(&owners) {
            assert_eq!(reversed[shard_of(t, &reversed)], names[o]);
        }
        // Dropping "b" moves b's topics only.
        let two: Vec<String> = vec![names[0].clone(), names[2].clone()];
        for (t, &o) in topics.iter().zip(&owners) {
            if o != 1 {
                assert_eq!(two[shard_of(t, &two)], names[o]);
            }
        }
    }

    #[test]
    fn broker_values_parse() {
        assert_eq!(
            Broker::parse("redis://h:1"),
            Ok(Broker::Instances(vec!["redis://h:1".into()]))
        );
        assert_eq!(
            Broker::parse("redis://h:1, redis://k:2/3").map(|b| b.bridges()),
            Ok(2)
        );
        assert!(Broker::parse("redis://h:1,redis://h:1/0")
            .unwrap_err()
            .contains("twice"));
        assert!(Broker::parse("redis://h:1,http://k")
            .unwrap_err()
            .contains("only redis://"));
        let Ok(Broker::Cluster(seeds)) = Broker::parse("redis+cluster://:pw@a:7000,b:7001") else {
            panic!("cluster form");
        };
        assert_eq!(seeds.seeds, vec!["a:7000", "b:7001"]);
        assert_eq!(seeds.url_of("c:7002"), "redis://:pw@c:7002");
        assert!(Broker::parse("redis+cluster://a").is_err());
        assert!(Broker::parse("redis+cluster://a:0").is_err());
    }

    #[test]
    fn slot_tables_parse() {
        let node = |h: &str, p: i64| {
            Value::Array(vec![
                Value::BulkString(h.as_bytes().to_vec()),
                Value::Int(p),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let table = Value::Array(vec![
            Value::Array(vec![Value::Int(5461), Value::Int(16383), node("", 7001)]),
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("10.0.0.1", 7000),
                node("10.0.0.2", 7003),
            ]),
        ]);
        let map = SlotMap::parse(&table, "seed").unwrap();
        assert_eq!(map.master_of(0), Some("10.0.0.1:7000"));
        assert_eq!(map.master_of(5460), Some("10.0.0.1:7000"));
        assert_eq!(map.master_of(5461), Some("seed:7001"));
        assert_eq!(map.master_of(16383), Some("seed:7001"));
        assert_eq!(map.uncovered(), 0);
        assert_eq!(map.masters().len(), 2);
        let half = Value::Array(vec![Value::Array(vec![
            Value::Int(0),
            Value::Int(8191),
            node("a", 1),
        ])]);
        let map = SlotMap::parse(&half, "x").unwrap();
        assert_eq!(map.master_of(9000), None);
        assert_eq!(map.uncovered(), 8192);
        assert_eq!(SlotMap::parse(&Value::Nil, "x"), None);
    }
}
