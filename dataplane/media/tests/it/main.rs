//! Integration tests of the media pipeline, flow table and worker loop.

mod churn;
mod datagram;
mod frames;
mod support;
