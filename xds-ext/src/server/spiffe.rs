//! Workload identity on mTLS: the client certificate's SPIFFE ID must name
//! the namespace (and service account) of the node it asks config for.
//!
//! mTLS alone proves only that the client holds a certificate of the CA; a
//! proxy of namespace `a` could still send a node claiming namespace `b`
//! and read `b`'s policy. istiod closes this the same way
//! (`pilot/pkg/xds/auth.go`, `checkConnectionIdentity`): one URI SAN
//! `spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT` of the leaf
//! certificate must carry the node's namespace, and its service account
//! where the node gives one (`SERVICE_ACCOUNT` metadata, as Istio proxies
//! send it). Unlike istiod, a node without `NAMESPACE` is checked against
//! `default`, the namespace xds-ext renders it as.

use std::fmt;

use rustls::pki_types::CertificateDer;

/// `spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT`, Istio's form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpiffeId {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

impl SpiffeId {
    /// Istio's `spiffe.ParseIdentity`: exactly five segments after the
    /// scheme, the second `ns` and the fourth `sa`; `None` for anything else.
    pub fn parse(uri: &str) -> Option<SpiffeId> {
        let rest = uri.strip_prefix("spiffe://")?;
        let mut parts = rest.split('/');
        let (Some(trust_domain), Some("ns"), Some(namespace), Some("sa"), Some(service_account), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        Some(SpiffeId {
            trust_domain: trust_domain.to_owned(),
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
        })
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}/ns/{}/sa/{}", self.trust_domain, self.namespace, self.service_account)
    }
}

/// What a stream's node claims to be, as far as identity goes.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    pub node_id: &'a str,
    /// The namespace the node is rendered as (`NAMESPACE`, or `default`).
    pub namespace: &'a str,
    /// `SERVICE_ACCOUNT` metadata, when the node sends it.
    pub service_account: Option<&'a str>,
}

/// The check `serve` runs on every stream's first request when client
/// certificates are required (and not turned off with
/// `--tls-any-client-identity`).
#[derive(Debug, Clone, Default)]
pub struct IdentityCheck {
    /// `--trust-domain`: when set, the SPIFFE ID must be of this domain.
    pub trust_domain: Option<String>,
}

