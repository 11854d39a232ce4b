//! RTP traffic generator, sink and reference relay for measuring popmesh
