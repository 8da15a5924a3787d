//! The PostgreSQL wire protocol as far as the proxy needs it, and all of its pgwire use: the
//! first packet a client sends (SSLRequest, GSSENCRequest, CancelRequest, StartupMessage), the
//! backend's message framing, `BackendKeyData`, and `ErrorResponse`; and the PROXY protocol v2
//! header that the proxy's own clients (a peer replica, the controller's sampler) send where a
//! load balancer would.
//!
//! Reference: <https://www.postgresql.org/docs/current/protocol-message-formats.html>.
//! [`decode_first_message`] is pure and is the target of the `startup_packet` fuzzer.

use std::net::SocketAddr;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use pgwire::messages::response::ErrorResponse;
use pgwire::messages::startup::{BackendKeyData, SecretKey, Startup};
use pgwire::messages::{DecodeContext, Message, ProtocolVersion};

/// `1234.5679`, the SSLRequest code (`NEGOTIATE_SSL_CODE` in PostgreSQL's `pqcomm.h`).
pub const SSL_REQUEST_CODE: i32 = (1234 << 16) | 5679;
/// `1234.5680`, the GSSENCRequest code (`NEGOTIATE_GSS_CODE`).
pub const GSSENC_REQUEST_CODE: i32 = (1234 << 16) | 5680;
/// `1234.5678`, the CancelRequest code (`CANCEL_REQUEST_CODE`).
pub const CANCEL_REQUEST_CODE: i32 = (1234 << 16) | 5678;
/// PostgreSQL's limit on a startup packet (`MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP_PACKET_LEN: usize = 10_000;
/// Length word plus code: the smallest possible first packet.
const MIN_STARTUP_PACKET_LEN: usize = 8;
/// Cancel keys are 4 bytes in protocol 3.0 and up to 256 bytes in 3.2.
const CANCEL_KEY_LEN: std::ops::RangeInclusive<usize> = 4..=256;
/// The first byte of a TLS record carrying a handshake message (a ClientHello when it comes
/// first): how a PostgreSQL 17 `sslnegotiation=direct` client opens.
pub const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// Backend messages the proxy parses before the relay starts are small; anything bigger during
/// authentication is treated as a broken backend.
const MAX_AUTH_PHASE_MESSAGE_LEN: usize = 1 << 20;

/// What a client's first packet asks for.
#[derive(Debug)]
pub enum FirstMessage {
    SslRequest,
    GssEncRequest,
    Cancel(CancelKey),
    Startup(Startup),
}

/// The identity of a backend session, as carried by `BackendKeyData` and `CancelRequest`.
#[derive(Clone, PartialEq, Eq)]
pub struct CancelKey {
    pub pid: i32,
    /// 4 bytes in protocol 3.0, 4..=256 in 3.2.
    pub secret: Bytes,
}

impl std::fmt::Debug for CancelKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret authorises cancelling someone's query: never log it.
        write!(f, "CancelKey {{ pid: {}, secret: <{} bytes> }}", self.pid, self.secret.len())
    }
}

/// Why a first packet is refused. [`StartupPacketError::reply`] is what PostgreSQL answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartupPacketError {
    /// PostgreSQL logs "invalid length of startup packet" and closes without a word.
    #[error("packet length {0} is outside {MIN_STARTUP_PACKET_LEN}..={MAX_STARTUP_PACKET_LEN}")]
    BadLength(i64),
    /// PostgreSQL never answers a cancel request, well-formed or not.
    #[error("cancel request of {0} bytes")]
    BadCancelLength(usize),
    /// A protocol other than 3.x, or a `1234.xxxx` request code PostgreSQL does not know.
    #[error("unsupported frontend protocol {major}.{minor}")]
    UnsupportedProtocol { major: u16, minor: u16 },
    #[error("invalid startup packet layout: expected terminator as last byte")]
    MalformedParameters,
}

impl StartupPacketError {
    /// What PostgreSQL sends the client for this packet before closing (`None`: it closes
    /// silently): the same messages, fields and SQLSTATEs, without the source-location fields
    /// (file, line, routine) that differ between PostgreSQL builds.
    pub fn reply(&self) -> Option<BytesMut> {
        match self {
            Self::BadLength(_) | Self::BadCancelLength(_) => None,
            Self::UnsupportedProtocol { major, minor } => Some(unsupported_protocol(*major, *minor)),
            Self::MalformedParameters => {
                Some(encode_error(&ClientError { code: "08P01", message: self.to_string(), detail: None, hint: None }))
            }
        }
    }
}

