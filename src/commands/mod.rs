//! One file per operation; each takes an open repository and options, returns data.
pub mod check;
pub mod diff;
pub mod keys;
pub mod ls;
pub mod restore;
pub mod stats;
