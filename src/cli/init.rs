//! `coffer init`: a new repository.

use anyhow::Result;
use coffer::repo::{Location, Repository};

use super::shared_args::GlobalArgs;
use super::{exit, location, open_options, open_store, output, password, profiles};

pub fn run(global: &GlobalArgs) -> Result<u8> {
    // A folder this init creates goes again if init fails: no half repository stays.
    let created = match location(global)? {
        Location::Local(path) if !path.exists() => Some(path),
        _ => None,
    };
    let result = (|| {
        let store = open_store(global, true)?;
        let password = password::for_init(global, profiles::active(global)?)?;
        let repo = Repository::init(store, password.as_bytes(), &open_options(global))?;
        output::init(global, repo.location(), &repo)
    })();
    if let (Err(_), Some(path)) = (&result, &created) {
        if let Err(e) = std::fs::remove_dir_all(path) {
            log::warn!("removing {} after the failed init: {e}", path.display());
        }
    }
    result?;
    Ok(exit::OK)
}