/// PostgreSQL's refusal of a protocol version or request code it does not speak (also its answer
/// to an SSLRequest or GSSENCRequest repeated after encryption was negotiated). A client that
/// asked for a version before 3 gets it in the version-2 format, the only one it can read.
pub fn unsupported_protocol(major: u16, minor: u16) -> BytesMut {
    // PostgreSQL 15 to 17 speak 3.0 only; newer minor versions are negotiated by the backend.
    let message = format!("unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.0");
    if major < 3 {
        let mut out = BytesMut::with_capacity(message.len() + 10);
        out.put_u8(b'E');
        out.extend_from_slice(format!("FATAL:  {message}\n").as_bytes());
        out.put_u8(0);
        return out;
    }
    encode_error(&ClientError { code: "0A000", message, detail: None, hint: None })
}

/// Decodes the first packet of a connection (or the first after TLS is set up) from `buf`.
///
/// Returns `Ok(None)` while the packet is incomplete and consumes exactly the packet's bytes
/// once it is complete, so anything the client pipelined behind it stays in `buf`.
///
/// # Errors
/// [`StartupPacketError`] for a length outside PostgreSQL's bounds, an unknown `1234.xxxx` code,
/// a protocol other than 3.x, or a malformed parameter list. An SSLRequest or GSSENCRequest
/// longer than 8 bytes is taken as one, as PostgreSQL takes it (the rest of the packet is
/// ignored, never read as what follows).
pub fn decode_first_message(buf: &mut BytesMut) -> Result<Option<FirstMessage>, StartupPacketError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = i64::from((&buf[..4]).get_i32());
    let len = usize::try_from(len)
        .ok()
        .filter(|l| (MIN_STARTUP_PACKET_LEN..=MAX_STARTUP_PACKET_LEN).contains(l))
        .ok_or(StartupPacketError::BadLength(len))?;
    if buf.len() < len {
        return Ok(None);
    }
    let mut packet = buf.split_to(len);
    packet.advance(4);
    let code = packet.get_i32();
    match code {
        SSL_REQUEST_CODE => Ok(Some(FirstMessage::SslRequest)),
        GSSENC_REQUEST_CODE => Ok(Some(FirstMessage::GssEncRequest)),
        CANCEL_REQUEST_CODE => {
            if packet.len() < 4 || !CANCEL_KEY_LEN.contains(&(packet.len() - 4)) {
                return Err(StartupPacketError::BadCancelLength(len));
            }
            let pid = packet.get_i32();
            Ok(Some(FirstMessage::Cancel(CancelKey { pid, secret: packet.freeze() })))
        }
        _ => {
            let (major, minor) = ((code >> 16) as u16, (code & 0xffff) as u16);
            if major != 3 {
                return Err(StartupPacketError::UnsupportedProtocol { major, minor });
            }
            // The parameter list is `name\0value\0 ... \0`.
            if packet.last() != Some(&0) || packet.iter().filter(|b| **b == 0).count() % 2 == 0 {
                return Err(StartupPacketError::MalformedParameters);
            }
            let mut body = BytesMut::with_capacity(len);
            body.put_i32(code);
            body.extend_from_slice(&packet);
            Startup::decode_body(&mut body, len, &decode_context())
                .map(|s| Some(FirstMessage::Startup(s)))
                .map_err(|_| StartupPacketError::MalformedParameters)
        }
    }
}

/// Protocol 3.2 decoding reads cancel keys of any length; 3.0 keys are simply 4 bytes long.
fn decode_context() -> DecodeContext {
    DecodeContext::new(ProtocolVersion::PROTOCOL3_2)
}

/// Encodes a StartupMessage (after the proxy has edited its parameters).
pub fn encode_startup(startup: &Startup, out: &mut BytesMut) {
    // Encoding only fails past pgwire's size limit, which a decoded-then-trimmed message is under.
    if startup.encode(out).is_err() {
        out.clear();
    }
}

/// Encodes a CancelRequest for `key`.
pub fn encode_cancel_request(key: &CancelKey) -> BytesMut {
    let mut out = BytesMut::with_capacity(12 + key.secret.len());
    out.put_i32((12 + key.secret.len()) as i32);
    out.put_i32(CANCEL_REQUEST_CODE);
    out.put_i32(key.pid);
    out.extend_from_slice(&key.secret);
    out
}

