//! MQTT topics of DESIGN.md: `omo/v1/stores/{store}/gateways/{gw}/{channel}`, built and parsed.
//! Also the topic filters the cloud subscribes with and the ACL lines brokers enforce.

use std::fmt;
use std::str::FromStr;

use crate::ids::{GatewayId, IdError, StoreId};

/// Every topic starts with this.
pub const TOPIC_PREFIX: &str = "omo/v1/stores/";

/// The last part of a topic: what flows on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// gateway → cloud: presence events (QoS 1).
    Presence,
    /// cloud → gateway: the seqs the cloud has durably stored.
    PresenceAck,
    /// gateway → cloud: heartbeat, retained, with a signed `offline` last will.
    Status,
    /// cloud → gateway: the remote config document.
    Config,
    /// gateway → cloud: the answer to a config document.
    ConfigAck,
}

/// Which way a channel flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    GatewayToCloud,
    CloudToGateway,
}

impl Channel {
    /// All channels, in the order of DESIGN.md's table.
    pub const ALL: [Channel; 5] = [
        Channel::Presence,
        Channel::PresenceAck,
        Channel::Status,
        Channel::Config,
        Channel::ConfigAck,
    ];

    /// The topic suffix after `gateways/{gw}/`.
    pub fn suffix(self) -> &'static str {
        match self {
            Channel::Presence => "presence",
            Channel::PresenceAck => "presence/ack",
            Channel::Status => "status",
            Channel::Config => "config",
            Channel::ConfigAck => "config/ack",
        }
    }

    /// Who publishes on this channel.
    pub fn direction(self) -> Direction {
        match self {
            Channel::Presence | Channel::Status | Channel::ConfigAck => Direction::GatewayToCloud,
            Channel::PresenceAck | Channel::Config => Direction::CloudToGateway,
        }
    }

    fn from_suffix(s: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.suffix() == s)
    }
}

/// One concrete topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Topic {
    pub store: StoreId,
    pub gateway: GatewayId,
    pub channel: Channel,
}

/// Why a text is not one of our topics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic {topic:?} does not start with {TOPIC_PREFIX:?}")]
    Prefix { topic: String },
    #[error("topic {topic:?} has no \"/gateways/\" after the store id")]
    Shape { topic: String },
    #[error("topic {topic:?} ends in {suffix:?}; expected presence, presence/ack, status, config or config/ack")]
    Channel { topic: String, suffix: String },
    #[error("topic {topic:?}: {source}")]
    Id {
        topic: String,
        #[source]
        source: IdError,
    },
}

impl Topic {
    pub fn new(store: StoreId, gateway: GatewayId, channel: Channel) -> Topic {
        Topic {
            store,
            gateway,
            channel,
        }
    }

    /// Parses a topic exactly as DESIGN.md writes it.
    pub fn parse(topic: &str) -> Result<Topic, TopicError> {
        let short = || topic.chars().take(200).collect::<String>();
        let rest = topic
            .strip_prefix(TOPIC_PREFIX)
            .ok_or_else(|| TopicError::Prefix { topic: short() })?;
        let (store, rest) = rest
            .split_once("/gateways/")
            .ok_or_else(|| TopicError::Shape { topic: short() })?;
        let (gateway, suffix) = rest.split_once('/').unwrap_or((rest, ""));
        let id_err = |source| TopicError::Id {
            topic: short(),
            source,
        };
        let store = StoreId::new(store).map_err(id_err)?;
        let gateway = GatewayId::new(gateway).map_err(id_err)?;
        let channel = Channel::from_suffix(suffix).ok_or_else(|| TopicError::Channel {
            topic: short(),
            suffix: suffix.chars().take(60).collect(),
        })?;
        Ok(Topic {
            store,
            gateway,
            channel,
        })
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{TOPIC_PREFIX}{}/gateways/{}/{}",
            self.store,
            self.gateway,
            self.channel.suffix()
        )
    }
}

impl FromStr for Topic {
    type Err = TopicError;
    fn from_str(s: &str) -> Result<Topic, TopicError> {
        Topic::parse(s)
    }
}

/// The filter matching one channel of every gateway of every store (what the cloud reads).
pub fn all_gateways_filter(channel: Channel) -> String {
    format!("{TOPIC_PREFIX}+/gateways/+/{}", channel.suffix())
}

/// The shared-subscription filter through which several cloud instances split one channel.
pub fn shared_filter(group: &str, channel: Channel) -> String {
    format!("$share/{group}/{}", all_gateways_filter(channel))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn topic(channel: Channel) -> Topic {
        Topic::new(
            StoreId::new("tokyo-1").unwrap(),
            GatewayId::new("gw-7").unwrap(),
            channel,
        )
    }

    #[test]
    fn builds_every_topic() {
        let texts: Vec<String> = Channel::ALL.iter().map(|&c| topic(c).to_string()).collect();
        assert_eq!(
            texts,
            [
                "omo/v1/stores/tokyo-1/gateways/gw-7/presence",
                "omo/v1/stores/tokyo-1/gateways/gw-7/presence/ack",
                "omo/v1/stores/tokyo-1/gateways/gw-7/status",
                "omo/v1/stores/tokyo-1/gateways/gw-7/config",
                "omo/v1/stores/tokyo-1/gateways/gw-7/config/ack",
            ]
        );
        for (c, t) in Channel::ALL.iter().zip(&texts) {
            assert_eq!(Topic::parse(t).unwrap(), topic(*c));
        }
    }

    #[test]
    fn rejects_bad_topics() {
        assert!(matches!(
            Topic::parse("omo/v2/stores/s/gateways/g/presence"),
            Err(TopicError::Prefix { .. })
        ));
        assert!(matches!(
            Topic::parse("omo/v1/stores/s/gw/g/presence"),
            Err(TopicError::Shape { .. })
        ));
        assert!(matches!(
            Topic::parse("omo/v1/stores/s/gateways/g/presence/nack"),
            Err(TopicError::Channel { .. })
        ));
        assert!(matches!(
            Topic::parse("omo/v1/stores/s/gateways/g"),
            Err(TopicError::Channel { .. })
        ));
        for bad in [
            "omo/v1/stores/+/gateways/g/status",
            "omo/v1/stores/s/gateways/#/status",
            "omo/v1/stores//gateways/g/status",
            "omo/v1/stores/s\0/gateways/g/status",
        ] {
            assert!(
                matches!(Topic::parse(bad), Err(TopicError::Id { .. })),
                "{bad:?}"
            );
        }
        let long = "x".repeat(65);
        assert!(matches!(
            Topic::parse(&format!("omo/v1/stores/{long}/gateways/g/status")),
            Err(TopicError::Id {
                source: IdError::TooLong { len: 65, .. },
                ..
            })
        ));
    }

    #[test]
    fn filters() {
        assert_eq!(
            all_gateways_filter(Channel::Presence),
            "omo/v1/stores/+/gateways/+/presence"
        );
        assert_eq!(
            shared_filter("omo-cloud", Channel::Presence),
            "$share/omo-cloud/omo/v1/stores/+/gateways/+/presence"
        );
    }

    proptest! {
        #[test]
        fn never_panics(s in ".{0,200}") {
            let _ = Topic::parse(&s);
        }

        #[test]
        fn round_trips(store in "[A-Za-z0-9._-]{1,64}", gw in "[A-Za-z0-9._-]{1,64}", i in 0usize..5) {
            let t = Topic::new(StoreId::new(store).unwrap(), GatewayId::new(gw).unwrap(), Channel::ALL[i]);
            prop_assert_eq!(Topic::parse(&t.to_string()).unwrap(), t);
        }
    }
}
