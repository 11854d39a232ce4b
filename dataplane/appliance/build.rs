//! Enables the DPDK backend when `popmesh-media-dpdk` was built with it.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(popmesh_dpdk)");
    if std::env::var("DEP_POPMESH_MEDIA_DPDK_HAVE").as_deref() == Ok("1") {
        println!("cargo:rustc-cfg=popmesh_dpdk");
    }
}
