//! io_uring UDP socket backend for the popmesh media workers
