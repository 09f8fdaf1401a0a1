//! Broker credentials: password hashes in the format Mosquitto's `mosquitto_passwd` writes
//! (`$7${iterations}${salt}${hash}`, PBKDF2-HMAC-SHA512, standard base64), which the cloud's
//! registry stores too so one hash serves both brokers; and the ACL blocks that confine each
//! gateway to its own topics (DESIGN.md, "Broker security").

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha2::Sha512;
use subtle::ConstantTimeEq;

use crate::ids::{GatewayId, StoreId};
use crate::topics::{all_gateways_filter, Channel, Topic};

/// PBKDF2 rounds; `mosquitto_passwd`'s own default. Our passwords are random and long, so
/// rounds add little; they stay at the default so a broker verifies thousands of reconnects fast.
pub const DEFAULT_ITERATIONS: u32 = 101;
const SALT_LEN: usize = 12;
const HASH_LEN: usize = 64;

/// A PBKDF2-SHA512 password hash.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash {
    iterations: u32,
    salt: Vec<u8>,
    hash: [u8; HASH_LEN],
}

/// Why a text is not a `$7$` password hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordHashError {
    #[error("password hash must look like $7$ITERATIONS$SALT$HASH (mosquitto_passwd's format)")]
    Shape,
    #[error("password hash iterations {0:?} is not a number from 1 to 10000000")]
    Iterations(String),
    #[error("password hash {0} is not standard base64")]
    Base64(&'static str),
    #[error("password hash is {0} bytes; PBKDF2-SHA512 gives 64")]
    HashLength(usize),
    #[error("password hash salt is empty")]
    EmptySalt,
}

impl PasswordHash {
    /// Hashes `password` with a fresh random salt.
    pub fn new(password: &str) -> PasswordHash {
        let mut salt = vec![0u8; SALT_LEN];
        rand::fill(&mut salt[..]);
        PasswordHash::with_salt(password, salt, DEFAULT_ITERATIONS)
    }

    fn with_salt(password: &str, salt: Vec<u8>, iterations: u32) -> PasswordHash {
        let mut hash = [0u8; HASH_LEN];
        pbkdf2::pbkdf2_hmac::<Sha512>(password.as_bytes(), &salt, iterations, &mut hash);
        PasswordHash {
            iterations,
            salt,
            hash,
        }
    }

    /// Whether `password` is the one hashed, compared in constant time.
    pub fn verify(&self, password: &str) -> bool {
        let other = PasswordHash::with_salt(password, self.salt.clone(), self.iterations);
        bool::from(self.hash.ct_eq(&other.hash))
    }
}

impl fmt::Display for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "$7${}${}${}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.hash)
        )
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PasswordHash($7${}$…)", self.iterations)
    }
}

impl FromStr for PasswordHash {
    type Err = PasswordHashError;

    fn from_str(s: &str) -> Result<PasswordHash, PasswordHashError> {
        let rest = s.strip_prefix("$7$").ok_or(PasswordHashError::Shape)?;
        let parts: Vec<&str> = rest.split('$').collect();
        let [iterations, salt, hash] = parts[..] else {
            return Err(PasswordHashError::Shape);
        };
        let iterations = iterations
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=10_000_000).contains(n))
            .ok_or_else(|| PasswordHashError::Iterations(iterations.chars().take(12).collect()))?;
        let salt = STANDARD
            .decode(salt)
            .map_err(|_| PasswordHashError::Base64("salt"))?;
        if salt.is_empty() {
            return Err(PasswordHashError::EmptySalt);
        }
        let bytes = STANDARD
            .decode(hash)
            .map_err(|_| PasswordHashError::Base64("hash"))?;
        let hash: [u8; HASH_LEN] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| PasswordHashError::HashLength(bytes.len()))?;
        Ok(PasswordHash {
            iterations,
            salt,
            hash,
        })
    }
}

