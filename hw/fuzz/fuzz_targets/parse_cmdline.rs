//! /proc/cmdline is whatever the boot loader wrote: splitting it and reading the isolation
//! parameters must never panic, and no word may contain unquoted whitespace.
#![no_main]

use libfuzzer_sys::fuzz_target;
use popmesh_hw::{CpuSet, KernelCmdline};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let line = KernelCmdline::parse(&text);
    let possible: CpuSet = (0..64).collect();
    let _ = line.isolation(&possible);
    if !text.contains('"') {
        assert!(line
            .params
            .iter()
            .all(|p| !p.key.contains(char::is_whitespace)));
    }
});
