//! [`ReplicationServer`]: the tonic service of the replication service, with a `Sync`
//! path that sends journal entries encoded once for every client.
//!
//! The generated `LaredoReplicationServiceServer` encodes each `SyncResponse` with
//! prost for each stream: with N clients every change is converted and encoded N
//! times. Here `Sync` uses [`SyncCodec`], which writes the entries' shared encodings
//! (`encode::journal_entry_field`) after a per-message header, so a change is encoded
//! once and copied into each stream's frame. The bytes on the wire are the same
//! `SyncResponse` messages. Every other method goes to the generated server.

use std::convert::Infallible;
use std::task::{Context, Poll};

use bytes::BufMut;
use laredo_proto::laredo::replication::v1 as wire;
use laredo_proto::laredo::replication::v1::laredo_replication_service_server::LaredoReplicationServiceServer;
use prost::Message as _;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{Body, BoxFuture, Service, StdError, http};
use tonic::server::NamedService;
use tonic::{Request, Response, Status};

use crate::encode;
use crate::service::ReplicationService;
use crate::stream::{Outgoing, RawSyncStream};

const SYNC_PATH: &str = "/laredo.replication.v1.LaredoReplicationService/Sync";

type Generated = LaredoReplicationServiceServer<ReplicationService>;

/// The tonic service of a [`ReplicationService`]
/// (`laredo.replication.v1.LaredoReplicationService`), from
/// [`ReplicationService::into_server`]; add it to a tonic server (or laredo-service's
/// `GrpcServer`). `Sync` streams share one encoding of each journal entry among all
/// clients; the other methods are the generated server's.
#[derive(Clone)]
pub struct ReplicationServer {
    service: ReplicationService,
    generated: Generated,
    max_decoding_message_size: Option<usize>,
}

impl std::fmt::Debug for ReplicationServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationServer").finish_non_exhaustive()
    }
}

impl ReplicationServer {
    pub(crate) fn new(service: ReplicationService) -> Self {
        Self {
            generated: LaredoReplicationServiceServer::new(service.clone()),
            service,
            max_decoding_message_size: None,
        }
    }

    /// The largest request message accepted (tonic's default: 4 MiB); a larger one is
    /// answered `RESOURCE_EXHAUSTED`.
    #[must_use]
    pub fn max_decoding_message_size(mut self, limit: usize) -> Self {
        self.generated = self.generated.max_decoding_message_size(limit);
        self.max_decoding_message_size = Some(limit);
        self
    }
}

impl NamedService for ReplicationServer {
    const NAME: &'static str = <Generated as NamedService>::NAME;
}

impl<B> Service<http::Request<B>> for ReplicationServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != SYNC_PATH {
            return self.generated.call(request);
        }
        let method = SyncMethod(self.service.clone());
        let limit = self.max_decoding_message_size;
        Box::pin(async move {
            let mut grpc =
                tonic::server::Grpc::new(SyncCodec).apply_max_message_size_config(limit, None);
            Ok(grpc.server_streaming(method, request).await)
        })
    }
}

/// `Sync` over [`RawSyncStream`].
struct SyncMethod(ReplicationService);

impl tonic::server::ServerStreamingService<wire::SyncRequest> for SyncMethod {
    type Response = Outgoing;
    type ResponseStream = RawSyncStream;
    type Future = BoxFuture<Response<RawSyncStream>, Status>;

    fn call(&mut self, request: Request<wire::SyncRequest>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move {
            service
                .open_sync(request.into_inner())
                .await
                .map(Response::new)
        })
    }
}

/// Decodes `SyncRequest`s with prost; encodes [`Outgoing`] messages, shared entries as
/// they are.
struct SyncCodec;

impl Codec for SyncCodec {
    type Encode = Outgoing;
    type Decode = wire::SyncRequest;
    type Encoder = SyncEncoder;
    type Decoder = SyncDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        SyncEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        SyncDecoder
    }
}

struct SyncEncoder;

/// The initial capacity of a stream's encode buffer. tonic's default (8 KiB) is held
/// by every idle stream for its whole life, and the buffer never grows below it; the
/// messages that matter are entry batches, which reserve what they need anyway.
const ENCODE_BUFFER_BYTES: usize = 512;

/// How much is encoded before the buffer is handed to HTTP/2 (tonic's default is 32
/// KiB). Every large message (a snapshot batch) leaves in a buffer of its own, so the
/// buffer an idle stream keeps is the small one of its last messages.
const ENCODE_YIELD_THRESHOLD: usize = 4 * 1024;

impl Encoder for SyncEncoder {
    type Item = Outgoing;
    type Error = Status;

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(ENCODE_BUFFER_BYTES, ENCODE_YIELD_THRESHOLD)
    }

    fn encode(&mut self, item: Outgoing, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        match item {
            Outgoing::Message(message) => {
                // Reserved exactly: growing by doubling would copy and overshoot.
                buf.reserve(message.encoded_len());
                message
                    .encode(buf)
                    .map_err(|error| Status::internal(format!("encoding a sync response: {error}")))
            }
            Outgoing::Entries { encoded } => {
                buf.reserve(encode::journal_entries_encoded_len(encoded.len()));
                encode::put_journal_entries_header(encoded.len(), buf);
                buf.put_slice(&encoded);
                Ok(())
            }
        }
    }
}

struct SyncDecoder;

impl Decoder for SyncDecoder {
    type Item = wire::SyncRequest;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        wire::SyncRequest::decode(buf)
            .map(Some)
            .map_err(|error| Status::invalid_argument(format!("decoding a sync request: {error}")))
    }
}
