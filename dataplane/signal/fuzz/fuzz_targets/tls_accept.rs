//! The signaling lane's TLS server (`tls_stream::accept`) fed arbitrary bytes from a caller,
//! split into reads of arbitrary sizes: a handshake error or end of stream, never a panic or
//! a hang.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use popmesh_signal::tls_stream;
use popmesh_signal::{Identity, TlsState, TrustBundle};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A lane TLS state with an SVID from a throwaway CA of trust domain `pop.test`.
fn state() -> &'static Arc<TlsState> {
    static STATE: OnceLock<Arc<TlsState>> = OnceLock::new();
    STATE.get_or_init(|| {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        ca.subject_alt_names = vec![SanType::URI("spiffe://pop.test".try_into().unwrap())];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::default();
        leaf.subject_alt_names = vec![SanType::URI(
            "spiffe://pop.test/ns/default/sa/lane".try_into().unwrap(),
        )];
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        let identity =
            Identity::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap();
        let bundle = TrustBundle::from_pem("pop.test", ca_cert.pem().as_bytes()).unwrap();
        TlsState::new(identity, bundle).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let config = state().server_config(&[b"h2", b"http/1.1"]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let (server_io, mut caller) = tokio::io::duplex(1 << 20);
        let server = tokio::spawn(async move {
            if let Ok(mut s) = tls_stream::accept(config, server_io).await {
                let mut buf = [0u8; 4096];
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            }
        });
        // The first byte sets the write size, so records arrive split anywhere.
        let step = usize::from(data.first().copied().unwrap_or(1)).max(1);
        for chunk in data.chunks(step) {
            if caller.write_all(chunk).await.is_err() {
                break;
            }
            tokio::task::yield_now().await;
        }
        drop(caller);
        server.await.unwrap();
    });
});
