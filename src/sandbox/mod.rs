//! The agent sandbox (issue #12). `proxy`: the egress proxy through which a sandboxed agent
//! reaches the network, allowing only the hosts in `allow_hosts`.

pub mod proxy;