/// A random password: 32 characters of base64url (192 bits).
pub fn generate_password() -> String {
    let mut bytes = [0u8; 24];
    rand::fill(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A Mosquitto password-file line: `username:$7$…`.
pub fn password_line(username: &str, hash: &PasswordHash) -> String {
    format!("{username}:{hash}")
}

/// The Mosquitto ACL block for one gateway: it may write only its own `presence`, `status` and
/// `config/ack`, and read only its own `config` and `presence/ack`.
pub fn gateway_acl(store: &StoreId, gateway: &GatewayId) -> String {
    let mut out = format!("user {gateway}\n");
    for channel in Channel::ALL {
        let access = match channel.direction() {
            crate::topics::Direction::GatewayToCloud => "write",
            crate::topics::Direction::CloudToGateway => "read",
        };
        let topic = Topic::new(store.clone(), gateway.clone(), channel);
        out.push_str(&format!("topic {access} {topic}\n"));
    }
    out
}

/// What Mosquitto's `password_file` and `acl_file` hold for the cloud's login `(username,
/// password)` and each gateway's `(store, gateway, password)`: the password lines, and the
/// ACL (the cloud's block, then each gateway's).
pub fn broker_files<'a>(
    (username, password): (&str, &str),
    gateways: impl IntoIterator<Item = (&'a StoreId, &'a GatewayId, &'a str)>,
) -> (Vec<String>, String) {
    let mut lines = vec![password_line(username, &PasswordHash::new(password))];
    let mut acl = cloud_acl(username);
    for (store, gateway, password) in gateways {
        lines.push(password_line(
            gateway.as_str(),
            &PasswordHash::new(password),
        ));
        acl.push('\n');
        acl.push_str(&gateway_acl(store, gateway));
    }
    (lines, acl)
}

/// The Mosquitto ACL block for the cloud: read every gateway's `presence`, `status` and
/// `config/ack`; write every gateway's `config` and `presence/ack`.
pub fn cloud_acl(username: &str) -> String {
    let mut out = format!("user {username}\n");
    for channel in Channel::ALL {
        let access = match channel.direction() {
            crate::topics::Direction::GatewayToCloud => "read",
            crate::topics::Direction::CloudToGateway => "write",
        };
        out.push_str(&format!(
            "topic {access} {}\n",
            all_gateways_filter(channel)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Written by Debian's `mosquitto_passwd -c -b pw user secret` (mosquitto 2.0.11).
    const FROM_MOSQUITTO: &str = "$7$101$Vzj7Z9chb6L7LPCY$fS0q08pe5hXC1qool6feab1vFntDgQ/o3EfjFQap1rpUESNORcAkhoovlEuELfQCWS483+sajF5Djqx4FRPtVw==";

    #[test]
    fn verifies_mosquitto_passwd_output() {
        let hash: PasswordHash = FROM_MOSQUITTO.parse().unwrap();
        assert!(hash.verify("secret"));
        assert!(!hash.verify("secreT"));
        assert_eq!(hash.to_string(), FROM_MOSQUITTO);
    }

    #[test]
    fn new_hashes_verify_and_differ() {
        let pw = generate_password();
        assert_eq!(pw.len(), 32);
        let a = PasswordHash::new(&pw);
        let b = PasswordHash::new(&pw);
        assert!(a.verify(&pw) && b.verify(&pw));
        assert_ne!(a, b, "fresh salt each time");
        let text = a.to_string();
        assert!(
            text.starts_with("$7$101$") && text.len() == 7 + 16 + 1 + 88,
            "{text}"
        );
        assert_eq!(text.parse::<PasswordHash>().unwrap(), a);
    }

    #[test]
    fn refuses_malformed_hashes() {
        for (bad, want) in [
            ("$6$abc", PasswordHashError::Shape),
            ("$7$101$c2FsdA==", PasswordHashError::Shape),
            (
                "$7$x$c2FsdA==$aGFzaA==",
                PasswordHashError::Iterations("x".into()),
            ),
            ("$7$101$!!$aGFzaA==", PasswordHashError::Base64("salt")),
            ("$7$101$c2FsdA==$aGFzaA==", PasswordHashError::HashLength(4)),
            ("$7$101$$aGFzaA==", PasswordHashError::EmptySalt),
        ] {
            assert_eq!(bad.parse::<PasswordHash>().unwrap_err(), want, "{bad}");
        }
    }

    #[test]
    fn broker_files_hold_the_cloud_and_each_gateway() {
        let (s1, g1) = (StoreId::new("s1").unwrap(), GatewayId::new("g1").unwrap());
        let (lines, acl) = broker_files(("omo-cloud", "pw-c"), [(&s1, &g1, "pw-g")]);
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("omo-cloud:$7$") && lines[1].starts_with("g1:$7$"));
        let hash = |line: &str| {
            line.split_once(':')
                .unwrap()
                .1
                .parse::<PasswordHash>()
                .unwrap()
        };
        assert!(hash(&lines[0]).verify("pw-c") && hash(&lines[1]).verify("pw-g"));
        assert_eq!(
            acl,
            format!("{}\n{}", cloud_acl("omo-cloud"), gateway_acl(&s1, &g1))
        );
    }

    #[test]
    fn acl_blocks() {
        let acl = gateway_acl(&StoreId::new("s1").unwrap(), &GatewayId::new("g1").unwrap());
        assert_eq!(
            acl,
            "user g1\n\
             topic write omo/v1/stores/s1/gateways/g1/presence\n\
             topic read omo/v1/stores/s1/gateways/g1/presence/ack\n\
             topic write omo/v1/stores/s1/gateways/g1/status\n\
             topic read omo/v1/stores/s1/gateways/g1/config\n\
             topic write omo/v1/stores/s1/gateways/g1/config/ack\n"
        );
        assert!(cloud_acl("omo-cloud").contains("topic read omo/v1/stores/+/gateways/+/presence\n"));
        assert!(cloud_acl("omo-cloud")
            .contains("topic write omo/v1/stores/+/gateways/+/presence/ack\n"));
    }

    proptest! {
        #[test]
        fn never_panics(s in ".{0,160}") {
            let _ = s.parse::<PasswordHash>();
            let _ = format!("$7${s}").parse::<PasswordHash>();
        }
    }
}
