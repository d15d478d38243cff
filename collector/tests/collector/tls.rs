//! HTTPS: the collector serves TLS from a PEM certificate and key, and the recorder's uploader
//! trusts it through `collector.ca_file` (and only then).

use std::path::Path;
use std::process::Command;

use flightrec_uplink::spool::Outcome;

use crate::util::{Server, bulk, skip, upload};

/// A CA and a certificate for 127.0.0.1 signed by it, made with the openssl command.
fn make_certs(dir: &Path) -> bool {
    make_certs_for(dir, "IP:127.0.0.1,DNS:localhost")
}

/// In `dir`: `ca.pem`, and `cert.pem` and `key.pem` for the names `san` (an openssl
/// subjectAltName value) signed by it, made with the openssl command; `false` if it failed.
pub fn make_certs_for(dir: &Path, san: &str) -> bool {
    let run = |args: &[&str]| {
        Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    std::fs::write(
        dir.join("leaf.ext"),
        format!(
            "subjectAltName={san}\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
        ),
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=flightrec test CA",
        ],
    ]
    .concat())
        && run(&[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "key.pem",
                "-out",
                "leaf.csr",
                "-subj",
                "/CN=localhost",
            ],
        ]
        .concat())
        && run(&[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
        ])
}

#[tokio::test]
async fn uploads_over_https_with_the_configured_ca() {
    let certs = tempfile::tempdir().unwrap();
    if !make_certs(certs.path()) {
        skip(
            "uploads_over_https_with_the_configured_ca",
            "the openssl command is missing or failed",
        );
        return;
    }
    let srv = Server::start(|c| {
        c.server.tls_cert = certs.path().join("cert.pem");
        c.server.tls_key = certs.path().join("key.pem");
    })
    .await;
    assert!(srv.url.starts_with("https://127.0.0.1:"), "{}", srv.url);
    let (path, sid) = bulk(srv.dir.path(), 42, "web-1", 3_000);
    // Without the CA the certificate is not trusted.
    let err = upload(&srv.client_config(""), &path).await.unwrap_err();
    println!("without ca_file: {err}");
    let mut cfg = srv.client_config("");
    cfg.ca_file = certs.path().join("ca.pem");
    let out = upload(&cfg, &path).await.unwrap();
    assert!(matches!(out, Outcome::Uploaded { .. }));
    assert_eq!(
        srv.archived(&sid).await.unwrap(),
        std::fs::read(&path).unwrap()
    );
    // Plain HTTP to the TLS port gets no answer.
    let plain = srv.url.replace("https://", "http://");
    let r = crate::util::http()
        .get(format!("{plain}/healthz"))
        .send()
        .await;
    assert!(r.is_err() || r.unwrap().status() != 200);
}
