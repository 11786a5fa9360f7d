//! TLS to PostgreSQL, chosen the way `libpq` chooses it, from the `--database` URL's
//! `sslmode` and `sslrootcert`:
//!
//! | `sslmode` | encrypted | server certificate checked |
//! |---|---|---|
//! | `disable` | no | — |
//! | `prefer` (default) | if the server offers it | no |
//! | `require` | yes, or no connection | no |
//! | `verify-ca` | yes | signed by a trusted root |
//! | `verify-full` | yes | signed by a trusted root, and names the host connected to |
//!
//! The trusted roots are `sslrootcert` (a PEM file), or with `sslrootcert=system` the operating
//! system's; by default `~/.postgresql/root.crt` if it exists, else the system's. As with libpq,
//! `require` given a root file (named, or the default one existing) checks the chain like
//! `verify-ca`, and a Unix socket never negotiates TLS whatever the mode. `tokio-postgres` knows
//! only the first three modes and neither parameter, so the two verifying modes are read here,
//! taken out of the URL and handed to it as `require`.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The most of a root certificate file read (a CA bundle is a few hundred KB).
const ROOT_FILE_MAX: u64 = 4 << 20;

/// The TLS connector of a database URL. A Unix socket has no host name, which rustls cannot
/// take as a server name: it gets a placeholder (it never negotiates TLS, see [`parse`]).
#[derive(Clone)]
pub struct PgTls(MakeRustlsConnect);

impl<S> MakeTlsConnect<S> for PgTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = <MakeRustlsConnect as MakeTlsConnect<S>>::Stream;
    type TlsConnect = <MakeRustlsConnect as MakeTlsConnect<S>>::TlsConnect;
    type Error = <MakeRustlsConnect as MakeTlsConnect<S>>::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Self::TlsConnect, Self::Error> {
        let domain = if domain.is_empty() {
            "localhost"
        } else {
            domain
        };
        MakeTlsConnect::<S>::make_tls_connect(&mut self.0, domain)
    }
}

/// How the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    /// Encrypt, check nothing (`prefer`, `require`: what libpq does).
    Nothing,
    /// The chain up to a trusted root (`verify-ca`).
    Chain,
    /// The chain and the host name (`verify-full`).
    Full,
}

/// The connection settings and the TLS connector a `--database` URL describes.
pub fn parse(url: &str) -> Result<(tokio_postgres::Config, PgTls), String> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut verify = Verify::Nothing;
    let mut require = false;
    let mut root_cert: Option<String> = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded = percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .map_err(|_| format!("{key}: not UTF-8"))?
            .into_owned();
        match (key, decoded.as_str()) {
            ("sslmode", mode) => {
                (verify, require) = match mode {
                    "disable" | "prefer" => (Verify::Nothing, false),
                    "require" => (Verify::Nothing, true),
                    "verify-ca" => (Verify::Chain, true),
                    "verify-full" => (Verify::Full, true),
                    other => {
                        return Err(format!(
                        "sslmode={other}: use disable, prefer, require, verify-ca or verify-full"
                    ))
                    }
                };
                let given = if verify == Verify::Nothing {
                    mode
                } else {
                    "require"
                };
                kept.push(format!("sslmode={given}"));
            }
            ("sslrootcert", _) => root_cert = Some(decoded),
            ("sslcert" | "sslkey" | "sslpassword" | "sslcrl" | "sslcrldir", _) => {
                return Err(format!(
                    "{key}: client certificates (and CRLs) are not supported; authenticate with a \
                     password (postgres://user:password@host/db)"
                ))
            }
            _ => kept.push(pair.to_string()),
        }
    }
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let mut config: tokio_postgres::Config = rest.parse().map_err(|e| {
        let cause = std::error::Error::source(&e)
            .map(|c| format!(": {c}"))
            .unwrap_or_default();
        format!("the database URL is not valid: {e}{cause}")
    })?;
    if !config.get_hosts().is_empty()
        && config
            .get_hosts()
            .iter()
            .all(|h| !matches!(h, Host::Tcp(_)))
    {
        // libpq ignores sslmode on a Unix socket; the server refuses TLS there.
        config.ssl_mode(SslMode::Disable);
    }
    // libpq: `require` with a root file at hand checks the chain as `verify-ca` does.
    let default_root = default_root_file();
    if require
        && verify == Verify::Nothing
        && (root_cert.as_deref().is_some_and(|r| r != "system") || default_root.is_some())
    {
        verify = Verify::Chain;
    }
    let tls = connector(verify, root_cert.as_deref())?;
    Ok((config, PgTls(tls)))
}

