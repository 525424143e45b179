//! Raw config -> validated `Config`. (Owned by the config work; stub.)

use std::path::Path;

use super::{ConfigError, Loaded, Problem};

pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    Err(ConfigError {
        problems: vec![Problem {
            file: path.to_path_buf(),
            line: 0,
            col: 0,
            field: String::new(),
            message: "config loading is not implemented yet".into(),
        }],
    })
}
