//! The HTTP JSON API: every unary RPC of the gRPC door as `POST /api/v1/<Rpc>`, for backends
//! and shells with curl but no gRPC client. A thin transcoder over the same door: the body is
//! read in the proto3 JSON mapping (prost-reflect, from the service's own descriptor set),
//! handed to the very handler a gRPC call reaches (same key check, validation, messages,
//! metrics), and the answer written back in the same mapping. Only the statuses are HTTP's.

use std::sync::{Arc, OnceLock};

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, SerializeOptions};
use serde_json::value::RawValue;
use serde_json::Map;
use tonic::{Code, Request, Status};

use super::{GrpcDoor, FILE_DESCRIPTOR_SET};
use crate::proto::realtime_service_server::RealtimeService;

/// The proto package of the service's messages.
const PACKAGE: &str = "boundary.realtime.v1";

/// The descriptors of the service's messages (decoded once).
fn pool() -> Result<&'static DescriptorPool, Status> {
    static POOL: OnceLock<Result<DescriptorPool, String>> = OnceLock::new();
    POOL.get_or_init(|| DescriptorPool::decode(FILE_DESCRIPTOR_SET).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| Status::internal(format!("the API's descriptors: {e}")))
}

/// An error answer: the gRPC code's name and message, with the HTTP status of the code.
pub fn error(status: &Status) -> Response {
    let http = match status.code() {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    reply(http, &error_body(status.code(), status.message()))
}

/// `{"code":"INVALID_ARGUMENT","message":"..."}`.
fn error_body(code: Code, message: &str) -> String {
    serde_json::json!({"code": code_name(code), "message": message}).to_string()
}

/// A gRPC code's canonical name.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

pub fn reply(status: StatusCode, body: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_owned(),
    )
        .into_response()
}

/// Answers one call of `rpc` with `body`: the guards of the contract, then the door.
pub async fn call(
    door: &Arc<GrpcDoor>,
    rpc: &str,
    headers: &HeaderMap,
    remote: std::net::SocketAddr,
    body: axum::body::Body,
) -> Response {
    if headers.contains_key(header::ORIGIN) {
        return error(&Status::permission_denied(
            "the HTTP API is for backends: a request with an Origin header (a web page) is refused",
        ));
    }
    if door.hub.is_shutting_down() {
        return error(&Status::unavailable("the service is shutting down"));
    }
    let mut md = tonic::metadata::MetadataMap::new();
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        if let Ok(v) = tonic::metadata::MetadataValue::try_from(v.as_bytes()) {
            md.insert("authorization", v);
        }
    }
    // The key before the body: nobody without one gets a byte of the body read.
    if let Err(s) = door.authorize(&md) {
        door.hub.refused(crate::node::refusals::Refusal {
            what: "API call refused",
            code: 401,
            reason: s.message(),
            remote_addr: &remote.to_string(),
            user_id: None,
        });
        return error(&s);
    }
    serve(door, rpc, md, remote, body).await
}

/// Answers one call of `rpc` whose caller has passed its door's guards: `md` carries the key
/// the door's handler checks (the HTTP API's `Authorization` header, or the key an admin
/// console session signed in with). Reads the body up to the RPC's limit, then runs it.
pub async fn serve(
    door: &GrpcDoor,
    rpc: &str,
    md: tonic::metadata::MetadataMap,
    remote: std::net::SocketAddr,
    body: axum::body::Body,
) -> Response {
    // A message at the payload limit plus room for its fields; a batch, its own limit.
    let l = &door.hub.config.limits;
    let (limit, key) = if rpc == "PublishBatch" {
        (l.max_batch_bytes, "limits.max_batch_bytes")
    } else {
        (
            l.max_payload_bytes + 64 * 1024,
            "limits.max_payload_bytes + 64 KiB",
        )
    };
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => {
            return reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                &error_body(
                    Code::ResourceExhausted,
                    &format!("the body is over {key} ({limit} bytes)"),
                ),
            )
        }
    };
    let call = Call { md, remote };
    match dispatch(door, rpc, &call, &body).await {
        Ok(json) => reply(StatusCode::OK, &json),
        Err(Answer::NoSuchMethod) => reply(
            StatusCode::NOT_FOUND,
            &error_body(
                Code::Unimplemented,
                &format!("{rpc:?} is not a unary RPC of {PACKAGE}.RealtimeService"),
            ),
        ),
        Err(Answer::Status(s)) => error(&s),
    }
}

