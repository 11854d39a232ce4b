//! Typed popmesh appliance configuration parsed from TOML
