//! VRRP (RFC 5798 v3, RFC 3768 v2): codec, pure state machine, and the socket/netlink edge.
pub mod fsm;
pub mod packet;