/// Decodes the body of a `BackendKeyData` ('K') message; `None` when it is malformed.
pub fn decode_backend_key(message: &BackendMessage) -> Option<CancelKey> {
    // pid (4) + secret; checked here because pgwire's decoder assumes a sane length.
    if !CANCEL_KEY_LEN.contains(&message.bytes.len().checked_sub(5 + 4)?) {
        return None;
    }
    let mut body = BytesMut::from(&message.bytes[5..]);
    let key = BackendKeyData::decode_body(&mut body, message.bytes.len() - 1, &decode_context()).ok()?;
    Some(CancelKey { pid: key.pid, secret: key.secret_key.to_bytes() })
}

/// Encodes a complete `BackendKeyData` message announcing `key` to the client.
pub fn encode_backend_key(key: &CancelKey) -> BytesMut {
    let mut out = BytesMut::with_capacity(9 + key.secret.len());
    let message = BackendKeyData::new(key.pid, SecretKey::Bytes(key.secret.clone()));
    // The key came from a decoded message, so its length is within the protocol's bounds.
    if message.encode(&mut out).is_err() {
        out.clear();
    }
    out
}

/// One complete message from the backend, raw bytes including tag and length.
#[derive(Debug)]
pub struct BackendMessage {
    pub bytes: BytesMut,
}

impl BackendMessage {
    /// `BackendKeyData`: the session's cancel key.
    pub const BACKEND_KEY_DATA: u8 = b'K';
    /// `ReadyForQuery`: authentication and start-up are over.
    pub const READY_FOR_QUERY: u8 = b'Z';
    /// `ErrorResponse`.
    pub const ERROR_RESPONSE: u8 = b'E';

    /// The message type byte.
    pub fn tag(&self) -> u8 {
        self.bytes[0]
    }
}

/// Splits one complete backend message off `buf`, or `Ok(None)` until one is complete.
///
/// # Errors
/// When the length word is impossible (< 4) or larger than any message of the start-up phase.
pub fn decode_backend_message(buf: &mut BytesMut) -> Result<Option<BackendMessage>, usize> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = (&buf[1..5]).get_i32();
    let len = usize::try_from(len).ok().filter(|l| (4..=MAX_AUTH_PHASE_MESSAGE_LEN).contains(l));
    let Some(len) = len else { return Err(buf.len()) };
    if buf.len() < len + 1 {
        return Ok(None);
    }
    Ok(Some(BackendMessage { bytes: buf.split_to(len + 1) }))
}

/// What the proxy tells a client when it refuses a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    /// Five-character SQLSTATE.
    pub code: &'static str,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl ClientError {
    /// Adds a HINT naming the fix.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Adds a DETAIL explaining the cause.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

/// Encodes `err` as a FATAL `ErrorResponse`.
pub fn encode_error(err: &ClientError) -> BytesMut {
    let mut info = pgwire::error::ErrorInfo::new("FATAL".into(), err.code.into(), err.message.clone());
    // PostgreSQL sends the severity twice: localized (S) and not (V, which clients match on).
    info.severity_nonlocalized = Some("FATAL".into());
    info.detail = err.detail.clone();
    info.hint = err.hint.clone();
    let mut out = BytesMut::new();
    if ErrorResponse::from(info).encode(&mut out).is_err() {
        out.clear();
    }
    out
}

/// The properties the `startup_packet` fuzzer checks, on one input (the fuzzer and the seed-corpus
/// test call this): decoding never panics, consumes only the bytes it decoded, and what it
/// decodes re-encodes to an equal message; a refusal's reply never panics.
///
/// # Panics
/// When a property does not hold.
#[doc(hidden)]
pub fn check_fuzzed_properties(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    match decode_first_message(&mut buf) {
        Ok(None) => assert_eq!(buf.len(), data.len(), "an incomplete packet consumes nothing"),
        Ok(Some(message)) => {
            let consumed = data.len() - buf.len();
            assert!((8..=MAX_STARTUP_PACKET_LEN).contains(&consumed));
            match message {
                FirstMessage::Startup(startup) => {
                    let mut encoded = BytesMut::new();
                    encode_startup(&startup, &mut encoded);
                    match decode_first_message(&mut encoded) {
                        Ok(Some(FirstMessage::Startup(again))) => assert_eq!(again, startup),
                        other => panic!("re-encoded startup did not decode: {other:?}"),
                    }
                }
                FirstMessage::Cancel(key) => {
                    assert_eq!(&encode_cancel_request(&key)[..], &data[..consumed]);
                }
                // A body is ignored, as PostgreSQL ignores it: the code is what counts.
                FirstMessage::SslRequest => assert_eq!(data[4..8], SSL_REQUEST_CODE.to_be_bytes()),
                FirstMessage::GssEncRequest => assert_eq!(data[4..8], GSSENC_REQUEST_CODE.to_be_bytes()),
            }
        }
        Err(e) => {
            let _ = e.reply();
        }
    }

    let mut buf = BytesMut::from(data);
    while let Ok(Some(message)) = decode_backend_message(&mut buf) {
        if message.tag() == b'K' {
            let _ = decode_backend_key(&message);
        }
    }
}

