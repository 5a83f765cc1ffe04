//! What one xDS stream has sent, and what the proxy made of it.
//!
//! Protocol-independent: the state-of-the-world and delta transports both
//! drive it. Rules:
//! - a resource is sent when the version xds-ext wants the proxy to run
//!   differs from the last version sent on this stream, unless the proxy
//!   already rejected that version: a NACKed version is never sent again on
//!   the stream (go-control-plane re-sends it in a loop; istiod does not);
//! - every response carries a fresh nonce and is remembered until the proxy
//!   answers it; an answer naming an unknown nonce is ignored, and an answer
//!   applies to a resource only if the response still holds the latest
//!   version sent for it (a later response superseded the rest).

use std::collections::VecDeque;
use std::sync::Arc;

use serde::Serialize;

use super::resources::{Built, Resources};
use super::small_map::SmallMap;

/// At most this many unanswered responses are remembered per stream; Envoy
/// answers each in order, so more means the proxy stopped answering.
const MAX_IN_FLIGHT: usize = 64;
/// At most this many rejected versions are remembered per resource.
const MAX_REJECTED: usize = 16;

/// A proxy's rejection of one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Nack {
    pub version: String,
    /// Envoy's `error_detail.message`.
    pub message: String,
}

/// Where one resource stands on one proxy, like `istioctl proxy-status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SyncStatus {
    /// The proxy acknowledged the version xds-ext wants it to run.
    #[serde(rename = "SYNCED")]
    Synced,
    /// Sent (or about to be sent) but not acknowledged yet.
    #[serde(rename = "STALE")]
    Stale,
    /// Nothing was ever sent for it on this stream.
    #[serde(rename = "NOT SENT")]
    NotSent,
    /// The proxy rejected the version xds-ext wants it to run.
    #[serde(rename = "NACKED")]
    Nacked,
}

impl SyncStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncStatus::Synced => "SYNCED",
            SyncStatus::Stale => "STALE",
            SyncStatus::NotSent => "NOT SENT",
            SyncStatus::Nacked => "NACKED",
        }
    }
}

#[derive(Debug, Clone, Default)]
struct ResourceState {
    /// The latest version sent (or that the proxy said it had on connect).
    sent: Option<String>,
    /// The latest version the proxy acknowledged, and the resource itself
    /// (a state-of-the-world response re-sends it in place of a rejected one).
    acked: Option<Arc<Built>>,
    acked_version: Option<String>,
    nack: Option<Nack>,
    rejected: VecDeque<String>,
}

/// The outcome of a proxy's answer to a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Resources whose sent version the proxy now runs.
    Acked(Vec<String>),
    /// Resources whose sent version the proxy rejected.
    Nacked(Vec<String>),
    /// A nonce this stream does not know (or no longer remembers): ignored.
    UnknownNonce,
}

/// A resource's state, for status views.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResourceView {
    pub status: SyncStatus,
    /// What xds-ext wants the proxy to run (`None`: nothing rendered).
    pub desired: Option<String>,
    pub sent: Option<String>,
    pub acked: Option<String>,
    /// The last NACK, while it concerns the latest version sent.
    pub nack: Option<Nack>,
}

#[derive(Debug, Default)]
pub struct StreamState {
    /// Sorted, unique.
    subscribed: Vec<String>,
    resources: SmallMap<ResourceState>,
    in_flight: VecDeque<(String, Vec<Arc<Built>>)>,
    next_nonce: u64,
    last_nonce: Option<String>,
}

impl StreamState {
    pub fn new() -> Self {
        StreamState::default()
    }

    /// State of the world: the request names the whole subscription.
    pub fn set_subscription(&mut self, names: impl IntoIterator<Item = String>) {
        self.subscribed = names.into_iter().collect();
        self.subscribed.sort_unstable();
        self.subscribed.dedup();
    }

    /// Delta: names added to and removed from the subscription.
    pub fn change_subscription(&mut self, subscribe: &[String], unsubscribe: &[String]) {
        for name in unsubscribe {
            self.subscribed.retain(|s| s != name);
            // Re-subscribing later starts afresh: the proxy dropped the resource.
            self.resources.remove(name);
        }
        self.subscribed.extend(subscribe.iter().cloned());
        self.subscribed.sort_unstable();
        self.subscribed.dedup();
    }

    pub fn subscribed(&self) -> impl Iterator<Item = &str> {
        self.subscribed.iter().map(String::as_str)
    }

    pub fn is_subscribed(&self, name: &str) -> bool {
        self.subscribed.iter().any(|s| s == name)
    }

