//! cpulists come from sysfs files, the kernel command line and operators: any text must parse
//! or fail cleanly, and what parses must print back to the same set.
#![no_main]

use libfuzzer_sys::fuzz_target;
use popmesh_hw::CpuSet;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(set) = CpuSet::parse(text) {
        let printed = set.to_string();
        assert_eq!(CpuSet::parse(&printed).as_ref(), Ok(&set), "{printed}");
    }
});
