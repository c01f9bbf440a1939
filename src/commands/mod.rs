//! One file per operation; each takes an open repository and options, returns data.
pub mod check;
pub mod copy;
pub mod diff;
pub mod dump;
pub mod find;
pub mod forget;
pub mod keys;
pub mod ls;
pub mod prune;
pub mod repair;
pub mod restore;
pub mod restore_policy;
pub mod stats;
pub mod tag;
