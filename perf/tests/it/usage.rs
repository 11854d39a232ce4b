//! Argument errors exit 64 before any traffic; help is not an error.

use std::process::Command;

use crate::util::{RELAY, RTP};

fn run(bin: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(bin).args(args).output().expect("run binary");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn non_loopback_destinations_are_refused_unless_allowed() {
    let send = [
        "send",
        "--to",
        "10.0.0.2:5000",
        "--rate",
        "10",
        "--size",
        "100",
        "--streams",
        "1",
        "--duration",
        "1",
    ];
    let (code, _, err) = run(RTP, &send);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("--allow-remote"), "{err}");

    let relay = [
        "--listen",
        "127.0.0.1:0",
        "--to",
        "192.168.1.1:5000",
        "--duration",
        "1",
    ];
    let (code, _, err) = run(RELAY, &relay);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("--allow-remote"), "{err}");
}

#[test]
fn bad_values_exit_64_and_help_exits_0() {
    let cases: [&[&str]; 4] = [
        // Too small for header + probe.
        &[
            "send",
            "--to",
            "127.0.0.1:9",
            "--rate",
            "1",
            "--size",
            "32",
            "--streams",
            "1",
            "--duration",
            "1",
        ],
        // More destinations than streams.
        &[
            "send",
            "--to",
            "127.0.0.1:9",
            "--to",
            "127.0.0.1:10",
            "--rate",
            "1",
            "--size",
            "64",
            "--streams",
            "1",
            "--duration",
            "1",
        ],
        // Runs must be bounded.
        &["sink", "--listen", "127.0.0.1:0", "--duration", "0"],
        &["sink", "--listen", "127.0.0.1:0"],
    ];
    for args in cases {
        let (code, _, err) = run(RTP, args);
        assert_eq!(code, Some(64), "{args:?}: {err}");
    }
    let (code, _, err) = run(
        RELAY,
        &[
            "--listen",
            "127.0.0.1:0",
            "--to",
            "127.0.0.1:9",
            "--duration",
            "1",
            "--core",
            "100000",
        ],
    );
    assert_eq!(code, Some(64), "{err}");

    let (code, out, _) = run(RTP, &["--help"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("send") && out.contains("sink"), "{out}");
    let (code, out, _) = run(RTP, &["send", "--help"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("--rate") && out.contains("--batch"), "{out}");
    let (code, out, _) = run(RELAY, &["--help"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("--core") && out.contains("--to"), "{out}");
}