/// `~/.postgresql/root.crt`, if it exists (libpq's default `sslrootcert`).
fn default_root_file() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".postgresql/root.crt"))
        .filter(|path| path.exists())
}

fn connector(verify: Verify, root_cert: Option<&str>) -> Result<MakeRustlsConnect, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let config = match verify {
        Verify::Nothing => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unchecked(provider)))
            .with_no_client_auth(),
        Verify::Full => builder
            .with_root_certificates(roots(root_cert)?)
            .with_no_client_auth(),
        Verify::Chain => {
            let inner =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots(root_cert)?), provider)
                    .build()
                    .map_err(|e| format!("sslrootcert: {e}"))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyName(inner)))
                .with_no_client_auth()
        }
    };
    Ok(MakeRustlsConnect::new(config))
}

/// The roots `sslrootcert` names (see the module's comment).
fn roots(root_cert: Option<&str>) -> Result<RootCertStore, String> {
    let file = match root_cert {
        Some("system") => None,
        Some(path) => Some(PathBuf::from(path)),
        None => default_root_file(),
    };
    let mut store = RootCertStore::empty();
    match file {
        Some(path) => {
            let bytes =
                read_capped(&path).map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!(
                    "sslrootcert {}: no certificate in it",
                    path.display()
                ));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                return Err(
                    "sslmode verify-ca/verify-full: the system has no trusted root \
                     certificates; name the server's CA with sslrootcert=/path/ca.pem"
                        .into(),
                );
            }
        }
    }
    Ok(store)
}

/// A root file, refused past [`ROOT_FILE_MAX`] (a device, a wrong path to a huge file).
fn read_capped(path: &std::path::Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(ROOT_FILE_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > ROOT_FILE_MAX {
        return Err(format!(
            "larger than {} MiB: not a certificate file",
            ROOT_FILE_MAX >> 20
        ));
    }
    Ok(bytes)
}

/// `prefer` and `require`: the session is encrypted and the handshake's signatures are checked,
/// but not who signed the certificate.
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain is checked as usual, a certificate for another name accepted.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifying_modes_and_the_root_file_are_taken_out_of_the_url() {
        let dir = tempfile::tempdir().unwrap();
        let (config, _) = parse("postgres://u@db.example/fleet?sslmode=verify-full&sslrootcert=system&connect_timeout=5")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
        assert_eq!(config.get_dbname(), Some("fleet"));
        assert_eq!(
            config.get_connect_timeout(),
            Some(&std::time::Duration::from_secs(5))
        );
        let (config, _) = parse("postgres://u@h/d?sslmode=disable").unwrap();
        assert_eq!(
            config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Disable
        );
        // A root file that is missing, or holds no certificate, is named.
        let missing = dir.path().join("nope.pem");
        let url = format!(
            "postgres://u@h/d?sslmode=verify-ca&sslrootcert={}",
            missing.display()
        );
        let err = parse(&url).err().unwrap();
        assert!(
            err.contains("sslrootcert") && err.contains("nope.pem"),
            "{err}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let url = format!(
            "postgres://u@h/d?sslmode=verify-full&sslrootcert={}",
            empty.display()
        );
        let err = parse(&url).err().unwrap();
        assert!(err.contains("no certificate"), "{err}");
        let err = parse("postgres://u@h/d?sslmode=verify_full").err().unwrap();
        assert!(err.contains("verify-full"), "{err}");
        let err = parse("postgres://u@h/d?sslcert=/c.pem&sslkey=/k.pem")
            .err()
            .unwrap();
        assert!(err.contains("client certificates"), "{err}");
        let err = parse("postgres://u@h/d?nonsense=1").err().unwrap();
        assert!(
            err.contains("nonsense"),
            "the unknown option is named: {err}"
        );
        // A device or a huge file is refused after a bounded read.
        let err = parse("postgres://u@h/d?sslmode=verify-full&sslrootcert=/dev/zero")
            .err()
            .unwrap();
        assert!(err.contains("larger than"), "{err}");
        // A Unix socket never negotiates TLS, whatever the mode (as libpq).
        let (config, _) =
            parse("postgres://u@%2Fvar%2Frun%2Fpostgresql/d?sslmode=require").unwrap();
        assert_eq!(
            config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Disable
        );
    }
}
