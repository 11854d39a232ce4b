use std::net::SocketAddr;

use popmesh_media::flow::{FlowKey, FlowSpec, FlowTable, Target};

pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

pub fn spec(port: u16, ingress: &str, source: Option<&str>, targets: &[&str]) -> FlowSpec {
    FlowSpec {
        name: format!("s-{ingress}").into(),
        key: FlowKey::new(port, addr(ingress)),
        source: source.map(addr),
        clock_rate: 90_000,
        targets: targets
            .iter()
            .map(|t| Target {
                port: 0,
                addr: addr(t),
                mac: None,
            })
            .collect(),
    }
}

pub fn table(specs: Vec<FlowSpec>) -> FlowTable {
    let mut t = FlowTable::new(1024);
    for s in specs {
        t.upsert(s).expect("install");
    }
    t.publish();
    t
}
