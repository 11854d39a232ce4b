//! Scenario files are written by people and passed around: any bytes must parse to a scenario
//! or an error, never a panic, and an accepted scenario must serialize and read back equal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use popmesh_capacity::scenario::Scenario;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(scenario) = Scenario::from_toml(text) {
        let again = Scenario::from_toml(&scenario.to_toml()).expect("a written scenario parses");
        assert_eq!(again, scenario, "round trip changed the scenario");
    }
});
