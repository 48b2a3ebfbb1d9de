//! The HTTP client webhooks are delivered with, kept off the network behind the server.
//!
//! A webhook URL is checked when it is registered (`domain::webhook::refused_target`),
//! but a name may resolve elsewhere by the time a delivery is made (DNS rebinding). So
//! the client resolves names itself ([`GuardedResolver`]) and connects only to the
//! public addresses a name resolves to; a URL whose host is an address is checked again
//! before each request ([`Webhooks::refusal`]). No proxy is used (it would resolve for
//! us) and no redirect is followed (it could point anywhere).
//! `notifier.allow_private_targets` turns all of this off, for development and tests.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::config::Settings;
use crate::domain::webhook::{TargetHost, public_address, refused_target};

/// What a refused target's error says (the delivery log shows it).
pub const NOT_ALLOWED: &str = "not allowed as a webhook target";

/// Resolves names, keeping only the addresses webhooks may reach.
struct GuardedResolver {
    allow_private: bool,
    /// Fixed answers (`testing.resolve`), standing in for a DNS server in tests.
    fixed: Arc<HashMap<String, Vec<IpAddr>>>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let (allow_private, fixed) = (self.allow_private, self.fixed.clone());
        Box::pin(async move {
            let host = name.as_str().trim_end_matches('.').to_ascii_lowercase();
            let found: Vec<SocketAddr> = match fixed.get(&host) {
                Some(ips) => ips.iter().map(|ip| SocketAddr::new(*ip, 0)).collect(),
                None => tokio::net::lookup_host((host.as_str(), 0)).await?.collect(),
            };
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| allow_private || public_address(a.ip()))
                .collect();
            if allowed.is_empty() && !found.is_empty() {
                // Which internal address it was stays out of the delivery log.
                let error = format!("{host} resolves only to internal addresses: {NOT_ALLOWED}");
                return Err(error.into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The webhook client and its rule.
pub struct Webhooks {
    pub http: reqwest::Client,
    allow_private: bool,
}

impl Webhooks {
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        let allow_private = settings.notifier.allow_private_targets;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.notifier.webhook_timeout_ms))
            // A redirect would turn the POST into a GET without the event (not a
            // delivery), and could point inside the network.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(GuardedResolver {
                allow_private,
                fixed: Arc::new(fixed_answers(settings.testing.resolve.as_deref())?),
            })
            .user_agent(concat!("jucr-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Webhooks {
            http,
            allow_private,
        })
    }

    /// Why `url` may not be delivered to, if it may not (checked before each request:
    /// an address in the URL is never resolved, so the resolver cannot check it).
    pub fn refusal(&self, url: &reqwest::Url) -> Option<String> {
        if self.allow_private {
            return None;
        }
        refusal(url)
    }
}

/// Why a webhook may not point at `url`'s host, if it may not.
pub fn refusal(url: &reqwest::Url) -> Option<String> {
    // The URL parser has already turned every spelling of an address (decimal, hex,
    // short forms) into the dotted or bracketed one.
    let host = url.host_str()?;
    let address = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .parse::<IpAddr>();
    let why = match address {
        Ok(ip) => refused_target(TargetHost::Ip(ip)),
        Err(_) => refused_target(TargetHost::Name(host)),
    };
    why.map(|why| format!("{why}: {NOT_ALLOWED}"))
}

/// `testing.resolve`: `name=address` pairs separated by `,`.
fn fixed_answers(raw: Option<&str>) -> anyhow::Result<HashMap<String, Vec<IpAddr>>> {
    let mut fixed: HashMap<String, Vec<IpAddr>> = HashMap::new();
    for pair in raw
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let (name, ip) = pair
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("testing.resolve: {pair:?} is not name=address"))?;
        let ip: IpAddr = ip
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("testing.resolve: {ip:?} is not an address"))?;
        fixed
            .entry(name.trim().to_ascii_lowercase())
            .or_default()
            .push(ip);
    }
    Ok(fixed)
}

/// An error and its causes, `: `-separated (reqwest's own message names only the
/// outermost, "error sending request").
pub fn cause_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
