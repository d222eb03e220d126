#![doc = include_str!("../README.md")]

pub mod api;
pub mod config;
pub mod connect;
pub mod ha;
pub mod postgres;
