//! A config snapshot from the control daemon (protobuf): compiling its mesh for the signaling
//! lane never panics; it either builds a table or names the refused resources. Routing and
//! authorization on what was built never panic either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use popmesh_ctrl_api::pb::ConfigSnapshot;
use popmesh_signal::MeshTable;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = ConfigSnapshot::decode(data) else {
        return;
    };
    match MeshTable::compile(1, &s.services, &s.routes, &s.canaries, &s.policies, None) {
        Ok(t) => {
            let headers = http::HeaderMap::new();
            for r in &s.routes {
                if let Some(route) = t.route(&r.host, &r.path_prefix, &headers) {
                    let _ = route.service.place(None, &headers, 7);
                }
            }
            for p in &s.policies {
                for src in &p.sources {
                    if let Ok(id) = popmesh_ctrl_api::SpiffeId::parse(src) {
                        let _ = t.authorize(Some(&id), &p.destination, "GET", "/");
                    }
                }
            }
            // A second version takes over the first's state.
            let _ = MeshTable::compile(2, &s.services, &s.routes, &s.canaries, &s.policies, Some(&t));
        }
        Err(errors) => assert!(!errors.is_empty()),
    }
});
