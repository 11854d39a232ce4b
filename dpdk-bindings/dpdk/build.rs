//! Mirrors popmesh-dpdk-sys's verdict: sets `cfg(popmesh_dpdk)` when it found DPDK and passes
//! the verdict on as `DEP_POPMESH_DPDK_HAVE` so crates above can gate their DPDK backends the same
//! way without depending on the -sys crate.

fn main() {
    println!("cargo::rerun-if-env-changed=DEP_DPDK_HAVE");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rustc-check-cfg=cfg(popmesh_dpdk)");
    let have = std::env::var("DEP_DPDK_HAVE").is_ok_and(|v| v == "1");
    if have {
        println!("cargo::rustc-cfg=popmesh_dpdk");
    }
    println!("cargo::metadata=have={}", u8::from(have));
}
