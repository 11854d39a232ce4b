//! The certificate authority: issues SPIFFE X.509 SVIDs and the daemon's own server certificate.
//!
//! Either a generated self-signed root (`bootstrap`) or an imported intermediate (`bootstrap
//! --ca-cert --ca-key`). Keys are ECDSA P-256. An SVID carries exactly one URI SAN (its SPIFFE
//! ID), both server and client auth EKUs, and a lifetime the operator picks within limits; the
//! subject of a CSR is ignored, only its public key is certified.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use popmesh_ctrl_api::spiffe::{self, SpiffeId};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

use crate::store::CaRecord;

/// Lifetime of a generated root.
const ROOT_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Certificates start this long before "now" to tolerate clock skew between machines.
const BACKDATE: Duration = Duration::from_secs(300);
/// Namespace and name of the daemon's own identity.
pub const CTRLD_NAMESPACE: &str = "popmesh-system";
/// See [`CTRLD_NAMESPACE`].
pub const CTRLD_NAME: &str = "ctrld";

/// Why the CA could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// rcgen refused parameters or could not sign.
    #[error("certificate: {0}")]
    Rcgen(rcgen::Error),
    /// The trust domain or an identity part is not valid.
    #[error("identity: {0}")]
    Id(spiffe::SpiffeIdError),
    /// The CSR does not parse or its signature does not verify.
    #[error("csr_pem: not a valid PKCS#10 certificate signing request (PEM): {0}")]
    Csr(rcgen::Error),
    /// The imported CA certificate or key does not parse, or the key does not match.
    #[error("imported CA: {0}")]
    Import(String),
}

// Not `#[from]`: the inner error is part of the message, so anyhow does not print it twice.
impl From<rcgen::Error> for CaError {
    fn from(e: rcgen::Error) -> Self {
        CaError::Rcgen(e)
    }
}

impl From<spiffe::SpiffeIdError> for CaError {
    fn from(e: spiffe::SpiffeIdError) -> Self {
        CaError::Id(e)
    }
}

/// An issued certificate.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The SPIFFE ID it certifies.
    pub id: SpiffeId,
    /// Leaf certificate, PEM.
    pub cert_pem: String,
    /// Private key, PEM, when the CA generated it.
    pub key_pem: Option<String>,
    /// Issuer chain up to (excluding) the root: the intermediate, if imported.
    pub chain_pem: String,
    /// Expiry, Unix seconds.
    pub not_after_unix: u64,
}

/// A loaded CA, ready to sign.
#[derive(Debug)]
pub struct Ca {
    record: CaRecord,
    issuer: Issuer<'static, KeyPair>,
}

fn to_offset(t: SystemTime) -> OffsetDateTime {
    OffsetDateTime::from(t)
}