/// The PROXY protocol v2 header (TCP, `PROXY` command) that announces a connection from
/// `client` to `to`, as an NLB sends it: what a client of a proxy run with `--proxy-protocol`
/// writes before its first packet.
#[must_use]
pub fn proxy_v2_header(client: SocketAddr, to: SocketAddr) -> Vec<u8> {
    use ppp::v2::{Addresses, Builder, Command, Protocol, Version};
    // Builds into a Vec: writing cannot fail, and two addresses of one family always fit.
    Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, Addresses::from((client, to)))
        .build()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fuzzer's seed corpus (with inputs it once found), replayed on every test run.
    #[test]
    fn the_fuzz_corpus_keeps_its_properties() {
        let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/startup_packet");
        let mut inputs = 0;
        for entry in std::fs::read_dir(&corpus).expect("the seed corpus") {
            check_fuzzed_properties(&std::fs::read(entry.expect("entry").path()).expect("a seed"));
            inputs += 1;
        }
        assert!(inputs > 10, "only {inputs} seeds in {}", corpus.display());
    }

    fn packet(code: i32, body: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_i32(8 + body.len() as i32);
        b.put_i32(code);
        b.extend_from_slice(body);
        b
    }

    #[test]
    fn incomplete_packets_wait_for_more() {
        let full = packet(SSL_REQUEST_CODE, &[]);
        for cut in 0..full.len() {
            let mut b = BytesMut::from(&full[..cut]);
            assert!(matches!(decode_first_message(&mut b), Ok(None)), "cut at {cut}");
            assert_eq!(b.len(), cut, "nothing consumed");
        }
    }

    #[test]
    fn negotiation_requests_decode_and_leave_pipelined_bytes() {
        let mut b = packet(SSL_REQUEST_CODE, &[]);
        b.extend_from_slice(b"rest");
        assert!(matches!(decode_first_message(&mut b), Ok(Some(FirstMessage::SslRequest))));
        assert_eq!(&b[..], b"rest");
        let mut b = packet(GSSENC_REQUEST_CODE, &[]);
        assert!(matches!(decode_first_message(&mut b), Ok(Some(FirstMessage::GssEncRequest))));
        // As PostgreSQL does, a body is ignored, and never taken as what follows.
        let mut b = packet(SSL_REQUEST_CODE, b"xx");
        b.extend_from_slice(b"rest");
        assert!(matches!(decode_first_message(&mut b), Ok(Some(FirstMessage::SslRequest))));
        assert_eq!(&b[..], b"rest");
    }

    #[test]
    fn refusals_are_postgresqls_own() {
        assert_eq!(StartupPacketError::BadLength(3).reply(), None);
        assert_eq!(StartupPacketError::BadCancelLength(12).reply(), None);
        let old = StartupPacketError::UnsupportedProtocol { major: 2, minor: 0 }.reply().expect("a reply");
        assert_eq!(&old[..], &b"EFATAL:  unsupported frontend protocol 2.0: server supports 3.0 to 3.0\n\0"[..]);
        let new = StartupPacketError::UnsupportedProtocol { major: 1234, minor: 5679 }.reply().expect("a reply");
        let text = String::from_utf8_lossy(&new);
        assert!(
            text.contains("C0A000\0Munsupported frontend protocol 1234.5679: server supports 3.0 to 3.0\0"),
            "{text}"
        );
        let layout = StartupPacketError::MalformedParameters.reply().expect("a reply");
        assert!(String::from_utf8_lossy(&layout).contains("C08P01\0Minvalid startup packet layout"));
    }

    #[test]
    fn startup_parameters_decode_for_any_3_x_minor_version() {
        for minor in [0u16, 2, 9999] {
            let mut b = packet((3 << 16) | i32::from(minor), b"user\0kate\0database\0shop\0_pq_.x\0y\0\0");
            let Ok(Some(FirstMessage::Startup(s))) = decode_first_message(&mut b) else { panic!("minor {minor}") };
            assert_eq!(s.protocol_number_minor, minor);
            assert_eq!(s.parameters.get("user").map(String::as_str), Some("kate"));
            assert_eq!(s.parameters.get("_pq_.x").map(String::as_str), Some("y"));
        }
    }

    #[test]
    fn startup_round_trips_through_encode() {
        let mut b = packet(3 << 16, b"user\0kate\0options\0-c a=b\0\0");
        let Ok(Some(FirstMessage::Startup(s))) = decode_first_message(&mut b) else { panic!() };
        let mut out = BytesMut::new();
        encode_startup(&s, &mut out);
        let Ok(Some(FirstMessage::Startup(again))) = decode_first_message(&mut out) else { panic!() };
        assert_eq!(s, again);
    }

    #[test]
    fn cancel_keys_of_3_0_and_3_2_sizes_decode() {
        for key_len in [4usize, 32, 256] {
            let mut body = vec![0, 0, 0, 42];
            body.extend(std::iter::repeat_n(7u8, key_len));
            let mut b = packet(CANCEL_REQUEST_CODE, &body);
            let Ok(Some(FirstMessage::Cancel(k))) = decode_first_message(&mut b) else { panic!("{key_len}") };
            assert_eq!((k.pid, k.secret.len()), (42, key_len));
            assert_eq!(encode_cancel_request(&k), packet(CANCEL_REQUEST_CODE, &body));
        }
        for bad_len in [0usize, 3, 257] {
            let mut body = vec![0, 0, 0, 42];
            body.extend(std::iter::repeat_n(7u8, bad_len));
            let mut b = packet(CANCEL_REQUEST_CODE, &body);
            assert!(matches!(decode_first_message(&mut b), Err(StartupPacketError::BadCancelLength(_))), "{bad_len}");
        }
    }

    #[test]
    fn bad_first_packets_are_refused_with_a_reason() {
        let cases: Vec<(BytesMut, StartupPacketError)> = vec![
            (BytesMut::from(&[0u8, 0, 0, 3][..]), StartupPacketError::BadLength(3)),
            (BytesMut::from(&[0u8, 0, 0x4e, 0x21][..]), StartupPacketError::BadLength(20001)),
            (BytesMut::from(&[0xffu8, 0xff, 0xff, 0xff][..]), StartupPacketError::BadLength(-1)),
            (BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]), StartupPacketError::BadLength(0x4745_5420)),
            (packet((1234 << 16) | 9999, &[]), StartupPacketError::UnsupportedProtocol { major: 1234, minor: 9999 }),
            (packet(2 << 16, b"\0"), StartupPacketError::UnsupportedProtocol { major: 2, minor: 0 }),
            (packet(3 << 16, b"user\0kate"), StartupPacketError::MalformedParameters),
            (packet(3 << 16, b"user\0\0"), StartupPacketError::MalformedParameters),
        ];
        for (mut b, want) in cases {
            assert_eq!(decode_first_message(&mut b).map(|_| ()), Err(want));
        }
    }

    #[test]
    fn backend_messages_are_framed_and_key_data_rewritten() {
        let key = CancelKey { pid: 99, secret: Bytes::from_static(&[1, 2, 3, 4]) };
        let mut buf = encode_backend_key(&key);
        buf.extend_from_slice(&[b'Z', 0, 0, 0, 5, b'I']);
        let k = decode_backend_message(&mut buf).expect("framed").expect("complete");
        assert_eq!(k.tag(), BackendMessage::BACKEND_KEY_DATA);
        assert_eq!(decode_backend_key(&k), Some(key));
        let z = decode_backend_message(&mut buf).expect("framed").expect("complete");
        assert_eq!(z.tag(), BackendMessage::READY_FOR_QUERY);
        assert!(buf.is_empty());
        // Found by the fuzzer: a BackendKeyData too short for its pid must not panic.
        for len in [4u8, 5, 8, 11] {
            let mut short = BytesMut::from(&[b'K', 0, 0, 0, len][..]);
            short.extend_from_slice(&vec![7u8; usize::from(len) - 4]);
            let k = decode_backend_message(&mut short).expect("framed").expect("complete");
            assert_eq!(decode_backend_key(&k), None, "length {len}");
        }
        let mut bad = BytesMut::from(&[b'R', 0, 0, 0, 2][..]);
        assert!(decode_backend_message(&mut bad).is_err());
    }

    #[test]
    fn error_response_carries_severity_code_message_and_hint() {
        let err = ClientError { code: "08P01", message: "m".into(), detail: None, hint: Some("h".into()) };
        let bytes = encode_error(&err);
        assert_eq!(bytes[0], b'E');
        let body = &bytes[5..];
        for field in [&b"SFATAL\0"[..], b"VFATAL\0", b"C08P01\0", b"Mm\0", b"Hh\0"] {
            assert!(body.windows(field.len()).any(|w| w == field), "{field:?}");
        }
    }
}
