#![doc = include_str!("../README.md")]

pub mod agent;
pub mod api;
mod civil;
pub mod config;
pub mod connect;
pub mod ctl;
pub mod ha;
pub mod http;
pub mod log;
pub mod postgres;
mod python;
