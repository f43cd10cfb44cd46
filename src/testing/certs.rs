//! Throwaway certificates for TLS tests, made with `openssl`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::HarnessError;

/// Runs `openssl` with `args` in `dir`.
fn openssl(dir: &Path, args: &[&str]) -> Result<(), HarnessError> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            HarnessError::new(format!("cannot run openssl (apt-get install openssl): {e}"))
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(HarnessError::new(format!(
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

/// Certificates for TLS tests, made with the `openssl` command in a private
/// temporary directory (removed on drop): a CA, a server certificate for
/// `127.0.0.1` and `localhost` signed by it, a client certificate signed by
/// it, and a second, unrelated CA (for "wrong CA" tests).
#[derive(Debug)]
pub struct TestCerts {
    dir: tempfile::TempDir,
}

impl TestCerts {
    /// Generates the certificates (EC P-256 keys, valid for one day).
    ///
    /// # Errors
    /// When `openssl` is missing (Debian: `apt-get install openssl`) or fails.
    pub fn generate() -> Result<TestCerts, HarnessError> {
        let dir = tempfile::Builder::new()
            .prefix("locker-certs-")
            .tempdir()
            .map_err(|e| {
                HarnessError::new(format!("cannot create a temp dir for certificates: {e}"))
            })?;
        let d = dir.path();
        let openssl = |args: &[&str]| openssl(d, args);
        let key = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        for ca in ["ca", "other-ca"] {
            let subj = format!("/CN=locker test {ca}");
            let (k, c) = (format!("{ca}.key"), format!("{ca}.crt"));
            let mut args = vec![
                "req", "-x509", "-days", "1", "-subj", &subj, "-keyout", &k, "-out", &c,
            ];
            args.extend(key);
            openssl(&args)?;
        }
        fs::write(
            d.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .map_err(|e| HarnessError::new(format!("cannot write server.ext: {e}")))?;
        fs::write(d.join("client.ext"), "extendedKeyUsage=clientAuth\n")
            .map_err(|e| HarnessError::new(format!("cannot write client.ext: {e}")))?;
        for (name, cn) in [("server", "127.0.0.1"), ("client", "locker-test-client")] {
            let subj = format!("/CN={cn}");
            let (k, csr, crt, ext) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.crt"),
                format!("{name}.ext"),
            );
            let mut args = vec!["req", "-subj", &subj, "-keyout", &k, "-out", &csr];
            args.extend(key);
            openssl(&args)?;
            openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                &ext,
                "-out",
                &crt,
            ])?;
        }
        Ok(TestCerts { dir })
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The CA certificate (PEM) that signed the server and client certificates.
    #[must_use]
    pub fn ca(&self) -> PathBuf {
        self.file("ca.crt")
    }

    /// A CA certificate that signed nothing here.
    #[must_use]
    pub fn other_ca(&self) -> PathBuf {
        self.file("other-ca.crt")
    }

    /// The server certificate, for `127.0.0.1` and `localhost`.
    #[must_use]
    pub fn server_cert(&self) -> PathBuf {
        self.file("server.crt")
    }

    /// The server's private key.
    #[must_use]
    pub fn server_key(&self) -> PathBuf {
        self.file("server.key")
    }

    /// The client certificate, for mutual TLS.
    #[must_use]
    pub fn client_cert(&self) -> PathBuf {
        self.file("client.crt")
    }

    /// The client's private key.
    #[must_use]
    pub fn client_key(&self) -> PathBuf {
        self.file("client.key")
    }
}
