//! Fuzzes the parser of a client's first packet and of backend message framing: no input may
//! panic, consume bytes it did not decode, or decode to something that does not re-encode to
//! an equal message.
#![no_main]

use bytes::BytesMut;
use devdb_proxy_protocol::{self as protocol, FirstMessage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    match protocol::decode_first_message(&mut buf) {
        Ok(None) => assert_eq!(buf.len(), data.len(), "an incomplete packet consumes nothing"),
        Ok(Some(message)) => {
            let consumed = data.len() - buf.len();
            assert!((8..=protocol::MAX_STARTUP_PACKET_LEN).contains(&consumed));
            match message {
                FirstMessage::Startup(startup) => {
                    let mut encoded = BytesMut::new();
                    protocol::encode_startup(&startup, &mut encoded);
                    match protocol::decode_first_message(&mut encoded) {
                        Ok(Some(FirstMessage::Startup(again))) => assert_eq!(again, startup),
                        other => panic!("re-encoded startup did not decode: {other:?}"),
                    }
                }
                FirstMessage::Cancel(key) => {
                    assert_eq!(&protocol::encode_cancel_request(&key)[..], &data[..consumed]);
                }
                // A body is ignored, as PostgreSQL ignores it: the code is what counts.
                FirstMessage::SslRequest => assert_eq!(data[4..8], protocol::SSL_REQUEST_CODE.to_be_bytes()),
                FirstMessage::GssEncRequest => assert_eq!(data[4..8], protocol::GSSENC_REQUEST_CODE.to_be_bytes()),
            }
        }
        Err(e) => {
            let _ = e.reply();
        }
    }

    let mut buf = BytesMut::from(data);
    while let Ok(Some(message)) = protocol::decode_backend_message(&mut buf) {
        if message.tag() == b'K' {
            let _ = protocol::decode_backend_key(&message);
        }
    }
});
