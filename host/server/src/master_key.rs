//! The master keys that seal provider keys and secrets, and the start-up check that the
//! database's sealed values open with them.
//!
//! Where the current key comes from:
//! - `EVERRUNS_SECRET_KEY` (`KEYID:BASE64` of 32 bytes) when set, on either backend;
//! - else, on the embedded SQLite default, `<data-dir>/secret.key`, generated on first start
//!   with mode 0600 (a key file readable by others is refused);
//! - else (PostgreSQL without a key) none: a key file would differ between processes sharing
//!   the database, so nothing is sealed and the providers/secrets API answers 503 until every
//!   process gets the same `EVERRUNS_SECRET_KEY`. Start-up fails if the database already holds
//!   sealed values.
//!
//! `EVERRUNS_SECRET_KEY_PREVIOUS` keeps values sealed under the previous key readable until
//! `everruns secrets rotate` has re-sealed them.

use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, bail};
use everruns_core::SealedOwner;
use everruns_secrets::{Keyring, MasterKey};
use everruns_store::Store;
use secrecy::ExposeSecret;

use crate::config::Config;

/// Name of the generated key file in the data directory.
pub const KEY_FILE: &str = "secret.key";

/// The keyring this process uses, or `None` on PostgreSQL without `EVERRUNS_SECRET_KEY`.
pub fn load(config: &Config) -> anyhow::Result<Option<Keyring>> {
    let previous = config
        .secret_key_previous
        .as_ref()
        .map(|k| MasterKey::parse(k.expose_secret()))
        .transpose()
        .context("EVERRUNS_SECRET_KEY_PREVIOUS")?;
    let current = match &config.secret_key {
        Some(key) => Some(MasterKey::parse(key.expose_secret()).context("EVERRUNS_SECRET_KEY")?),
        None if config.database_url.is_none() => Some(key_file(&config.data_dir)?),
        None => None,
    };
    match current {
        Some(current) => Ok(Some(Keyring::new(current, previous)?)),
        None if previous.is_some() => {
            bail!("EVERRUNS_SECRET_KEY_PREVIOUS is set but EVERRUNS_SECRET_KEY is not")
        }
        None => Ok(None),
    }
}

/// Reads `<data_dir>/secret.key`, creating it (mode 0600) with a new random key on first use.
fn key_file(data_dir: &Path) -> anyhow::Result<MasterKey> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    let path = data_dir.join(KEY_FILE);
    let generated = MasterKey::generate(&format!(
        "local-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ))?;
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path);
    match created {
        Ok(mut file) => {
            file.write_all(generated.encode().as_bytes())
                .and_then(|()| file.write_all(b"\n"))
                .and_then(|()| file.sync_all())
                .with_context(|| format!("writing the key file {}", path.display()))?;
            tracing::info!(
                file = %path.display(),
                key_id = generated.id(),
                "generated the master key for provider keys and secrets; back it up with the database"
            );
            Ok(generated)
        }
        // Another process created it first (or an earlier start did): use that one.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => read_key_file(&path),
        Err(e) => Err(e).with_context(|| format!("creating the key file {}", path.display())),
    }
}

fn read_key_file(path: &Path) -> anyhow::Result<MasterKey> {
    let mode = std::fs::metadata(path)
        .with_context(|| format!("reading the key file {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        bail!(
            "the key file {} can be read by other users (mode {:o}); restrict it with `chmod 600 {}`",
            path.display(),
            mode & 0o777,
            path.display()
        );
    }
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("reading the key file {}", path.display()))?,
    );
    MasterKey::parse(&text).with_context(|| format!("the key file {}", path.display()))
}

/// Fails start-up unless every master key the database's sealed values need is configured
/// and actually opens one value sealed with it (a wrong key under the right id is caught here,
/// not at the first run that needs it).
pub async fn check(store: &dyn Store, keyring: Option<&Keyring>) -> anyhow::Result<()> {
    let samples = store
        .sealed_samples()
        .await
        .context("reading the encrypted values")?;
    let Some(keyring) = keyring else {
        if let Some(sample) = samples.first() {
            bail!(
                "the database holds encrypted provider keys or secrets (master key `{}`) but \
                 EVERRUNS_SECRET_KEY is not set; set it to that key",
                sample.sealed.key_id
            );
        }
        return Ok(());
    };
    for sample in &samples {
        keyring.open(&sample.owner, &sample.sealed).map_err(|e| {
            anyhow::anyhow!(
                "{} cannot be decrypted: {e}; check EVERRUNS_SECRET_KEY{}",
                describe(&sample.owner),
                if sample.sealed.key_id == keyring.current_id() {
                    ""
                } else {
                    " and EVERRUNS_SECRET_KEY_PREVIOUS"
                }
            )
        })?;
    }
    Ok(())
}

/// How a sealed value's owner is named in messages.
pub fn describe(owner: &SealedOwner) -> String {
    match owner {
        SealedOwner::ProviderKey(id) => format!("the API key of provider {id}"),
        SealedOwner::Secret(name) => format!("secret `{name}`"),
    }
}
