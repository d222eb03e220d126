#![doc = include_str!("../README.md")]

pub mod dcs;
pub mod error;
pub mod faulty;
pub mod memory;
pub mod model;
pub mod options;

pub use dcs::{
    Acquire, Capabilities, Dcs, DcsExt, Expiry, FencingSource, LeaderLease, Precondition, StateKey,
    WatchOutcome,
};
pub use error::{Error, Result};
pub use faulty::{FaultHandle, FaultyDcs};
pub use memory::{MemoryDcs, MemoryStore};
pub use model::{ClusterState, FencingToken, Leader, Member, MemberData, Version};
pub use options::{ClientOptions, ClusterPath, Timing};
