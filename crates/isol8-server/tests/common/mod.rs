//! Helpers shared by the server's integration tests: [`router`] for the router tests
//! (`router*.rs`), [`load`] for the load and fault tests (`load*.rs`) and [`reference`]
//! for the key databases of isol8 v0.20 (`keys.rs`, `router_keys.rs`).

#![allow(dead_code)]

pub mod load;
pub mod reference;
pub mod router;
