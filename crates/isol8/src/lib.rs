//! isol8 library.
