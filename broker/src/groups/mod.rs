//! Consumer groups: which member of a group consumes which partition ([`assign`]).

pub mod assign;
