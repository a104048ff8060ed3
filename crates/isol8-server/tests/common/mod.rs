//! Helpers shared by the server's integration tests: [`router`] for the router tests
//! (`router*.rs`) and [`load`] for the load and fault tests (`load*.rs`).

#![allow(dead_code)]

pub mod load;
pub mod router;
