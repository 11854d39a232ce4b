//! Feeds arbitrary bytes, read as (lossy) UTF-8, to the config parser. Any panic is a bug: a
//! config file is operator input and must only ever produce a `ConfigError`.
//!
//! Run with `cargo fuzz run parse_config` in `dataplane/config/fuzz` (nightly). Good seeds are
//! the files in `configs/`: `mkdir -p corpus/parse_config && cp ../../../configs/*.toml
//! corpus/parse_config/`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use popmesh_config::Config;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(config) = Config::from_toml(&text) {
        // What was accepted must also be writable and load back unchanged.
        let written = match config.to_toml() {
            Ok(written) => written,
            Err(e) => panic!("accepted config cannot be written: {e}"),
        };
        match Config::from_toml(&written) {
            Ok(reparsed) => assert_eq!(reparsed, config, "round trip changed the config"),
            Err(e) => panic!("written config does not load: {e}\n{written}"),
        }
    }
});
