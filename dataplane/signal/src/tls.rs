//! Mutual TLS with SPIFFE identities, on both legs of the lane, with rotation in place.
//!
//! A [`TlsState`] holds the lane's SVID (certificate chain and key) and the trust bundle. The
//! rustls configs it builds ([`TlsState::server_config`], [`TlsState::client_config`]) are made
//! once and never change; their certificate resolver and peer verifiers read the current SVID
//! and bundle on every handshake. So [`TlsState::set_identity`] and
//! [`TlsState::set_trust_bundle`] apply to the next handshake, and open connections (and the
//! WebSockets inside them) keep going.
//!
//! Peers are verified the SPIFFE way (X.509-SVID): the chain must lead to a root of the bundle,
//! be valid now, carry the right extended key usage, and the leaf must have exactly one URI SAN,
//! a SPIFFE ID of the bundle's trust domain. DNS names are not checked: endpoints are named by
//! identity, not by host name. A caller without a certificate, with an expired one, or with one
//! of another trust domain fails the handshake.
//!
//! Inbound, the lane never sends session tickets (a caller could resume after its certificate
//! expired). Upstream, where one core opens many connections to the same few endpoints (every
//! WebSocket takes its own), the pools resume TLS 1.3 sessions the services offer
//! ([`TlsState::resuming_client_config`]): only within `signaling.upstream_resumption` of the
//! full handshake that verified the service, and never across a rotation of the lane's SVID or
//! bundle.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use popmesh_ctrl_api::SpiffeId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, ServerConfig,
    SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// ALPN ids, most preferred first.
pub const ALPN_H2: &[u8] = b"h2";
/// HTTP/1.1's ALPN id.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// Why TLS material was refused.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM section does not parse.
    #[error("{what}: {reason}")]
    Pem {
        /// Which input ("certificate", "private key", "trust bundle").
        what: &'static str,
        /// The parser's words.
        reason: String,
    },
    /// The certificate is not a usable SVID.
    #[error("certificate: {0}")]
    Svid(String),
    /// The key does not fit the certificate or is of an unsupported kind.
    #[error("private key: {0}")]
    Key(String),
    /// The trust bundle has no usable root.
    #[error("trust bundle: {0}")]
    Bundle(String),
}

/// The lane's own identity: an X.509-SVID and its key.
#[derive(Clone)]
pub struct Identity {
    id: SpiffeId,
    key: Arc<CertifiedKey>,
    not_after_unix: i64,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("id", &self.id.to_string())
            .field("not_after_unix", &self.not_after_unix)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// From PEM: the SVID first, then its chain up to (not including) the root, and the key.
    ///
    /// # Errors
    /// Unparsable PEM, no certificate, a leaf without exactly one SPIFFE URI SAN, a key that is
    /// not ECDSA/Ed25519/RSA or does not match the certificate.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsError> {
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Pem {
                what: "certificate",
                reason: e.to_string(),
            })?;
        let leaf = chain
            .first()
            .ok_or_else(|| TlsError::Svid("no CERTIFICATE section in the PEM".into()))?;
        let id = spiffe_id_of(leaf).map_err(TlsError::Svid)?;
        let not_after_unix = not_after(leaf).map_err(TlsError::Svid)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Pem {
            what: "private key",
            reason: e.to_string(),
        })?;
        let provider = provider();
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| TlsError::Key(e.to_string()))?;
        let key = CertifiedKey::new(chain, signing);
        key.keys_match().map_err(|e| {
            TlsError::Key(format!("does not belong to the certificate of {id}: {e}"))
        })?;
        Ok(Identity {
            id,
            key: Arc::new(key),
            not_after_unix,
        })
    }

    /// The SPIFFE ID the SVID certifies.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.id
    }

    /// The SVID's `notAfter`, Unix seconds.
    pub fn not_after_unix(&self) -> i64 {
        self.not_after_unix
    }
}

/// Roots that verify peers, and the trust domain their SPIFFE IDs must be of.
#[derive(Clone)]
pub struct TrustBundle {
    trust_domain: String,
    anchors: Arc<Vec<rustls_pki_types::TrustAnchor<'static>>>,
}

impl fmt::Debug for TrustBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustBundle")
            .field("trust_domain", &self.trust_domain)
            .field("roots", &self.anchors.len())
            .finish()
    }
}

impl PartialEq for TrustBundle {
    fn eq(&self, other: &Self) -> bool {
        self.trust_domain == other.trust_domain && self.anchors == other.anchors
    }
}

