//! `serve --tls-cert --tls-key`: https and wss, with a certificate the test generates and trusts.

use std::sync::Arc;

use base64::Engine;
use serde_json::Value;
use tokio_tungstenite::Connector;

use crate::browser::{Browser, Page, WAIT_FOR};
use crate::support::*;

pub struct Certificate {
    _dir: tempfile::TempDir,
    /// The PEM certificate file (self-signed, for localhost and 127.0.0.1).
    pub cert: std::path::PathBuf,
    /// Its PEM private key file.
    pub key: std::path::PathBuf,
    pem: String,
    /// base64(SHA-256(SubjectPublicKeyInfo)), as Chromium's SPKI allow-list takes it.
    spki_hash: String,
}

pub fn certificate() -> Certificate {
    let dir = tempfile::tempdir().unwrap();
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let pem = certified.cert.pem();
    std::fs::write(&cert, &pem).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let spki = rcgen::PublicKeyData::subject_public_key_info(&certified.signing_key);
    let digest = ring::digest::digest(&ring::digest::SHA256, &spki);
    Certificate {
        _dir: dir,
        cert,
        key,
        pem,
        spki_hash: base64::engine::general_purpose::STANDARD.encode(digest.as_ref()),
    }
}

fn tls_server(certificate: &Certificate) -> Server {
    let projects = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("projects");
    Server::start_with(
        &projects,
        &[
            "--no-watch",
            "--tls-cert",
            certificate.cert.to_str().unwrap(),
            "--tls-key",
            certificate.key.to_str().unwrap(),
        ],
    )
}

#[tokio::test]
async fn wss_with_a_trusted_certificate() {
    let certificate = certificate();
    let server = tls_server(&certificate);
    assert!(
        server.stdout.text().contains("wss://"),
        "{}",
        server.stdout.text()
    );
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(certificate.pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let port = server.address.rsplit(':').next().unwrap();
    let url = format!("wss://localhost:{port}/websockets/v4/service/echo");
    let (mut client, _) = tokio_tungstenite::connect_async_tls_with_config(
        url,
        None,
        false,
        Some(Connector::Rustls(Arc::new(config))),
    )
    .await
    .expect("wss connect");
    assert_eq!(ask(&mut client, "over TLS").await, "over TLS");
    // Plain text on the TLS port is refused.
    let plain = tokio_tungstenite::connect_async(format!(
        "ws://{}/websockets/v4/service/echo",
        server.address
    ))
    .await;
    assert!(plain.is_err());
}

use rustls::pki_types::pem::PemObject;

#[tokio::test]
async fn chat_page_over_https_and_wss_in_headless_chromium() {
    let certificate = certificate();
    let server = tls_server(&certificate);
    let port = server.address.rsplit(':').next().unwrap().to_string();
    let browser = Browser::launch_with(&[&format!(
        "--ignore-certificate-errors-spki-list={}",
        certificate.spki_hash
    )]);
    let mut page = Page::open(&browser).await;
    page.goto(&format!("https://localhost:{port}/services/web/chat/"))
        .await;
    let log: Value = page
        .eval(&format!(
            r#"(async () => {{
              {WAIT_FOR}
              await waitFor("the socket to open", () => document.getElementById("status").textContent === "connected");
              document.getElementById("text").value = "hello over wss";
              document.getElementById("send").click();
              await waitFor("the message to come back", () => document.getElementById("log").textContent.includes("me: hello over wss"));
              return location.protocol + " " + document.getElementById("log").textContent;
            }})()"#
        ))
        .await;
    let log = log.as_str().unwrap();
    assert!(log.starts_with("https: "), "{log}");
    assert!(log.contains("me: hello over wss"), "{log}");
}