    /// A reconnecting proxy says it runs `version` of `name` (delta
    /// `initial_resource_versions`, or a state-of-the-world request's
    /// `version_info` when it matches what xds-ext would send). Counted as
    /// sent and acknowledged, so an unchanged config is not pushed again.
    pub fn proxy_has(&mut self, built: &Arc<Built>) {
        let state = self.resources.entry(&built.name);
        state.sent = Some(built.version.clone());
        state.acked_version = Some(built.version.clone());
        state.acked = Some(built.clone());
    }

    /// This proxy rejected `nack.version` of `name` on an earlier stream.
    /// Envoy ACKs a config identical to one it rejected before (it compares
    /// with the last config it tried, not the last it applied), so re-sending
    /// it on a new stream would be reported as SYNCED while the filter has
    /// no config: a version a proxy rejected is never re-sent to it.
    pub fn rejected_before(&mut self, name: &str, nack: Nack) {
        let state = self.resources.entry(name);
        if !state.rejected.contains(&nack.version) {
            state.rejected.push_back(nack.version.clone());
            while state.rejected.len() > MAX_REJECTED {
                state.rejected.pop_front();
            }
        }
        state.nack = Some(nack);
    }

    /// Subscribed resources whose desired version should be sent: it differs
    /// from the last one sent and the proxy has not rejected it.
    pub fn changed(&self, desired: &Resources) -> Vec<Arc<Built>> {
        self.subscribed
            .iter()
            .filter_map(|name| desired.get(name))
            .filter(|built| {
                let state = self.resources.get(&built.name);
                let sent = state.and_then(|s| s.sent.as_deref());
                let rejected = state.is_some_and(|s| s.rejected.contains(&built.version));
                sent != Some(built.version.as_str()) && !rejected
            })
            .cloned()
            .collect()
    }

    /// State of the world: the full set to send when [`StreamState::changed`]
    /// is not empty. A response must hold every subscribed resource (Envoy
    /// treats one left out as removed), so where the desired version was
    /// rejected the proxy's acknowledged one goes in its place.
    pub fn full_state(&self, desired: &Resources) -> Vec<Arc<Built>> {
        self.subscribed
            .iter()
            .filter_map(|name| {
                let built = desired.get(name)?;
                let state = self.resources.get(name);
                if state.is_some_and(|s| s.rejected.contains(&built.version)) {
                    state.and_then(|s| s.acked.clone())
                } else {
                    Some(built.clone())
                }
            })
            .collect()
    }

    /// Records a response holding `sent`; returns its nonce.
    pub fn record_sent(&mut self, sent: Vec<Arc<Built>>) -> String {
        self.next_nonce += 1;
        let nonce = self.next_nonce.to_string();
        for built in &sent {
            self.resources.entry(&built.name).sent = Some(built.version.clone());
        }
        self.in_flight.push_back((nonce.clone(), sent));
        self.last_nonce = Some(nonce.clone());
        while self.in_flight.len() > MAX_IN_FLIGHT {
            self.in_flight.pop_front();
        }
        nonce
    }

    /// The nonce of the latest response sent: a state-of-the-world request
    /// naming another one is stale.
    pub fn latest_nonce(&self) -> Option<&str> {
        self.last_nonce.as_deref()
    }

    /// The proxy answered the response `nonce`: an ACK, or a NACK carrying
    /// Envoy's `error_detail.message`.
    pub fn answer(&mut self, nonce: &str, error: Option<&str>) -> Answer {
        let Some(index) = self.in_flight.iter().position(|(n, _)| n == nonce) else {
            return Answer::UnknownNonce;
        };
        // Envoy answers responses in order: older unanswered ones are moot.
        let mut answered = self.in_flight.drain(..=index);
        let Some((_, sent)) = answered.next_back() else {
            return Answer::UnknownNonce;
        };
        drop(answered);
        let mut names = Vec::new();
        for built in sent {
            let Some(state) = self.resources.get_mut(&built.name) else {
                continue;
            };
            if state.sent.as_deref() != Some(built.version.as_str()) {
                continue;
            }
            match error {
                None => {
                    if state.nack.as_ref().is_some_and(|n| n.version == built.version) {
                        state.nack = None;
                    }
                    state.acked_version = Some(built.version.clone());
                    state.acked = Some(built.clone());
                }
                Some(message) => {
                    // The fallback of a state-of-the-world response is the
                    // version the proxy already runs: not a rejection of it.
                    if state.acked_version.as_deref() == Some(built.version.as_str()) {
                        continue;
                    }
                    state.nack = Some(Nack { version: built.version.clone(), message: message.to_owned() });
                    if !state.rejected.contains(&built.version) {
                        state.rejected.push_back(built.version.clone());
                        while state.rejected.len() > MAX_REJECTED {
                            state.rejected.pop_front();
                        }
                    }
                }
            }
            names.push(built.name.clone());
        }
        match error {
            None => Answer::Acked(names),
            Some(_) => Answer::Nacked(names),
        }
    }

