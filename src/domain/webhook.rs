//! Webhooks: operators register a URL for some event types; every such event is
//! delivered to it, signed, with retries, and each delivery is logged.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::events::EventType;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Webhook {
    pub webhook_id: Uuid,
    pub url: String,
    /// The HMAC key; shown once, when the webhook is created.
    #[serde(skip)]
    pub secret: String,
    pub event_types: Vec<EventType>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    /// Every attempt failed.
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [
            DeliveryStatus::Pending,
            DeliveryStatus::Delivered,
            DeliveryStatus::Failed,
        ]
        .into_iter()
        .find(|s| s.as_str() == raw)
    }
}

/// One event on its way to one webhook: the delivery log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebhookDelivery {
    pub delivery_id: Uuid,
    pub webhook_id: Uuid,
    pub event_id: Uuid,
    pub event_type: EventType,
    /// The exact body sent (the event's JSON).
    #[serde(skip)]
    pub body: serde_json::Value,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// What is signed: `"{timestamp}.{body}"`, as the `X-Jucr-Signature` header documents.
pub fn signed_payload(timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut signed = format!("{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    signed
}

/// Where a webhook URL points, as its host parses.
#[derive(Debug, Clone, Copy)]
pub enum TargetHost<'a> {
    Ip(std::net::IpAddr),
    Name(&'a str),
}

/// Why a webhook may not point at `host`, if it may not: loopback, private, shared,
/// link-local (cloud metadata at 169.254.169.254 among them), unspecified, multicast,
/// reserved and documentation addresses, IPv6's equivalents and the IPv4 addresses
/// they embed; and names that always mean something inside (`localhost`, `*.local`,
/// `*.internal`, `metadata`, names without a dot: a cluster's own services). A name
/// is checked again on what it resolves to when a delivery is made.
pub fn refused_target(host: TargetHost<'_>) -> Option<String> {
    match host {
        TargetHost::Ip(ip) => {
            (!public_address(ip)).then(|| format!("{ip} is not a public address"))
        }
        TargetHost::Name(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            let inside = !name.contains('.')
                || [
                    ".localhost",
                    ".local",
                    ".internal",
                    ".home.arpa",
                    ".svc",
                    ".lan",
                ]
                .iter()
                .any(|suffix| name.ends_with(suffix));
            inside.then(|| format!("{name} names a host inside the network"))
        }
    }
}

/// Whether `ip` is an address of the public internet (what a webhook may reach).
pub fn public_address(ip: std::net::IpAddr) -> bool {
    use std::net::{IpAddr, Ipv4Addr};
    let v4 = |ip: Ipv4Addr| {
        let [a, b, c, _] = ip.octets();
        !(a == 0                                      // "this network", 0.0.0.0
            || a == 10                                // private
            || (a == 100 && (64..128).contains(&b))   // shared (carrier NAT)
            || a == 127                               // loopback
            || (a == 169 && b == 254)                 // link-local, cloud metadata
            || (a == 172 && (16..32).contains(&b))    // private
            || (a == 192 && b == 0 && c == 0)         // IETF protocol assignments
            || (a == 192 && b == 0 && c == 2)         // documentation
            || (a == 192 && b == 168)                 // private
            || (a == 198 && (18..20).contains(&b))    // benchmarking
            || (a == 198 && b == 51 && c == 100)      // documentation
            || (a == 203 && b == 0 && c == 113)       // documentation
            || a >= 224) // multicast, reserved, broadcast
    };
    match ip {
        IpAddr::V4(ip) => v4(ip),
        IpAddr::V6(ip) => {
            let s = ip.segments();
            // IPv4 inside IPv6: mapped (::ffff:a.b.c.d), compatible (::a.b.c.d), NAT64
            // (64:ff9b::a.b.c.d) and 6to4 (2002:aabb:ccdd::) reach what they embed.
            let embedded = |hi: u16, lo: u16| Ipv4Addr::from(((hi as u32) << 16) | lo as u32);
            if s[..5] == [0; 5] && (s[5] == 0xffff || s[5] == 0) && !(s[5] == 0 && s[6] == 0) {
                return v4(embedded(s[6], s[7]));
            }
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return v4(embedded(s[6], s[7]));
            }
            // SIIT (::ffff:0:a.b.c.d) too.
            if s[..4] == [0; 4] && s[4] == 0xffff && s[5] == 0 {
                return v4(embedded(s[6], s[7]));
            }
            if s[0] == 0x2002 {
                return v4(embedded(s[1], s[2]));
            }
            !(ip.is_unspecified()
                || ip.is_loopback()
                || ip.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00      // unique local
                || (s[0] & 0xffc0) == 0xfe80      // link-local
                || (s[0] & 0xffc0) == 0xfec0      // site-local (deprecated)
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] & 0xfff0) == 0x3ff0      // documentation (3fff::/20)
                || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) // local-use NAT64
                || (s[0] == 0x2001 && s[1] == 0)  // Teredo
                || s[..4] == [0x100, 0, 0, 0]) // discard
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_and_names_are_refused_public_ones_not() {
        for refused in [
            "127.0.0.1",
            "127.8.9.1",
            "0.0.0.0",
            "10.0.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.169.254",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:0:7f00:1",
            "64:ff9b:1::a00:1",
            "3fff::1",
        ] {
            let ip: std::net::IpAddr = refused.parse().unwrap();
            assert!(refused_target(TargetHost::Ip(ip)).is_some(), "{refused}");
        }
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            let ip: std::net::IpAddr = public.parse().unwrap();
            assert!(refused_target(TargetHost::Ip(ip)).is_none(), "{public}");
        }
        for refused in [
            "localhost",
            "LOCALHOST.",
            "api.localhost",
            "metadata",
            "metadata.google.internal",
            "printer.local",
            "redis",
            "kube-dns.kube-system.svc",
        ] {
            assert!(
                refused_target(TargetHost::Name(refused)).is_some(),
                "{refused}"
            );
        }
        for public in ["hooks.example.org", "example.org."] {
            assert!(
                refused_target(TargetHost::Name(public)).is_none(),
                "{public}"
            );
        }
    }
}