impl IdentityCheck {
    /// The SPIFFE ID of `peer` (the verified chain, leaf first) that
    /// authorizes `claim`, or why none does: the text a proxy receives with
    /// PERMISSION_DENIED and xds-ext logs.
    pub fn authorize(&self, peer: Option<&[CertificateDer<'_>]>, claim: Claim<'_>) -> Result<SpiffeId, String> {
        let Some(leaf) = peer.and_then(<[_]>::first) else {
            return Err(format!("node {:?} presented no client certificate", claim.node_id));
        };
        let uris = uri_names(leaf)?;
        let ids: Vec<SpiffeId> = uris.iter().filter_map(|u| SpiffeId::parse(u)).collect();
        if ids.is_empty() {
            let found = if uris.is_empty() { "no URI SAN".to_owned() } else { format!("URI SANs {uris:?}") };
            return Err(format!(
                "node {:?}: its client certificate has {found}, and xds-ext serves a node only to a certificate \
                 naming it as spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT",
                claim.node_id
            ));
        }
        let found = ids.iter().find(|id| {
            self.trust_domain.as_deref().is_none_or(|d| d == id.trust_domain)
                && id.namespace == claim.namespace
                && claim.service_account.is_none_or(|sa| sa.is_empty() || sa == id.service_account)
        });
        found.cloned().ok_or_else(|| {
            let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
            let mut wanted = format!("namespace {:?}", claim.namespace);
            if let Some(sa) = claim.service_account.filter(|sa| !sa.is_empty()) {
                wanted.push_str(&format!(", service account {sa:?}"));
            }
            if let Some(domain) = &self.trust_domain {
                wanted.push_str(&format!(", trust domain {domain:?}"));
            }
            format!(
                "node {:?} asks for the config of {wanted}, but its client certificate is {}",
                claim.node_id,
                ids.join(", ")
            )
        })
    }
}

/// The URI SANs of a certificate (rustls verified the chain already; this
/// only reads it).
fn uri_names(cert: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    let parsed =
        webpki::EndEntityCert::try_from(cert).map_err(|e| format!("the client certificate cannot be read: {e:?}"))?;
    Ok(parsed.valid_uri_names().map(str::to_owned).collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn cert(uris: &[&str], dns: &[&str]) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>()).unwrap();
        for uri in uris {
            params.subject_alt_names.push(rcgen::SanType::URI(rcgen::string::Ia5String::try_from(*uri).unwrap()));
        }
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    fn claim<'a>(namespace: &'a str, service_account: Option<&'a str>) -> Claim<'a> {
        Claim { node_id: "productpage-v1", namespace, service_account }
    }

    #[test]
    fn spiffe_ids_parse_as_istio_parses_them() {
        let id = SpiffeId::parse("spiffe://cluster.local/ns/default/sa/bookinfo-productpage").unwrap();
        assert_eq!(
            id,
            SpiffeId {
                trust_domain: "cluster.local".into(),
                namespace: "default".into(),
                service_account: "bookinfo-productpage".into()
            }
        );
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/default/sa/bookinfo-productpage");
        for bad in [
            "spiffe://cluster.local/ns/default",
            "spiffe://cluster.local/ns/default/sa/a/b",
            "spiffe://cluster.local/namespace/default/sa/a",
            "https://cluster.local/ns/default/sa/a",
            "spiffe:/cluster.local/ns/default/sa/a",
            "",
        ] {
            assert_eq!(SpiffeId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_certificate_of_the_namespace_is_authorized() {
        let leaf = cert(&["spiffe://cluster.local/ns/default/sa/productpage"], &["productpage.default"]);
        let check = IdentityCheck::default();
        let id = check.authorize(Some(std::slice::from_ref(&leaf)), claim("default", None)).unwrap();
        assert_eq!(id.service_account, "productpage");
        assert!(check.authorize(Some(std::slice::from_ref(&leaf)), claim("default", Some("productpage"))).is_ok());
        assert!(check.authorize(Some(&[leaf]), claim("default", Some(""))).is_ok(), "an empty one is not given");
    }

    #[test]
    fn another_namespace_or_service_account_is_refused_naming_both() {
        let leaf = cert(&["spiffe://cluster.local/ns/default/sa/productpage"], &[]);
        let check = IdentityCheck::default();
        assert_eq!(
            check.authorize(Some(std::slice::from_ref(&leaf)), claim("prod", None)).unwrap_err(),
            "node \"productpage-v1\" asks for the config of namespace \"prod\", but its client certificate is \
             spiffe://cluster.local/ns/default/sa/productpage"
        );
        let err = check.authorize(Some(&[leaf]), claim("default", Some("reviews"))).unwrap_err();
        assert!(err.contains("namespace \"default\", service account \"reviews\", but"), "{err}");
    }

    #[test]
    fn any_of_several_uris_may_match_and_the_trust_domain_is_checked_when_set() {
        let leaf = cert(&["urn:example:x", "spiffe://other.domain/ns/a/sa/x", "spiffe://cluster.local/ns/b/sa/y"], &[]);
        assert!(IdentityCheck::default().authorize(Some(std::slice::from_ref(&leaf)), claim("b", Some("y"))).is_ok());
        let strict = IdentityCheck { trust_domain: Some("cluster.local".into()) };
        assert!(strict.authorize(Some(std::slice::from_ref(&leaf)), claim("b", None)).is_ok());
        let err = strict.authorize(Some(&[leaf]), claim("a", None)).unwrap_err();
        assert!(
            err.contains("namespace \"a\", trust domain \"cluster.local\", but its client certificate is"),
            "{err}"
        );
    }

    #[test]
    fn a_certificate_without_a_spiffe_id_or_no_certificate_is_refused() {
        let check = IdentityCheck::default();
        let dns_only = cert(&[], &["productpage.default"]);
        let err = check.authorize(Some(&[dns_only]), claim("default", None)).unwrap_err();
        assert!(
            err.starts_with("node \"productpage-v1\": its client certificate has no URI SAN, and xds-ext"),
            "{err}"
        );
        let other_uri = cert(&["https://example.com/productpage"], &[]);
        let err = check.authorize(Some(&[other_uri]), claim("default", None)).unwrap_err();
        assert!(err.contains("has URI SANs [\"https://example.com/productpage\"]"), "{err}");
        assert_eq!(
            check.authorize(None, claim("default", None)).unwrap_err(),
            "node \"productpage-v1\" presented no client certificate"
        );
        assert!(check.authorize(Some(&[]), claim("default", None)).is_err());
    }
}
