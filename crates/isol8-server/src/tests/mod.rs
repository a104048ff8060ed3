//! The router's tests without Docker.

mod errors;