impl Ca {
    /// Generates a self-signed root for `trust_domain`.
    ///
    /// # Errors
    /// When the trust domain is invalid or signing fails.
    pub fn generate_root(trust_domain: &str, now: SystemTime) -> Result<CaRecord, CaError> {
        spiffe::check_trust_domain(trust_domain)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "popmesh");
        dn.push(
            DnType::CommonName,
            format!("popmesh root CA {trust_domain}"),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.subject_alt_names =
            vec![SanType::URI(format!("spiffe://{trust_domain}").try_into()?)];
        params.not_before = to_offset(now - BACKDATE);
        params.not_after = to_offset(now + ROOT_TTL);
        let cert = params.self_signed(&key)?;
        Ok(CaRecord {
            trust_domain: trust_domain.to_string(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            roots_pem: cert.pem(),
            intermediate: false,
        })
    }

    /// Checks an imported intermediate (certificate and key PEM) and builds its record.
    /// `roots_pem` is what peers trust (the root above it); `None` trusts the intermediate
    /// itself.
    ///
    /// # Errors
    /// [`CaError::Import`] when the certificate or key does not parse or do not match.
    pub fn import(
        trust_domain: &str,
        cert_pem: &str,
        key_pem: &str,
        roots_pem: Option<&str>,
    ) -> Result<CaRecord, CaError> {
        spiffe::check_trust_domain(trust_domain)?;
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| CaError::Import(format!("key does not parse: {e}")))?;
        let der =
            rustls_pem(cert_pem).ok_or_else(|| CaError::Import("certificate is not PEM".into()))?;
        let (_, x509) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| CaError::Import(format!("certificate does not parse: {e}")))?;
        if !x509.is_ca() {
            return Err(CaError::Import(
                "certificate is not a CA (basicConstraints cA is not set)".into(),
            ));
        }
        if x509.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(CaError::Import("key does not match the certificate".into()));
        }
        Ok(CaRecord {
            trust_domain: trust_domain.to_string(),
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            roots_pem: roots_pem.unwrap_or(cert_pem).to_string(),
            intermediate: true,
        })
    }

    /// Loads a stored CA.
    ///
    /// # Errors
    /// When the stored certificate or key does not parse.
    pub fn load(record: CaRecord) -> Result<Self, CaError> {
        let key = KeyPair::from_pem(&record.key_pem)
            .map_err(|e| CaError::Import(format!("stored key does not parse: {e}")))?;
        let issuer = Issuer::from_ca_cert_pem(&record.cert_pem, key)
            .map_err(|e| CaError::Import(format!("stored certificate does not parse: {e}")))?;
        Ok(Ca { record, issuer })
    }

    /// The stored record.
    pub fn record(&self) -> &CaRecord {
        &self.record
    }

    /// Trust domain.
    pub fn trust_domain(&self) -> &str {
        &self.record.trust_domain
    }

    /// PEM chain between a leaf and the roots.
    fn chain_pem(&self) -> String {
        if self.record.intermediate {
            self.record.cert_pem.clone()
        } else {
            String::new()
        }
    }

    fn leaf_params(
        &self,
        id: &SpiffeId,
        dns: &[String],
        ips: &[IpAddr],
        now: SystemTime,
        ttl: Duration,
    ) -> Result<CertificateParams, CaError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "popmesh");
        dn.push(DnType::CommonName, id.name());
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::URI(id.to_string().try_into()?)];
        for d in dns {
            params
                .subject_alt_names
                .push(SanType::DnsName(d.clone().try_into()?));
        }
        for ip in ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyAgreement,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = to_offset(now - BACKDATE);
        params.not_after = to_offset(now + ttl);
        Ok(params)
    }

    /// Issues an SVID for `id`, valid `ttl` from `now`: for the public key of `csr_pem`, or for
    /// a freshly generated key (returned in [`Issued::key_pem`]).
    ///
    /// # Errors
    /// [`CaError::Csr`] for a bad CSR; otherwise signing failures.
    pub fn issue(
        &self,
        id: &SpiffeId,
        ttl: Duration,
        csr_pem: Option<&str>,
        now: SystemTime,
    ) -> Result<Issued, CaError> {
        self.issue_with_names(id, ttl, csr_pem, &[], &[], now)
    }

    /// [`Ca::issue`] with DNS and IP SANs besides the SPIFFE ID (the daemon's server
    /// certificate: clients check the host name they dialled).
    ///
    /// # Errors
    /// As [`Ca::issue`].
    pub fn issue_with_names(
        &self,
        id: &SpiffeId,
        ttl: Duration,
        csr_pem: Option<&str>,
        dns: &[String],
        ips: &[IpAddr],
        now: SystemTime,
    ) -> Result<Issued, CaError> {
        let params = self.leaf_params(id, dns, ips, now, ttl)?;
        let not_after_unix = (now + ttl)
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (cert_pem, key_pem) = match csr_pem {
            Some(pem) => {
                let csr = CertificateSigningRequestParams::from_pem(pem).map_err(CaError::Csr)?;
                // Only the CSR's key is used: names and extensions are the CA's decision.
                let csr = CertificateSigningRequestParams {
                    params,
                    public_key: csr.public_key,
                };
                (csr.signed_by(&self.issuer)?.pem(), None)
            }
            None => {
                let key = KeyPair::generate()?;
                let cert = params.signed_by(&key, &self.issuer)?;
                (cert.pem(), Some(key.serialize_pem()))
            }
        };
        Ok(Issued {
            id: id.clone(),
            cert_pem,
            key_pem,
            chain_pem: self.chain_pem(),
            not_after_unix,
        })
    }
}

