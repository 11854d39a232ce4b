//! Integration tests of `popmesh-ctrld`: the real binary, real mTLS on 127.0.0.1, real redb.

mod auth;
mod canary;
mod durability;
mod harness;
mod invalid;
mod mesh;
mod sessions;
mod watch;
