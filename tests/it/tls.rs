//! TLS on both listeners with a self-signed certificate made at test time (rcgen): a wss://
//! client and a TLS gRPC client work end to end, and plaintext is refused on TLS ports.

use std::sync::Arc;

use boundary_realtime::proto::realtime_service_client::RealtimeServiceClient;
use boundary_realtime::proto::*;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::common::*;

struct Certs {
    dir: std::path::PathBuf,
    cert_pem: String,
}

fn make_certs(name: &str) -> Certs {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let dir = std::env::temp_dir().join(format!("rt-tls-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert_pem = ck.cert.pem();
    std::fs::write(dir.join("cert.pem"), &cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
    Certs { dir, cert_pem }
}

fn tls_config(certs: &Certs) -> boundary_realtime::config::Config {
    let mut c = config();
    let cert = certs.dir.join("cert.pem").to_string_lossy().into_owned();
    let key = certs.dir.join("key.pem").to_string_lossy().into_owned();
    c.http.tls_cert_file = cert.clone();
    c.http.tls_key_file = key.clone();
    c.grpc.tls_cert_file = cert;
    c.grpc.tls_key_file = key;
    c
}

fn client_config(cert_pem: &str) -> Arc<rustls::ClientConfig> {
    boundary_realtime::tls::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    let der = rustls::pki_types::pem::PemObject::from_pem_slice(cert_pem.as_bytes()).unwrap();
    roots.add(CertificateDer::clone(&der)).unwrap();
    Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

type Wss =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// A wss:// connection for `user`, trusting what `connector` trusts.
async fn wss(
    s: &TestServer,
    connector: &tokio_rustls::TlsConnector,
    user: &str,
) -> Result<Wss, String> {
    let tcp = tokio::net::TcpStream::connect(s.http)
        .await
        .map_err(|e| e.to_string())?;
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let url = format!(
        "wss://localhost:{}/ws?token={}",
        s.http.port(),
        token(user, &[])
    );
    let (ws, _) = tokio_tungstenite::client_async(url.into_client_request().unwrap(), tls)
        .await
        .map_err(|e| e.to_string())?;
    Ok(ws)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_and_grpc_over_tls_work_end_to_end() {
    let certs = make_certs("e2e");
    let s = start_with(tls_config(&certs)).await;

    // Two wss:// clients trusting the test certificate.
    let connector = tokio_rustls::TlsConnector::from(client_config(&certs.cert_pem));
    let mut clients = Vec::new();
    for _ in 0..2 {
        clients.push(wss(&s, &connector, "secure").await.expect("wss upgrade"));
    }
    use futures_util::StreamExt;
    for ws in clients.iter_mut() {
        let first = ws.next().await.unwrap().unwrap();
        let connected: serde_json::Value = serde_json::from_str(first.to_text().unwrap()).unwrap();
        assert_eq!(
            (connected["op"].as_str(), connected["user_id"].as_str()),
            (Some("connected"), Some("secure"))
        );
    }

    // gRPC over TLS, trusting the same certificate
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&certs.cert_pem))
        .domain_name("localhost");
    let channel =
        tonic::transport::Channel::from_shared(format!("https://127.0.0.1:{}", s.grpc.port()))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .expect("TLS gRPC connects");
    let mut client = RealtimeServiceClient::new(channel);
    let r = client
        .send_to_user(authed(SendToUserRequest {
            user_id: "secure".into(),
            message: msg("over.tls", "1"),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.connections, 2, "both wss connections");
    for ws in clients.iter_mut() {
        let m = ws.next().await.unwrap().unwrap();
        let m: serde_json::Value = serde_json::from_str(m.to_text().unwrap()).unwrap();
        assert_eq!(m["type"], "over.tls");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_and_untrusted_clients_are_refused_on_tls_ports() {
    let certs = make_certs("refuse");
    let s = start_with(tls_config(&certs)).await;
    // plain ws:// to the TLS port
    let plain =
        tokio_tungstenite::connect_async(format!("ws://{}/ws?token={}", s.http, token("u", &[])))
            .await;
    assert!(plain.is_err(), "plaintext WebSocket on a TLS port");
    // plaintext gRPC to the TLS port
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", s.grpc))
        .unwrap()
        .connect()
        .await;
    if let Ok(ch) = channel {
        let r = RealtimeServiceClient::new(ch)
            .get_stats(authed(GetStatsRequest {}))
            .await;
        assert!(r.is_err(), "plaintext gRPC on a TLS port");
    }
    // a TLS client that does not trust the certificate
    let other = make_certs("other");
    let tcp = tokio::net::TcpStream::connect(s.http).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(client_config(&other.cert_pem));
    assert!(connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .is_err());
    // a client that connects and never says hello does not block others
    let _silent = tokio::net::TcpStream::connect(s.http).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(client_config(&certs.cert_pem));
    assert!(wss(&s, &connector, "u").await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_files_stop_start_up_naming_the_key() {
    let certs = make_certs("bad");
    let mut c = tls_config(&certs);
    c.grpc.tls_key_file = String::new();
    let e = boundary_realtime::server::Server::start(c)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("grpc.tls_key_file"), "{e}");
    let mut c = tls_config(&certs);
    c.http.tls_cert_file = certs.dir.join("missing.pem").to_string_lossy().into_owned();
    let e = boundary_realtime::server::Server::start(c)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("http.tls_cert_file"), "{e}");
    let mut c = tls_config(&certs);
    std::fs::write(certs.dir.join("junk.pem"), "not a key").unwrap();
    c.http.tls_key_file = certs.dir.join("junk.pem").to_string_lossy().into_owned();
    let e = boundary_realtime::server::Server::start(c)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("http.tls_key_file"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_tls_the_admin_console_cookie_is_secure() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let certs = make_certs("admin");
    let mut c = tls_config(&certs);
    c.admin.enabled = true;
    let s = start_with(c).await;
    let connector = tokio_rustls::TlsConnector::from(client_config(&certs.cert_pem));
    let tcp = tokio::net::TcpStream::connect(s.http).await.unwrap();
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let body = format!(r#"{{"key":"{API_KEY}"}}"#);
    let port = s.http.port();
    let req = format!(
        "POST /admin/api/sign-in HTTP/1.1\r\nHost: localhost:{port}\r\nOrigin: https://localhost:{port}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, tls.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let cookie = text
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .expect("a session cookie");
    assert!(
        cookie.ends_with("HttpOnly; SameSite=Strict; Secure"),
        "{cookie}"
    );
}
