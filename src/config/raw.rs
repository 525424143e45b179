//! Serde types mirroring the TOML file exactly. (Owned by the config work; stub.)
