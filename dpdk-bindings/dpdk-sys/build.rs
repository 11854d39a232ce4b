//! Finds the system DPDK, generates bindings for it, compiles the fast-path shim and tells
//! dependents whether DPDK is there.
//!
//! Outcomes:
//! - DPDK found (`pkg-config libdpdk >= 22.11`): bindgen writes `$OUT_DIR/bindings.rs`, the
//!   shim in `shim/shim.c` becomes a static library, the DPDK shared libraries are linked,
//!   `cfg(popmesh_dpdk)` is set and `DEP_DPDK_HAVE=1` is published to dependents.
//! - DPDK absent, or `POPMESH_NO_DPDK=1`: a `cargo:warning` says so and how to install it,
//!   `DEP_DPDK_HAVE=0` is published and the crate compiles to a single constant. That keeps the
//!   workspace buildable on machines without DPDK.

use std::env;
use std::path::PathBuf;
use std::process::Command;

/// Oldest DPDK whose API and ABI the bindings and the safe layer were written against.
const MIN_DPDK_VERSION: &str = "22.11";

/// Libraries every DPDK program here needs mapped before `rte_eal_init`, so that the PMD plugins
/// EAL loads from its driver directory find them. `librte_bus_vdev` is not in `pkg-config
/// --libs libdpdk` (Debian ships it as a plugin), hence the explicit list. Under the linker's
/// `--as-needed` a library only stays if something references it; the shim's
/// `popmesh_dpdk_link_anchors` table references one symbol of each (rustc's `-as-needed` link
/// modifier is still nightly-only).
const ALWAYS_LINKED: &[&str] = &[
    "rte_eal",
    "rte_ethdev",
    "rte_mbuf",
    "rte_mempool",
    "rte_bus_vdev",
];

fn main() {
    println!("cargo::rerun-if-env-changed=POPMESH_NO_DPDK");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=shim/shim.h");
    println!("cargo::rerun-if-changed=shim/shim.c");
    println!("cargo::rustc-check-cfg=cfg(popmesh_dpdk)");

    if env::var("POPMESH_NO_DPDK").is_ok_and(|v| v == "1") {
        absent("POPMESH_NO_DPDK=1 is set");
        return;
    }

    let library = match pkg_config::Config::new()
        .atleast_version(MIN_DPDK_VERSION)
        .cargo_metadata(false)
        .env_metadata(true)
        .probe("libdpdk")
    {
        Ok(library) => library,
        Err(err) => {
            // pkg-config's own message is multi-line; keep the first line, it names the cause.
            let first_line = err
                .to_string()
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned();
            absent(&format!(
                "pkg-config could not find libdpdk >= {MIN_DPDK_VERSION} ({first_line})"
            ));
            return;
        }
    };

    let cflags = dpdk_cflags();
    generate_bindings(&cflags);
    compile_shim(&library, &cflags);
    link_dpdk(&library);

    println!("cargo::rustc-cfg=popmesh_dpdk");
    println!("cargo::metadata=have=1");
    println!("cargo::metadata=version={}", library.version);
}

/// Reports DPDK as missing: a visible warning with the fix, and `DEP_DPDK_HAVE=0`.
fn absent(reason: &str) {
    println!(
        "cargo::warning=DPDK was not found: {reason}. The DPDK backend is disabled \
         (popmesh-dpdk compiles to nothing). To enable it install DPDK >= {MIN_DPDK_VERSION} \
         with its pkg-config file, e.g. `apt-get install dpdk-dev libdpdk-dev`, and unset \
         POPMESH_NO_DPDK."
    );
    println!("cargo::metadata=have=0");
}

/// The complete `pkg-config --cflags libdpdk`: besides include paths it carries
/// `-include rte_config.h` and the `-march` DPDK's inline functions were written for, which
/// the `pkg-config` crate's `Library` does not expose.
fn dpdk_cflags() -> Vec<String> {
    let pkg_config = env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".to_owned());
    let output = Command::new(&pkg_config)
        .args(["--cflags", "libdpdk"])
        .output()
        .unwrap_or_else(|err| panic!("running `{pkg_config} --cflags libdpdk`: {err}"));
    assert!(
        output.status.success(),
        "`{pkg_config} --cflags libdpdk` failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

fn generate_bindings(cflags: &[String]) {
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR for build scripts"));
    let bindings = bindgen::Builder::default()
        .header("shim/shim.h")
        .clang_args(cflags)
        // Experimental DPDK symbols (rte_thread_register, ...) are declared without the
        // deprecation attribute that would otherwise mark them.
        .clang_arg("-DALLOW_EXPERIMENTAL_API")
        .allowlist_function("rte_.*|popmesh_.*")
        .allowlist_type("rte_.*")
        .allowlist_var("RTE_.*|rte_.*|SOCKET_ID_ANY|LCORE_ID_ANY|E_RTE_.*")
        // Many DPDK constants are written with RTE_BIT64(n) and similar function-like macros
        // that bindgen's own evaluator cannot expand; clang can.
        .clang_macro_fallback()
        // rte_flow's L2TPv2 and GTP-PSC headers (reached through rte_ethdev.h) are packed C
        // structs holding aligned ones, which Rust cannot express; nothing here needs their
        // fields, so they stay opaque blobs of the right size.
        .opaque_type("rte_l2tpv2_combined_msg_hdr|rte_gtp_psc_generic_hdr")
        .default_enum_style(bindgen::EnumVariation::Consts)
        .prepend_enum_name(false)
        .derive_default(true)
        .generate_comments(true)
        .layout_tests(true)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .parse_callbacks(Box::new(VerbatimComments))
        .generate()
        .expect("bindgen failed on the DPDK headers (see the clang diagnostics above)");
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("writing bindings.rs to OUT_DIR");
}

/// Keeps DPDK's Doxygen comments as verbatim text blocks. Read as Markdown, their indented
/// examples (devargs syntax, errno lists) would become Rust code blocks that `cargo test --doc`
/// tries to compile.
#[derive(Debug)]
struct VerbatimComments;

impl bindgen::callbacks::ParseCallbacks for VerbatimComments {
    fn process_comment(&self, comment: &str) -> Option<String> {
        Some(format!("```text\n{}\n```", comment.replace("```", "'''")))
    }
}

fn compile_shim(library: &pkg_config::Library, cflags: &[String]) {
    let mut build = cc::Build::new();
    build
        .file("shim/shim.c")
        .define("ALLOW_EXPERIMENTAL_API", None);
    for flag in cflags {
        build.flag(flag);
    }
    for path in &library.include_paths {
        build.include(path);
    }
    // The shim is the per-packet path (rx/tx burst, mbuf alloc/free); an unoptimised debug build
    // of it would make debug-build benchmarks meaningless and buys no debuggability.
    build.opt_level(3);
    build.compile("popmesh_dpdk_shim");
}

fn link_dpdk(library: &pkg_config::Library) {
    for path in &library.link_paths {
        println!("cargo::rustc-link-search=native={}", path.display());
    }
    let extra = ALWAYS_LINKED
        .iter()
        .filter(|lib| !library.libs.iter().any(|l| l == *lib));
    for lib in library
        .libs
        .iter()
        .map(String::as_str)
        .chain(extra.copied())
    {
        println!("cargo::rustc-link-lib=dylib={lib}");
    }
}
