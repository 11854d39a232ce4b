//! Loopback tests of the io_uring backend: real sockets, real kernel, ephemeral ports.

mod flood;
mod open;
mod recv;
mod send;
mod util;