    /// Where `name` stands, given the version xds-ext wants the proxy to run.
    pub fn view(&self, name: &str, desired: Option<&str>) -> ResourceView {
        let state = self.resources.get(name);
        let sent = state.and_then(|s| s.sent.clone());
        let acked = state.and_then(|s| s.acked_version.clone());
        let nack = state
            .and_then(|s| s.nack.clone())
            .filter(|n| [sent.as_deref(), desired].contains(&Some(n.version.as_str())));
        let status = match desired {
            _ if nack.as_ref().is_some_and(|n| Some(n.version.as_str()) == desired) => SyncStatus::Nacked,
            Some(d) if acked.as_deref() == Some(d) => SyncStatus::Synced,
            _ if sent.is_none() => SyncStatus::NotSent,
            _ => SyncStatus::Stale,
        };
        ResourceView { status, desired: desired.map(str::to_owned), sent, acked, nack }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::server::resources::Modules;
    use std::path::Path;

    fn built(name: &str, json: &str) -> Arc<Built> {
        Arc::new(Modules::local(Path::new("/m")).build(name, json).unwrap())
    }

    fn desired(items: &[&Arc<Built>]) -> Resources {
        items.iter().map(|b| (b.name.clone(), Arc::clone(b))).collect()
    }

    const ROUTING: &str = "switchyard.routing";
    const FAULT: &str = "switchyard.fault";

    #[test]
    fn a_new_version_is_sent_once_and_synced_on_ack() {
        let mut stream = StreamState::new();
        stream.set_subscription([ROUTING.to_owned()]);
        let v1 = built(ROUTING, "1");
        let want = desired(&[&v1]);
        assert_eq!(stream.view(ROUTING, Some(&v1.version)).status, SyncStatus::NotSent);

        let send = stream.changed(&want);
        assert_eq!(send, vec![v1.clone()]);
        let nonce = stream.record_sent(send);
        assert!(stream.changed(&want).is_empty(), "sent once, not again while unanswered");
        assert_eq!(stream.view(ROUTING, Some(&v1.version)).status, SyncStatus::Stale);

        assert_eq!(stream.answer(&nonce, None), Answer::Acked(vec![ROUTING.to_owned()]));
        assert_eq!(stream.view(ROUTING, Some(&v1.version)).status, SyncStatus::Synced);
        assert!(stream.changed(&want).is_empty());
    }

    #[test]
    fn a_nacked_version_is_never_sent_again_but_the_next_one_is() {
        let mut stream = StreamState::new();
        stream.set_subscription([ROUTING.to_owned()]);
        let good = built(ROUTING, "good");
        let bad = built(ROUTING, "bad");
        let n1 = stream.record_sent(stream.changed(&desired(&[&good])));
        stream.answer(&n1, None);

        let n2 = stream.record_sent(stream.changed(&desired(&[&bad])));
        assert_eq!(stream.answer(&n2, Some("Unable to create Wasm plugin")), Answer::Nacked(vec![ROUTING.to_owned()]));
        let view = stream.view(ROUTING, Some(&bad.version));
        assert_eq!(view.status, SyncStatus::Nacked);
        assert_eq!(view.acked.as_deref(), Some(good.version.as_str()));
        assert_eq!(view.nack.unwrap().message, "Unable to create Wasm plugin");

        assert!(stream.changed(&desired(&[&bad])).is_empty(), "the rejected version is not re-sent");

        // Back to the good config: sent (Envoy skips an identical config), synced.
        let send = stream.changed(&desired(&[&good]));
        assert_eq!(send, vec![good.clone()]);
        let n3 = stream.record_sent(send);
        stream.answer(&n3, None);
        assert_eq!(stream.view(ROUTING, Some(&good.version)).status, SyncStatus::Synced);

        // The bad version again: still never re-sent on this stream.
        assert!(stream.changed(&desired(&[&bad])).is_empty());
        let fixed = built(ROUTING, "fixed");
        assert_eq!(stream.changed(&desired(&[&fixed])), vec![fixed]);
    }

    #[test]
    fn unknown_and_superseded_nonces_are_ignored() {
        let mut stream = StreamState::new();
        stream.set_subscription([ROUTING.to_owned()]);
        let v1 = built(ROUTING, "1");
        let v2 = built(ROUTING, "2");
        assert_eq!(stream.answer("7", None), Answer::UnknownNonce);

        let n1 = stream.record_sent(stream.changed(&desired(&[&v1])));
        let n2 = stream.record_sent(stream.changed(&desired(&[&v2])));
        assert_eq!(stream.latest_nonce(), Some(n2.as_str()));
        // The answer to the first response concerns a version no longer the latest sent.
        assert_eq!(stream.answer(&n1, Some("old failure")), Answer::Nacked(vec![]));
        assert_eq!(stream.view(ROUTING, Some(&v2.version)).status, SyncStatus::Stale);
        assert_eq!(stream.answer(&n1, None), Answer::UnknownNonce, "answered already");
        stream.answer(&n2, None);
        assert_eq!(stream.view(ROUTING, Some(&v2.version)).status, SyncStatus::Synced);
    }

    #[test]
    fn full_state_keeps_the_acked_resource_in_place_of_a_rejected_one() {
        let mut stream = StreamState::new();
        stream.set_subscription([ROUTING.to_owned(), FAULT.to_owned()]);
        let (r1, r2, f1, f2) = (built(ROUTING, "1"), built(ROUTING, "2"), built(FAULT, "1"), built(FAULT, "2"));
        let n = stream.record_sent(stream.full_state(&desired(&[&r1, &f1])));
        stream.answer(&n, None);
        let n = stream.record_sent(stream.full_state(&desired(&[&r2, &f1])));
        stream.answer(&n, Some("bad routing"));
        assert_eq!(stream.view(FAULT, Some(&f1.version)).status, SyncStatus::Synced);
        assert_eq!(stream.view(ROUTING, Some(&r2.version)).status, SyncStatus::Nacked);

        let want = desired(&[&r2, &f2]);
        assert_eq!(stream.changed(&want), vec![f2.clone()]);
        let full = stream.full_state(&want);
        assert_eq!(full, vec![f2.clone(), r1.clone()]);
        let n = stream.record_sent(full);
        // Accepted: the fallback does not clear the NACK of r2.
        stream.answer(&n, None);
        assert_eq!(stream.view(FAULT, Some(&f2.version)).status, SyncStatus::Synced);
        assert_eq!(stream.view(ROUTING, Some(&r2.version)).status, SyncStatus::Nacked);
        assert_eq!(stream.view(ROUTING, Some(&r2.version)).acked, Some(r1.version.clone()));
        assert!(stream.changed(&want).is_empty());
    }

    #[test]
    fn a_reconnecting_proxy_with_the_current_version_is_not_pushed_again() {
        let mut stream = StreamState::new();
        stream.change_subscription(&[ROUTING.to_owned()], &[]);
        let v1 = built(ROUTING, "1");
        stream.proxy_has(&v1);
        assert!(stream.changed(&desired(&[&v1])).is_empty());
        assert_eq!(stream.view(ROUTING, Some(&v1.version)).status, SyncStatus::Synced);
        let v2 = built(ROUTING, "2");
        assert_eq!(stream.changed(&desired(&[&v2])), vec![v2]);
    }

    #[test]
    fn a_version_rejected_on_an_earlier_stream_is_not_sent_and_shows_nacked() {
        let mut stream = StreamState::new();
        stream.set_subscription([ROUTING.to_owned()]);
        let bad = built(ROUTING, "bad");
        let nack = Nack { version: bad.version.clone(), message: "Unable to create Wasm plugin".into() };
        stream.rejected_before(ROUTING, nack.clone());
        assert!(stream.changed(&desired(&[&bad])).is_empty());
        let view = stream.view(ROUTING, Some(&bad.version));
        assert_eq!(view.status, SyncStatus::Nacked);
        assert_eq!(view.nack, Some(nack));
        let good = built(ROUTING, "good");
        assert_eq!(stream.view(ROUTING, Some(&good.version)).status, SyncStatus::NotSent);
        assert_eq!(stream.changed(&desired(&[&good])), vec![good]);
    }

    #[test]
    fn unsubscribed_resources_are_not_sent_and_resubscribing_starts_afresh() {
        let mut stream = StreamState::new();
        let v1 = built(ROUTING, "1");
        assert!(stream.changed(&desired(&[&v1])).is_empty());
        stream.change_subscription(&[ROUTING.to_owned()], &[]);
        let n = stream.record_sent(stream.changed(&desired(&[&v1])));
        stream.answer(&n, None);
        stream.change_subscription(&[], &[ROUTING.to_owned()]);
        stream.change_subscription(&[ROUTING.to_owned()], &[]);
        assert_eq!(stream.changed(&desired(&[&v1])), vec![v1]);
    }
}
