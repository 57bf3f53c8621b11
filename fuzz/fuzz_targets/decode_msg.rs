//! Fuzzes the protocol decoder: any byte stream, read as frames and decoded as messages, must
//! give messages or errors, never a panic, a hang or an allocation beyond the frame limits.
#![no_main]

use bulwark_protocol::{read_frame, write_msg, FrameBuf, Msg, MsgType};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // As a stream of frames.
    let mut r = data;
    let mut fb = FrameBuf::default();
    while read_frame(&mut r, &mut fb, |_| {}).is_ok() {
        if let Ok(m) = fb.msg() {
            // What decodes must re-encode to a frame that decodes to the same message.
            let mut v = Vec::new();
            write_msg(&mut v, &m).expect("a decoded message encodes");
            let mut fb2 = FrameBuf::default();
            read_frame(&mut &v[..], &mut fb2, |_| {}).expect("re-encoded frame reads");
            assert_eq!(fb2.msg().expect("re-encoded message decodes"), m);
        }
    }
    // As the payload of every type.
    if let Some((&t, payload)) = data.split_first() {
        if let Some(ty) = MsgType::from_code(t) {
            let _ = Msg::decode(ty, payload);
        }
    }
});
