#![doc = include_str!("../README.md")]

pub mod config;
pub mod dcs;
mod error;
mod session;

pub use config::ZooKeeperConfig;
pub use dcs::ZooKeeperDcs;
