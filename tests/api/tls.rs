//! Security profiles 2 (Basic auth over TLS) and 3 (client certificates), with
//! certificates made in the test, and the limit on repeated authentication failures.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use reqwest::StatusCode;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde_json::json;
use tempfile::TempDir;

use crate::charge_point::{ChargePoint, Connect, Refused};
use crate::helpers::{Backend, TestApp};

struct Pki {
    dir: TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
    rogue_ca: CertifiedIssuer<'static, KeyPair>,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let trusted = ca("jucr test CA");
        let mut server =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        server
            .distinguished_name
            .push(DnType::CommonName, "jucr test server");
        let key = KeyPair::generate().unwrap();
        let cert = server.signed_by(&key, &trusted).unwrap();
        std::fs::write(dir.path().join("server.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), key.serialize_pem()).unwrap();
        std::fs::write(dir.path().join("ca.pem"), trusted.pem()).unwrap();
        Pki {
            dir,
            ca: trusted,
            rogue_ca: ca("rogue CA"),
        }
    }

    fn settings(&self) -> Vec<(String, String)> {
        let path = |f: &str| self.dir.path().join(f).display().to_string();
        vec![
            ("JUCR__TLS__PORT".into(), "0".into()),
            ("JUCR__TLS__CERT_FILE".into(), path("server.pem")),
            ("JUCR__TLS__KEY_FILE".into(), path("server.key")),
            ("JUCR__TLS__CLIENT_CA_FILE".into(), path("ca.pem")),
        ]
    }

    /// A client configuration trusting our CA, with a client certificate for `cn`
    /// signed by our CA (or by a CA the server does not know).
    fn client(&self, cn: Option<&str>, rogue: bool) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.ca.der().to_vec()))
            .unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let config = match cn {
            None => builder.with_no_client_auth(),
            Some(cn) => {
                let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
                params.distinguished_name.push(DnType::CommonName, cn);
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
                let key = KeyPair::generate().unwrap();
                let issuer = if rogue { &self.rogue_ca } else { &self.ca };
                let cert = params.signed_by(&key, issuer).unwrap();
                let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap();
                builder
                    .with_client_auth_cert(vec![CertificateDer::from(cert.der().to_vec())], key)
                    .unwrap()
            }
        };
        Arc::new(config)
    }
}

async fn tls_app(pki: &Pki) -> TestApp {
    let settings = pki.settings();
    let pairs: Vec<(&str, &str)> = settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    TestApp::spawn_with(Backend::Postgres, &pairs).await
}

async fn register(app: &TestApp, id: &str, body: serde_json::Value) {
    let (status, answer) = app
        .api("PUT", &format!("/api/v1/chargers/{id}"), Some(body))
        .await;
    assert!(status.is_success(), "{answer}");
}

#[tokio::test]
async fn profile_2_is_basic_auth_over_tls_and_never_plain() {
    let pki = Pki::new();
    let app = tls_app(&pki).await;
    register(
        &app,
        "CS-TLS",
        json!({"password": "tls-password-000001", "security_profile": 2}),
    )
    .await;

    let tls = Some(pki.client(None, false));
    let mut cp = ChargePoint::try_connect(Connect {
        url: app.wss_url("CS-TLS"),
        id: "CS-TLS",
        password: Some("tls-password-000001"),
        protocols: "ocpp2.0.1",
        tls: tls.clone(),
    })
    .await
    .expect("connects over wss://");
    cp.call("Heartbeat", json!({})).await;

    let wrong = ChargePoint::try_connect(Connect {
        url: app.wss_url("CS-TLS"),
        id: "CS-TLS",
        password: Some("not-the-password-01"),
        protocols: "ocpp2.0.1",
        tls,
    })
    .await;
    assert!(
        matches!(wrong, Err(Refused::Status(401))),
        "{:?}",
        wrong.err()
    );
    let plain = ChargePoint::try_connect(Connect {
        url: app.ws_url("CS-TLS"),
        id: "CS-TLS",
        password: Some("tls-password-000001"),
        protocols: "ocpp2.0.1",
        tls: None,
    })
    .await;
    assert!(
        matches!(plain, Err(Refused::Status(403))),
        "profile 2 over ws:// is refused: {:?}",
        plain.err()
    );
}

#[tokio::test]
async fn profile_3_takes_the_identity_from_the_client_certificate() {
    let pki = Pki::new();
    let app = tls_app(&pki).await;
    register(&app, "CS-MTLS", json!({"security_profile": 3})).await;
    let attempt = |tls: Option<Arc<rustls::ClientConfig>>| {
        let url = app.wss_url("CS-MTLS");
        async move {
            ChargePoint::try_connect(Connect {
                url,
                id: "CS-MTLS",
                password: None,
                protocols: "ocpp2.0.1",
                tls,
            })
            .await
        }
    };

    let mut cp = attempt(Some(pki.client(Some("CS-MTLS"), false)))
        .await
        .expect("the right certificate connects");
    cp.call("Heartbeat", json!({})).await;
    assert_eq!(app.charger("CS-MTLS").await["security_profile"], 3);

    let other = attempt(Some(pki.client(Some("CS-OTHER"), false))).await;
    assert!(
        matches!(other, Err(Refused::Status(401))),
        "a certificate for another id: {:?}",
        other.err()
    );
    let none = attempt(Some(pki.client(None, false))).await;
    assert!(
        matches!(none, Err(Refused::Status(401))),
        "no certificate: {:?}",
        none.err()
    );
    let rogue = attempt(Some(pki.client(Some("CS-MTLS"), true))).await;
    assert!(
        matches!(rogue, Err(Refused::Other(_))),
        "a certificate from an unknown CA fails the handshake: {:?}",
        rogue.err()
    );
    let plain = ChargePoint::try_connect(Connect {
        url: app.ws_url("CS-MTLS"),
        id: "CS-MTLS",
        password: None,
        protocols: "ocpp2.0.1",
        tls: None,
    })
    .await;
    assert!(matches!(plain, Err(Refused::Status(403))));
}

#[tokio::test]
async fn repeated_authentication_failures_from_one_address_are_limited() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[
            ("JUCR__OCPP__AUTH_FAILURE_LIMIT", "3"),
            ("JUCR__OCPP__AUTH_FAILURE_WINDOW_SECS", "600"),
        ],
    )
    .await;
    app.register_charger("CP-GUESS", "right-password-00001")
        .await;
    let attempt = |password: &'static str| {
        let url = app.ws_url("CP-GUESS");
        async move {
            ChargePoint::try_connect(Connect {
                url,
                id: "CP-GUESS",
                password: Some(password),
                protocols: "ocpp1.6",
                tls: None,
            })
            .await
        }
    };
    for _ in 0..3 {
        assert!(matches!(
            attempt("wrong-password-00001").await,
            Err(Refused::Status(401))
        ));
    }
    // Now even the right password waits for the window to end.
    assert!(matches!(
        attempt("right-password-00001").await,
        Err(Refused::Status(429))
    ));
    assert_eq!(app.metric("jucr_ocpp_auth_failures_total").await, 3.0);
    let (status, _) = app.request("GET", "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK, "the API is not affected");
}