impl TrustBundle {
    /// From the root certificates (PEM) of `trust_domain`.
    ///
    /// # Errors
    /// Unparsable PEM, no certificate, or a certificate that cannot be a trust anchor.
    pub fn from_pem(trust_domain: &str, roots_pem: &[u8]) -> Result<Self, TlsError> {
        popmesh_ctrl_api::spiffe::check_trust_domain(trust_domain)
            .map_err(|e| TlsError::Bundle(format!("trust domain {trust_domain:?}: {e}")))?;
        let mut anchors = Vec::new();
        for der in CertificateDer::pem_slice_iter(roots_pem) {
            let der = der.map_err(|e| TlsError::Pem {
                what: "trust bundle",
                reason: e.to_string(),
            })?;
            let anchor = webpki::anchor_from_trusted_cert(&der)
                .map_err(|e| TlsError::Bundle(format!("root does not parse: {e}")))?;
            anchors.push(anchor.to_owned());
        }
        if anchors.is_empty() {
            return Err(TlsError::Bundle("no CERTIFICATE section in the PEM".into()));
        }
        Ok(TrustBundle {
            trust_domain: trust_domain.to_owned(),
            anchors: Arc::new(anchors),
        })
    }

    /// The trust domain peers must be of.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// Verifies `leaf` (with `intermediates`) for `usage` at `now` and returns its SPIFFE ID.
    fn verify(
        &self,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: webpki::KeyUsage,
    ) -> Result<SpiffeId, rustls::Error> {
        let cert = webpki::EndEntityCert::try_from(leaf).map_err(pki_error)?;
        cert.verify_for_usage(
            algorithms().all,
            &self.anchors,
            intermediates,
            now,
            usage,
            None,
            None,
        )
        .map_err(pki_error)?;
        let id = spiffe_id_of(leaf).map_err(|reason| {
            rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
                Arc::new(SpiffeError(reason)),
            )))
        })?;
        if id.trust_domain() != self.trust_domain {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                rustls::OtherError(Arc::new(SpiffeError(format!(
                    "{id} is not of trust domain {}",
                    self.trust_domain
                )))),
            )));
        }
        Ok(id)
    }
}

#[derive(Debug)]
struct SpiffeError(String);

impl fmt::Display for SpiffeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SpiffeError {}

fn pki_error(e: webpki::Error) -> rustls::Error {
    use webpki::Error as E;
    let c = match e {
        E::BadDer | E::BadDerTime => CertificateError::BadEncoding,
        E::CertExpired { .. } => CertificateError::Expired,
        E::CertNotValidYet { .. } => CertificateError::NotValidYet,
        E::UnknownIssuer => CertificateError::UnknownIssuer,
        E::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        E::RequiredEkuNotFoundContext(_) => CertificateError::InvalidPurpose,
        other => CertificateError::Other(rustls::OtherError(Arc::new(other))),
    };
    rustls::Error::InvalidCertificate(c)
}

/// The one crypto provider of the process (ring; see ARCHITECTURE.md).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Signature algorithms of the ring provider, looked up once (every handshake verifies with
/// them; building a provider per handshake would allocate its suite and group lists).
fn algorithms() -> &'static WebPkiSupportedAlgorithms {
    static ALGORITHMS: std::sync::OnceLock<WebPkiSupportedAlgorithms> = std::sync::OnceLock::new();
    ALGORITHMS
        .get_or_init(|| rustls::crypto::ring::default_provider().signature_verification_algorithms)
}

/// Handshake signature checks, the same for both verifiers.
fn tls12_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms())
}

fn tls13_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms())
}

/// The lane's current identity and trust bundle, shared by every signaling core.
#[derive(Debug)]
pub struct TlsState {
    identity: ArcSwap<Identity>,
    bundle: ArcSwap<TrustBundle>,
}

impl TlsState {
    /// Starts with `identity` and `bundle`.
    ///
    /// # Errors
    /// The identity is not of the bundle's trust domain.
    pub fn new(identity: Identity, bundle: TrustBundle) -> Result<Arc<Self>, TlsError> {
        check_domain(&identity, &bundle)?;
        Ok(Arc::new(TlsState {
            identity: ArcSwap::from_pointee(identity),
            bundle: ArcSwap::from_pointee(bundle),
        }))
    }

    /// Replaces the SVID for every handshake from now on (open connections are not touched).
    ///
    /// # Errors
    /// The identity is not of the current bundle's trust domain (nothing changes).
    pub fn set_identity(&self, identity: Identity) -> Result<(), TlsError> {
        check_domain(&identity, &self.bundle.load())?;
        self.identity.store(Arc::new(identity));
        Ok(())
    }

