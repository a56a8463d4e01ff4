//! The ZDS messages, field for field as ztunnel's `proto/zds.proto` (package
//! `istio.workload.zds`) declares them: derived with prost by hand so the build needs no
//! build script and no protoc. Field numbers and the `oneof` tags are the wire contract; a
//! change here must be a change upstream first.

/// `enum Version`: what ztunnel's hello announces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Version {
    NotUsed = 0,
    V1 = 1,
}

/// `message ZdsHello`: ztunnel's first datagram on a connection.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ZdsHello {
    #[prost(enumeration = "Version", tag = "1")]
    pub version: i32,
}

/// `message WorkloadInfo` (field 4, the deprecated trust domain, is reserved upstream).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct WorkloadInfo {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub namespace: String,
    #[prost(string, tag = "3")]
    pub service_account: String,
}

/// `message AddWorkload`: sent with the pod's netns fd in SCM_RIGHTS.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AddWorkload {
    #[prost(string, tag = "1")]
    pub uid: String,
    #[prost(message, optional, tag = "2")]
    pub workload_info: Option<WorkloadInfo>,
}

/// `message KeepWorkload`: a pod the agent knows but has no netns fd for (snapshot only).
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeepWorkload {
    #[prost(string, tag = "1")]
    pub uid: String,
}

/// `message DelWorkload`: its uid is field 2 upstream, not 1.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DelWorkload {
    #[prost(string, tag = "2")]
    pub uid: String,
}

/// `message SnapshotSent`: the end of the snapshot; ztunnel drops what it was not told.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SnapshotSent {}

/// `message Ack`: an empty `error` is success.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Ack {
    #[prost(string, tag = "1")]
    pub error: String,
}

/// `message WorkloadRequest`: agent → ztunnel.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WorkloadRequest {
    #[prost(oneof = "RequestPayload", tags = "1, 5, 2, 3")]
    pub payload: Option<RequestPayload>,
}

/// `WorkloadRequest.payload` (prost would nest it in a module `workload_request`; flat here).
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum RequestPayload {
    #[prost(message, tag = "1")]
    Add(AddWorkload),
    #[prost(message, tag = "5")]
    Keep(KeepWorkload),
    #[prost(message, tag = "2")]
    Del(DelWorkload),
    #[prost(message, tag = "3")]
    SnapshotSent(SnapshotSent),
}

/// `message WorkloadResponse`: ztunnel → agent.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WorkloadResponse {
    #[prost(oneof = "ResponsePayload", tags = "1")]
    pub payload: Option<ResponsePayload>,
}

/// `WorkloadResponse.payload`: ztunnel only acks.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum ResponsePayload {
    #[prost(message, tag = "1")]
    Ack(Ack),
}
