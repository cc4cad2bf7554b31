//! `refresh`: a new token for the same user extends the connection; any other outcome closes
//! it with the code the SDKs read (3005 expired, 3500 invalid).

use std::sync::Arc;

use super::{Answer, Closing};
use crate::centrifuge::session::{ttl_of, VERSION};
use crate::centrifuge::wire::{RefreshRequest, RefreshResult, Reply};
use crate::clock::now_ms;
use crate::core::claims::AuthError;
use crate::core::close::centrifuge_codes as cc;
use crate::hub::Hub;
use crate::node::WsConn;

pub async fn run(
    hub: &Hub,
    conn: &Arc<WsConn>,
    r: &RefreshRequest,
    a: &mut Answer<'_>,
) -> Result<(), Closing> {
    if r.token.is_empty() {
        return Err((cc::BAD_REQUEST, "bad request"));
    }
    match hub.auth.verify(&r.token).await {
        Ok(identity) if identity.user_id == conn.info.user_id => {
            let Some((expires, ttl)) = ttl_of(identity.expires_at_ms, now_ms()) else {
                return Err((cc::EXPIRED, "connection expired"));
            };
            conn.set_expires_at_ms(identity.expires_at_ms);
            a.reply(Reply {
                refresh: Some(RefreshResult {
                    client: conn.info.id.clone(),
                    version: VERSION.to_owned(),
                    expires,
                    ttl,
                }),
                ..Default::default()
            });
            Ok(())
        }
        Ok(_) => Err((cc::INVALID_TOKEN, "invalid token")),
        Err(AuthError::Expired) => Err((cc::EXPIRED, "connection expired")),
        Err(_) => Err((cc::INVALID_TOKEN, "invalid token")),
    }
}
