//! popmesh-hw on the captured and hand-built machine trees in `tests/fixtures/`.

mod checks;
mod fixtures;
mod plan;
mod props;
mod read;
