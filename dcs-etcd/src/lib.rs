#![doc = include_str!("../README.md")]

mod config;
mod dcs;
mod endpoints;
mod error;
mod lease;

pub use config::{DEFAULT_PORT, EtcdConfig, Hosts};
pub use dcs::EtcdDcs;
