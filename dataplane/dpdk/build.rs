//! Compiles the DPDK backend only when `popmesh-dpdk` found a DPDK to bind to (see
//! `dpdk-bindings/README.md`); without it this crate still builds and says so at run time.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(popmesh_dpdk)");
    let have = std::env::var("DEP_POPMESH_DPDK_HAVE").unwrap_or_default() == "1";
    if have {
        println!("cargo:rustc-cfg=popmesh_dpdk");
    }
    println!("cargo:have={}", u8::from(have));
}