/// The DER of the first PEM block of `pem` (certificates).
fn rustls_pem(pem: &str) -> Option<Vec<u8>> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    Some(p.contents)
}

/// The single SPIFFE ID (URI SAN) of a DER certificate.
///
/// # Errors
/// A message for the client when the certificate does not parse, has no or several URI SANs,
/// or the URI is not a popmesh SPIFFE ID.
pub fn spiffe_id_of(der: &[u8]) -> Result<SpiffeId, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("client certificate does not parse: {e}"))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("client certificate SAN extension: {e}"))?
        .ok_or("client certificate has no subjectAltName (needs a SPIFFE ID URI SAN)")?;
    let mut uris = san.value.general_names.iter().filter_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(u) => Some(*u),
        _ => None,
    });
    let (Some(uri), None) = (uris.next(), uris.next()) else {
        return Err("client certificate must have exactly one URI SAN (its SPIFFE ID)".into());
    };
    SpiffeId::parse(uri).map_err(|e| format!("client certificate URI SAN {uri:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_issues_svids_with_one_uri_san() {
        let now = SystemTime::now();
        let ca = Ca::load(Ca::generate_root("pop.test", now).unwrap()).unwrap();
        let id = SpiffeId::operator("pop.test", "alice").unwrap();
        let issued = ca.issue(&id, Duration::from_secs(3600), None, now).unwrap();
        let der = rustls_pem(&issued.cert_pem).unwrap();
        assert_eq!(spiffe_id_of(&der).unwrap(), id);
        assert!(issued.key_pem.is_some());
        assert!(issued.chain_pem.is_empty());

        // A CSR's key is certified, its requested names are not.
        let key = KeyPair::generate().unwrap();
        let mut req = CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
        req.subject_alt_names.push(SanType::URI(
            "spiffe://pop.test/ns/operators/sa/mallory"
                .try_into()
                .unwrap(),
        ));
        let csr = req.serialize_request(&key).unwrap().pem().unwrap();
        let svc = SpiffeId::new("pop.test", "default", "user").unwrap();
        let issued = ca
            .issue(&svc, Duration::from_secs(3600), Some(&csr), now)
            .unwrap();
        let der = rustls_pem(&issued.cert_pem).unwrap();
        assert_eq!(spiffe_id_of(&der).unwrap(), svc);
        let (_, x) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(
            x.public_key().subject_public_key.data.as_ref(),
            key.public_key_raw()
        );
        assert!(ca
            .issue(&svc, Duration::from_secs(60), Some("junk"), now)
            .is_err());
    }

    #[test]
    fn imports_an_intermediate() {
        let now = SystemTime::now();
        let root = Ca::load(Ca::generate_root("pop.test", now).unwrap()).unwrap();
        // An intermediate signed by the root.
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.signed_by(&key, &root.issuer).unwrap();
        let rec = Ca::import(
            "pop.test",
            &cert.pem(),
            &key.serialize_pem(),
            Some(&root.record.cert_pem),
        )
        .unwrap();
        let ca = Ca::load(rec).unwrap();
        let issued = ca
            .issue(
                &SpiffeId::appliance("pop.test", "pop-1").unwrap(),
                Duration::from_secs(600),
                None,
                now,
            )
            .unwrap();
        assert_eq!(issued.chain_pem, cert.pem());
        // A key that is not the certificate's is refused.
        let other = KeyPair::generate().unwrap();
        let err = Ca::import("pop.test", &cert.pem(), &other.serialize_pem(), None).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
    }
}
