//! Authentication: the token sent with every call, and authenticating
//! again when etcd refuses it.

use std::future::Future;
use std::pin::Pin;

use tonic::metadata::AsciiMetadataValue;

use super::{Client, Retry, paths};
use crate::error::{Error, Result};
use crate::wire::etcdserverpb as pb;
use crate::wire::etcdserverpb::auth_client::AuthClient;

impl Client {
    pub(super) fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        if let Some(token) = crate::rt::read(&self.inner.token).clone() {
            req.metadata_mut().insert("token", token);
        }
        req
    }

    /// After etcd refused the token: authenticate again, once per call.
    pub(super) async fn reauth_once(&self, reauthed: &mut bool, endpoint: &str) -> Result<()> {
        if *reauthed || self.inner.user.is_none() {
            return Err(Error::AuthFailed {
                endpoint: endpoint.to_owned(),
                message: "etcd refused the auth token (and re-authenticating did not help)".into(),
            });
        }
        *reauthed = true;
        self.reauthenticate().await
    }

    /// Boxed, because authenticating is itself a unary call.
    fn reauthenticate(&self) -> Pin<Box<dyn Future<Output = Result<()>> + Send + '_>> {
        Box::pin(self.authenticate())
    }

    pub(super) async fn authenticate(&self) -> Result<()> {
        let Some((name, password)) = self.inner.user.clone() else {
            return Ok(());
        };
        let _single = self.inner.auth_lock.lock().await;
        // Another task may have refreshed the token meanwhile; a fresh
        // token is harmless, so authenticate anyway (it is rare).
        // The request goes without the old token (etcd would refuse an
        // expired one), but the client's token stays in place until the new
        // one comes: other calls sent meanwhile carry it, not none, which
        // etcd refuses as "user name is empty" with no way to retry.
        let resp = self
            .unary(
                paths::AUTHENTICATE,
                Retry::Safe,
                pb::AuthenticateRequest { name, password },
                |ch, mut r| async move {
                    r.metadata_mut().remove("token");
                    AuthClient::new(ch).authenticate(r).await
                },
            )
            .await?;
        let token =
            AsciiMetadataValue::try_from(resp.token.as_str()).map_err(|_| Error::Protocol {
                path: paths::AUTHENTICATE,
                detail: "the token is not printable ASCII".into(),
            })?;
        *crate::rt::write(&self.inner.token) = Some(token);
        Ok(())
    }
}
