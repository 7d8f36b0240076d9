//! control: how an operator steers the daemon: the admin endpoint
//! ([`admin`]), its reports ([`offsets`]) and config reloads ([`reload`]).
pub mod admin;
pub mod offsets;
pub mod reload;
