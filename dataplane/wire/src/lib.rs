//! Typed, checked, allocation-free views of Ethernet, IPv4, IPv6, UDP, RTP and RTCP packets