    /// Replaces the trust bundle for every handshake from now on.
    ///
    /// # Errors
    /// The bundle is of another trust domain than the SVID (nothing changes).
    pub fn set_trust_bundle(&self, bundle: TrustBundle) -> Result<(), TlsError> {
        check_domain(&self.identity.load(), &bundle)?;
        self.bundle.store(Arc::new(bundle));
        Ok(())
    }

    /// The current SVID.
    pub fn identity(&self) -> Arc<Identity> {
        self.identity.load_full()
    }

    /// The current trust bundle.
    pub fn trust_bundle(&self) -> Arc<TrustBundle> {
        self.bundle.load_full()
    }

    /// A server config that requires a client SVID, offering `alpn` (e.g. `[ALPN_H2,
    /// ALPN_HTTP11]`; empty for TCP pass-through).
    pub fn server_config(self: &Arc<Self>, alpn: &[&[u8]]) -> Arc<ServerConfig> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_client_cert_verifier(Arc::new(SpiffeClientVerifier(self.clone())))
            .with_cert_resolver(Arc::new(CurrentIdentity(self.clone())));
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        // Session tickets would let a client resume after its certificate expired.
        config.send_tls13_tickets = 0;
        Arc::new(config)
    }

    /// A client config that presents the lane's SVID and accepts any server SVID of the trust
    /// domain, offering `alpn`.
    pub fn client_config(self: &Arc<Self>, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier(self.clone())))
            .with_client_cert_resolver(Arc::new(CurrentIdentity(self.clone())));
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config.resumption = rustls::client::Resumption::disabled();
        Arc::new(config)
    }

    /// Like [`TlsState::client_config`], but resuming TLS sessions with servers that offer
    /// tickets (an abbreviated handshake: no certificates sent, signed or verified on either
    /// side), for the lane's upstream pools, where one core opens many connections to the same
    /// few endpoints. A session is resumed only within `max_age` of the full handshake that
    /// verified the server, and never across a change of the lane's SVID or trust bundle: a
    /// rotation forgets every session. `max_age` zero disables resumption.
    pub fn resuming_client_config(
        self: &Arc<Self>,
        alpn: &[&[u8]],
        max_age: std::time::Duration,
    ) -> Arc<ClientConfig> {
        let base = self.client_config(alpn);
        if max_age.is_zero() {
            return base;
        }
        let mut config = (*base).clone();
        config.resumption =
            rustls::client::Resumption::store(Arc::new(ScopedSessions::new(self.clone(), max_age)))
                // TLS 1.2 resumption would rest on the server's session id or ticket alone.
                .tls12_resumption(rustls::client::Tls12Resumption::Disabled);
        Arc::new(config)
    }
}

/// Sessions kept per server name by [`TlsState::resuming_client_config`].
const SESSIONS_PER_SERVER: usize = 256;

/// A client session store scoped to one SVID, one trust bundle and an age: the whole cache is
/// dropped when the lane's identity or bundle changes, and sessions older than `max_age` are
/// never handed out.
struct ScopedSessions {
    tls: Arc<TlsState>,
    max_age: std::time::Duration,
    scope: std::sync::Mutex<Scope>,
}

struct Scope {
    identity: Arc<Identity>,
    bundle: Arc<TrustBundle>,
    /// (server, when its session was stored, the session), oldest first.
    tickets: std::collections::VecDeque<(
        ServerName<'static>,
        std::time::Instant,
        rustls::client::Tls13ClientSessionValue,
    )>,
    kx_hints: Vec<(ServerName<'static>, rustls::NamedGroup)>,
}

impl fmt::Debug for ScopedSessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopedSessions")
            .field("max_age", &self.max_age)
            .finish_non_exhaustive()
    }
}

impl ScopedSessions {
    fn new(tls: Arc<TlsState>, max_age: std::time::Duration) -> Self {
        let scope = Scope {
            identity: tls.identity.load_full(),
            bundle: tls.bundle.load_full(),
            tickets: std::collections::VecDeque::new(),
            kx_hints: Vec::new(),
        };
        ScopedSessions {
            tls,
            max_age,
            scope: std::sync::Mutex::new(scope),
        }
    }

    /// The store, emptied first if the SVID or the bundle changed since it was filled, and
    /// without sessions older than `max_age`.
    fn current(&self) -> std::sync::MutexGuard<'_, Scope> {
        let mut scope = self
            .scope
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let identity = self.tls.identity.load();
        let bundle = self.tls.bundle.load();
        if !Arc::ptr_eq(&scope.identity, &identity) || !Arc::ptr_eq(&scope.bundle, &bundle) {
            scope.identity = Arc::clone(&identity);
            scope.bundle = Arc::clone(&bundle);
            scope.tickets.clear();
            scope.kx_hints.clear();
        }
        let now = std::time::Instant::now();
        while scope
            .tickets
            .front()
            .is_some_and(|(_, at, _)| now.duration_since(*at) >= self.max_age)
        {
            scope.tickets.pop_front();
        }
        scope
    }
}