/// Runs `rpc` with a JSON `body` for a caller inside the service (a consumer, section 9): the
/// same decoding, handler, validation and errors as `POST /api/v1/<rpc>`, under the first
/// configured key. Answers the response message as JSON, or the status the API would answer
/// (UNIMPLEMENTED for a name that is not a unary RPC).
pub async fn run(door: &GrpcDoor, rpc: &str, body: &[u8]) -> Result<String, Status> {
    let mut md = tonic::metadata::MetadataMap::new();
    if let Some(key) = door.hub.config.grpc.api_keys.first() {
        use secrecy::ExposeSecret;
        if let Ok(v) = format!("Bearer {}", key.expose_secret()).parse() {
            md.insert("authorization", v);
        }
    }
    let call = Call {
        md,
        remote: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    match dispatch(door, rpc, &call, body).await {
        Ok(json) => Ok(json),
        Err(Answer::NoSuchMethod) => Err(Status::unimplemented(format!(
            "{rpc:?} is not a unary RPC of {PACKAGE}.RealtimeService"
        ))),
        Err(Answer::Status(s)) => Err(s),
    }
}

enum Answer {
    NoSuchMethod,
    Status(Status),
}

impl From<Status> for Answer {
    fn from(s: Status) -> Self {
        Answer::Status(s)
    }
}

/// What every call carries besides its body.
struct Call {
    md: tonic::metadata::MetadataMap,
    remote: std::net::SocketAddr,
}

impl Call {
    /// The request as the gRPC door receives one: the key in its metadata, the peer address
    /// where tonic keeps it.
    fn request<T>(&self, message: T) -> Request<T> {
        let mut r = Request::new(message);
        *r.metadata_mut() = self.md.clone();
        r.extensions_mut()
            .insert(tonic::transport::server::TcpConnectInfo {
                local_addr: None,
                remote_addr: Some(self.remote),
            });
        r
    }
}

/// Runs the named RPC of the door with the body decoded into its request message.
async fn dispatch(door: &GrpcDoor, rpc: &str, call: &Call, body: &[u8]) -> Result<String, Answer> {
    macro_rules! unary {
        ($($name:literal => $method:ident($req:ident) -> $resp:ident),* $(,)?) => {
            match rpc {
                $($name => {
                    let req: crate::proto::$req = decode(stringify!($req), body)?;
                    let resp = door.$method(call.request(req)).await?.into_inner();
                    Ok(encode(stringify!($resp), &resp)?)
                })*
                _ => Err(Answer::NoSuchMethod),
            }
        };
    }
    unary! {
        "SendToUser" => send_to_user(SendToUserRequest) -> SendResponse,
        "SendToRole" => send_to_role(SendToRoleRequest) -> SendResponse,
        "SendToConnection" => send_to_connection(SendToConnectionRequest) -> SendResponse,
        "Broadcast" => broadcast(BroadcastRequest) -> SendResponse,
        "Publish" => publish(PublishRequest) -> PublishResponse,
        "PublishBatch" => publish_batch(PublishBatchRequest) -> PublishBatchResponse,
        "ListConnections" => list_connections(ListConnectionsRequest) -> ListConnectionsResponse,
        "GetConnection" => get_connection(GetConnectionRequest) -> Connection,
        "GetStats" => get_stats(GetStatsRequest) -> Stats,
        "GetUsers" => get_users(GetUsersRequest) -> GetUsersResponse,
        "Presence" => presence(PresenceRequest) -> PresenceResponse,
        "History" => history(HistoryRequest) -> HistoryResponse,
        "Disconnect" => disconnect(DisconnectRequest) -> DisconnectResponse,
        "Subscribe" => subscribe(SubscribeRequest) -> SubscribeResponse,
        "Unsubscribe" => unsubscribe(UnsubscribeRequest) -> UnsubscribeResponse,
    }
}

/// Reads a request message from its proto3 JSON form (unknown fields refused), with the
/// `payload` convenience of every `Message` in it.
fn decode<T: prost::Message + Default>(name: &str, body: &[u8]) -> Result<T, Status> {
    let bad = |what: String| Status::invalid_argument(format!("body: {what}"));
    let mut top: Map<String, serde_json::Value> =
        serde_json::from_slice(body).map_err(|e| bad(format!("not a JSON object: {e}")))?;
    payload_convenience(&mut top, body).map_err(bad)?;
    let desc = pool()?
        .get_message_by_name(&format!("{PACKAGE}.{name}"))
        .ok_or_else(|| Status::internal(format!("no descriptor for {name}")))?;
    let text = serde_json::Value::Object(top).to_string();
    let mut de = serde_json::Deserializer::from_str(&text);
    let msg = DynamicMessage::deserialize_with_options(
        desc,
        &mut de,
        &DeserializeOptions::new().deny_unknown_fields(true),
    )
    .map_err(|e| bad(format!("not a {name}: {e}")))?;
    msg.transcode_to::<T>()
        .map_err(|e| bad(format!("not a {name}: {e}")))
}

/// Writes a response message in its proto3 JSON form: every field present, lowerCamelCase
/// names, 64-bit integers as strings.
pub fn encode<T: prost::Message>(name: &str, resp: &T) -> Result<String, Status> {
    let desc = pool()?
        .get_message_by_name(&format!("{PACKAGE}.{name}"))
        .ok_or_else(|| Status::internal(format!("no descriptor for {name}")))?;
    let msg = DynamicMessage::decode(desc, resp.encode_to_vec().as_slice())
        .map_err(|e| Status::internal(e.to_string()))?;
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::new(&mut out);
    msg.serialize_with_options(
        &mut ser,
        &SerializeOptions::new()
            .skip_default_fields(false)
            .stringify_64_bit_integers(true),
    )
    .map_err(|e| Status::internal(e.to_string()))?;
    String::from_utf8(out).map_err(|e| Status::internal(e.to_string()))
}

/// A `Message` may give `payload` as any JSON value instead of `payloadJson` as a string: its
/// text goes on exactly as written (read again from `body`, not re-serialized). The messages
/// are the request's `message` and, in a batch, each item's `message`.
fn payload_convenience(
    top: &mut Map<String, serde_json::Value>,
    body: &[u8],
) -> Result<(), String> {
    #[derive(serde::Deserialize)]
    struct Raw<'a> {
        #[serde(borrow, default)]
        message: Option<RawMessage<'a>>,
        #[serde(borrow, default)]
        items: Option<Vec<RawItem<'a>>>,
    }
    #[derive(serde::Deserialize)]
    struct RawItem<'a> {
        #[serde(borrow, default)]
        message: Option<RawMessage<'a>>,
    }
    #[derive(serde::Deserialize)]
    struct RawMessage<'a> {
        #[serde(borrow, default)]
        payload: Option<&'a RawValue>,
    }
    let raw: Raw<'_> = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let fix = |m: &mut serde_json::Value, payload: Option<&RawValue>, at: &str| {
        let Some(p) = payload else { return Ok(()) };
        let obj = m.as_object_mut().ok_or(format!("{at} is not an object"))?;
        if obj.contains_key("payloadJson") || obj.contains_key("payload_json") {
            return Err(format!("{at}: give payload or payloadJson, not both"));
        }
        obj.remove("payload");
        obj.insert("payloadJson".into(), p.get().into());
        Ok(())
    };
    if let (Some(m), Some(raw)) = (top.get_mut("message"), raw.message) {
        fix(m, raw.payload, "message")?;
    }
    if let (Some(serde_json::Value::Array(items)), Some(raw)) = (top.get_mut("items"), raw.items) {
        for (i, (item, raw)) in items.iter_mut().zip(raw).enumerate() {
            if let (Some(m), Some(rm)) = (item.get_mut("message"), raw.message) {
                fix(m, rm.payload, &format!("items[{i}].message"))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{PublishBatchRequest, SendToUserRequest};

    #[test]
    fn a_request_reads_in_either_name_form_with_the_payload_as_written() {
        let body = br#"{"user_id":"alice","message":{"type":"t","payload":{"b":1, "a":[1.0,2]}}}"#;
        let r: SendToUserRequest = decode("SendToUserRequest", body).unwrap();
        assert_eq!(r.user_id, "alice");
        let m = r.message.unwrap();
        assert_eq!(
            (m.r#type.as_str(), m.payload_json.as_str()),
            ("t", r#"{"b":1, "a":[1.0,2]}"#)
        );
        let body = br#"{"userId":"bob","message":{"type":"t","payloadJson":"[1]","id":"x"}}"#;
        let r: SendToUserRequest = decode("SendToUserRequest", body).unwrap();
        assert_eq!(
            (r.user_id.as_str(), r.message.unwrap().payload_json.as_str()),
            ("bob", "[1]")
        );
        let body =
            br#"{"items":[{"topic":"a","message":{"type":"t","payload":"s"}},{"topic":"b"}]}"#;
        let r: PublishBatchRequest = decode("PublishBatchRequest", body).unwrap();
        assert_eq!(r.items[0].message.as_ref().unwrap().payload_json, r#""s""#);
        assert_eq!(r.items[1].topic, "b");
    }

    #[test]
    fn what_is_not_the_request_message_is_refused_naming_why() {
        let refused = |body: &[u8]| {
            let e = decode::<SendToUserRequest>("SendToUserRequest", body).unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
            e.message().to_owned()
        };
        assert!(refused(b"not json").starts_with("body: not a JSON object"));
        assert!(refused(b"[1]").starts_with("body: not a JSON object"));
        assert!(refused(br#"{"user":"x"}"#).contains("not a SendToUserRequest"));
        assert!(refused(br#"{"userId":1}"#).contains("not a SendToUserRequest"));
        assert!(
            refused(br#"{"message":{"type":"t","payload":1,"payloadJson":"1"}}"#)
                .contains("not both")
        );
    }

    #[tokio::test]
    async fn during_the_shutdown_drain_a_call_answers_503() {
        let hub = crate::hub::tests::hub().await;
        hub.begin_shutdown();
        let door = Arc::new(GrpcDoor::new(hub));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            "Bearer unit-test-key-0123456789".parse().unwrap(),
        );
        let remote = "127.0.0.1:9".parse().unwrap();
        let r = call(
            &door,
            "GetStats",
            &headers,
            remote,
            axum::body::Body::from("{}"),
        )
        .await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn an_answer_has_every_field_and_64_bit_integers_as_strings() {
        let r = crate::proto::PublishResponse {
            message_id: "m".into(),
            offset: 7,
            epoch: String::new(),
            connections: 0,
        };
        let v: serde_json::Value =
            serde_json::from_str(&encode("PublishResponse", &r).unwrap()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"messageId":"m","offset":"7","epoch":"","connections":0})
        );
        assert_eq!(code_name(Code::ResourceExhausted), "RESOURCE_EXHAUSTED");
    }
}
