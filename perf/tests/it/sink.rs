//! The sink survives garbage and counts it as malformed.

use std::net::UdpSocket;
use std::time::Duration;

use popmesh_perf::probe::{ProbeRepr, MIN_PACKET_LEN, SSRC_BASE};

use crate::util::{read_json, scratch, spawn_listening, wait, RTP};

#[test]
fn garbage_is_counted_as_malformed_and_probes_still_count() {
    let json = scratch("sink-garbage");
    let args = [
        "sink",
        "--listen",
        "127.0.0.1:0",
        "--duration",
        "10",
        "--expect",
        "7",
        "--json",
    ];
    let mut sink = spawn_listening(
        RTP,
        &[&args[..], &[json.to_str().expect("utf-8 path")]].concat(),
        1,
    );

    let mut bad_magic = vec![0u8; 64];
    let mut probe = vec![0u8; 100];
    let mut repr = ProbeRepr {
        rtp_seq: 0,
        rtp_timestamp: 0,
        ssrc: SSRC_BASE,
        stream_index: 0,
        send_time_ns: 0,
        probe_seq: 0,
    };
    repr.emit(&mut bad_magic).expect("fits");
    bad_magic[12] = b'X';
    let noise: Vec<u8> = (0..1_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let garbage: [&[u8]; 5] = [
        &[],
        &[0x80],
        &[0xff; MIN_PACKET_LEN - 1],
        &bad_magic,
        &noise,
    ];

    let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
    tx.connect(sink.addrs[0]).expect("connect");
    for datagram in garbage {
        tx.send(datagram).expect("send garbage");
    }
    for seq in 0..2 {
        repr.probe_seq = seq;
        repr.emit(&mut probe).expect("fits");
        tx.send(&probe).expect("send probe");
    }

    let status = wait(&mut sink.child, Duration::from_secs(15), "sink");
    assert!(status.success(), "sink failed: {status}");
    let l = &read_json(&json)["listeners"][0];
    assert_eq!(l["packets"], 7, "{l:#}");
    assert_eq!(l["malformed"], 5, "{l:#}");
    assert_eq!(l["probes"], 2, "{l:#}");
    assert_eq!(l["loss"], 0, "{l:#}");
}
