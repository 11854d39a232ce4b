//! The control-plane driver's pure parts: the users' summary it reads, the small-machine
//! rules and the paths it derives from the join path.

use popmesh_capacity::controlplane::{
    route_prefix, scale, ws_path, Machine, UsersSummary, SMALL_MACHINE_RATE, SMALL_MACHINE_USERS,
};
use popmesh_capacity::scenario::ControlPlaneLoad;

const SUMMARY: &str = r#"{
  "users": 200,
  "attempted": 200,
  "joined": 198,
  "websockets_opened": 198,
  "open_at_end": 197,
  "failed": { "timeout": 2, "closed_early": 1 },
  "not_started": 0,
  "start_monotonic_ns": 123456789,
  "arrivals_s": 1.99,
  "elapsed_s": 5.2,
  "join_total": { "samples": 198, "p50_us": 800.5, "p99_us": 2100.0, "p999_us": 3000.0, "max_us": 3100.0 },
  "join_request": { "samples": 198, "p50_us": 90.0, "p99_us": 300.0, "p999_us": 400.0, "max_us": 410.0 },
  "open_over_time": [[1.0, 100.0], [2.0, 197.0]],
  "nofile_limit": 20000
}"#;

#[test]
fn a_users_summary_parses_with_its_failures() {
    let s = UsersSummary::parse(SUMMARY).expect("parses");
    assert_eq!((s.users, s.joined, s.open_at_end), (200, 198, 197));
    assert_eq!(s.join_total.map(|l| l.p99_us), Some(2100.0));
    assert_eq!(s.join_request.map(|l| l.p50_us), Some(90.0));
    assert_eq!(s.failures(), "closed_early=1, timeout=2");
    assert!((s.joined_ratio() - 0.99).abs() < 1e-12);
    assert_eq!(s.open_over_time.len(), 2);
    // Joined but no WebSocket: not in the room.
    let text = SUMMARY.replace("\"websockets_opened\": 198", "\"websockets_opened\": 100");
    let s = UsersSummary::parse(&text).expect("parses");
    assert!((s.joined_ratio() - 0.5).abs() < 1e-12);
}

#[test]
fn a_summary_without_joins_has_no_percentiles() {
    let text = SUMMARY
        .replace("\"joined\": 198", "\"joined\": 0")
        .replace("\"websockets_opened\": 198", "\"websockets_opened\": 0")
        .replace(
            r#""join_total": { "samples": 198, "p50_us": 800.5, "p99_us": 2100.0, "p999_us": 3000.0, "max_us": 3100.0 }"#,
            r#""join_total": null"#,
        );
    let s = UsersSummary::parse(&text).expect("parses");
    assert_eq!(s.join_total, None);
    assert_eq!(s.joined_ratio(), 0.0);
}

#[test]
fn broken_summaries_are_refused_by_name() {
    let err = UsersSummary::parse("{\"users\": 1}").unwrap_err();
    assert!(format!("{err:#}").contains("users summary"), "{err:#}");
    assert!(UsersSummary::parse("not json").is_err());
    // More joined than attempted cannot be.
    let text = SUMMARY.replace("\"joined\": 198", "\"joined\": 201");
    let err = UsersSummary::parse(&text).unwrap_err();
    assert!(format!("{err}").contains("inconsistent"), "{err}");
}

fn load(users: u64) -> ControlPlaneLoad {
    ControlPlaneLoad {
        users,
        rooms: 1000,
        path: "/rooms/join".into(),
    }
}

const BIG: Machine = Machine {
    cpus: 64,
    mem_available_kib: 256 << 20,
    nofile: 1 << 20,
};

#[test]
fn a_big_machine_runs_the_scenario_as_written() {
    let (eff, notes) = scale(&load(100_000), 1000, BIG, false);
    assert_eq!((eff.users, eff.rate, eff.rooms), (100_000, 1000, 1000));
    assert!(notes.is_empty(), "{notes:?}");
}

#[test]
fn a_small_machine_scales_down_and_says_why() {
    let small = Machine { cpus: 2, ..BIG };
    let (eff, notes) = scale(&load(100_000), 1000, small, false);
    assert_eq!(
        (eff.users, eff.rate),
        (SMALL_MACHINE_USERS, SMALL_MACHINE_RATE)
    );
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(
        notes[0].contains("100000 users") && notes[0].contains("2-CPU"),
        "{}",
        notes[0]
    );
    // --full-scale keeps everything.
    let (eff, _) = scale(&load(100_000), 1000, small, true);
    assert_eq!((eff.users, eff.rate), (100_000, 1000));
}

#[test]
fn file_descriptors_and_memory_bound_the_users() {
    let few_fds = Machine {
        nofile: 9_216,
        ..BIG
    };
    let (eff, notes) = scale(&load(100_000), 1000, few_fds, false);
    assert_eq!(
        eff.users, 4_096,
        "two descriptors per user in the appliance"
    );
    assert!(notes[0].contains("RLIMIT_NOFILE"), "{notes:?}");
    let little_memory = Machine {
        mem_available_kib: 192 * 2 * 500,
        ..BIG
    };
    let (eff, notes) = scale(&load(100_000), 1000, little_memory, false);
    assert_eq!(eff.users, 500);
    assert!(notes[0].contains("memory"), "{notes:?}");
    // Rooms never outnumber users.
    let (eff, _) = scale(&load(10), 1000, BIG, false);
    assert_eq!(eff.rooms, 10);
}

#[test]
fn the_route_and_websocket_follow_the_join_path() {
    assert_eq!(route_prefix("/rooms/join"), "/rooms");
    assert_eq!(ws_path("/rooms/join"), "/rooms/ws");
    assert_eq!(route_prefix("/join"), "/join");
    assert_eq!(ws_path("/join"), "/join-ws");
    assert_eq!(route_prefix("/api/v1/rooms/join"), "/api");
}