impl rustls::client::ClientSessionStore for ScopedSessions {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: rustls::NamedGroup) {
        let mut scope = self.current();
        scope.kx_hints.retain(|(n, _)| *n != server_name);
        scope.kx_hints.push((server_name, group));
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<rustls::NamedGroup> {
        let scope = self.current();
        scope
            .kx_hints
            .iter()
            .find(|(n, _)| n == server_name)
            .map(|(_, g)| *g)
    }

    fn set_tls12_session(
        &self,
        _server_name: ServerName<'static>,
        _value: rustls::client::Tls12ClientSessionValue,
    ) {
    }

    fn tls12_session(
        &self,
        _server_name: &ServerName<'_>,
    ) -> Option<rustls::client::Tls12ClientSessionValue> {
        None
    }

    fn remove_tls12_session(&self, _server_name: &ServerName<'static>) {}

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: rustls::client::Tls13ClientSessionValue,
    ) {
        let mut scope = self.current();
        if scope
            .tickets
            .iter()
            .filter(|(n, _, _)| *n == server_name)
            .count()
            >= SESSIONS_PER_SERVER
        {
            if let Some(oldest) = scope.tickets.iter().position(|(n, _, _)| *n == server_name) {
                scope.tickets.remove(oldest);
            }
        }
        scope
            .tickets
            .push_back((server_name, std::time::Instant::now(), value));
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        let mut scope = self.current();
        // The newest: tickets are single-use, and a resumed handshake brings fresh ones.
        let newest = scope
            .tickets
            .iter()
            .rposition(|(n, _, _)| n == server_name)?;
        scope.tickets.remove(newest).map(|(_, _, v)| v)
    }
}

fn check_domain(identity: &Identity, bundle: &TrustBundle) -> Result<(), TlsError> {
    if identity.id.trust_domain() != bundle.trust_domain {
        return Err(TlsError::Svid(format!(
            "{} is not of trust domain {}",
            identity.id, bundle.trust_domain
        )));
    }
    Ok(())
}

/// Presents the current SVID, as a server and as a client.
#[derive(Debug)]
struct CurrentIdentity(Arc<TlsState>);

impl ResolvesServerCert for CurrentIdentity {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.identity.load().key.clone())
    }
}

impl ResolvesClientCert for CurrentIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.identity.load().key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Verifies callers' SVIDs.
#[derive(Debug)]
struct SpiffeClientVerifier(Arc<TlsState>);

impl ClientCertVerifier for SpiffeClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0.bundle.load().verify(
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::client_auth(),
        )?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        algorithms().supported_schemes()
    }
}

/// Verifies upstream SVIDs (the server name is not checked; see the module docs).
#[derive(Debug)]
struct SpiffeServerVerifier(Arc<TlsState>);

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0.bundle.load().verify(
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        algorithms().supported_schemes()
    }
}

/// The SPIFFE ID of a verified peer: its leaf's only URI SAN.
///
/// # Errors
/// A certificate that does not parse, has no SAN, or not exactly one URI SAN, or one that is
/// not a popmesh SPIFFE ID.
pub fn spiffe_id_of(der: &[u8]) -> Result<SpiffeId, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("certificate does not parse: {e}"))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("certificate SAN extension: {e}"))?
        .ok_or("certificate has no subjectAltName (an SVID needs a SPIFFE ID URI SAN)")?;
    let mut uris = san.value.general_names.iter().filter_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(u) => Some(*u),
        _ => None,
    });
    let (Some(uri), None) = (uris.next(), uris.next()) else {
        return Err("an SVID has exactly one URI SAN (its SPIFFE ID)".into());
    };
    SpiffeId::parse(uri).map_err(|e| format!("URI SAN {uri:?}: {e}"))
}

fn not_after(der: &[u8]) -> Result<i64, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("certificate does not parse: {e}"))?;
    Ok(cert.validity().not_after.timestamp())
}

/// The verified peer identity of an accepted server-side connection, if it presented one.
pub fn peer_identity(conn: &rustls::CommonState) -> Option<SpiffeId> {
    let leaf = conn.peer_certificates()?.first()?;
    spiffe_id_of(leaf).ok()
}
