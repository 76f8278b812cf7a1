//! `everruns secrets rotate|generate-key`: moving every sealed value to the current master key,
//! and making new keys.

use anyhow::{Context, bail};
use everruns_core::{MAX_PAGE_LIMIT, PageRequest, Sealed, SealedOwner};
use everruns_secrets::{Keyring, MasterKey};
use everruns_store::Store;

use crate::cli::SecretsCommand;
use crate::config::Config;
use crate::master_key;
use crate::server::open_store;

pub async fn run(config: &Config, command: SecretsCommand) -> anyhow::Result<()> {
    match command {
        SecretsCommand::GenerateKey { id } => {
            let key = MasterKey::generate(&id)?;
            println!("{}", &*key.encode());
            eprintln!(
                "set it as EVERRUNS_SECRET_KEY in every process (keep the old key as \
                 EVERRUNS_SECRET_KEY_PREVIOUS until `everruns secrets rotate` has run)"
            );
            Ok(())
        }
        SecretsCommand::Rotate => rotate(config).await,
    }
}

/// What happened to the values of one kind.
#[derive(Debug, Default)]
struct Tally {
    resealed: u64,
    current: u64,
    changed: u64,
    failed: u64,
}

async fn rotate(config: &Config) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    let keyring = master_key::load(config)?.context(
        "no master key: set EVERRUNS_SECRET_KEY (and the old key as EVERRUNS_SECRET_KEY_PREVIOUS)",
    )?;
    println!("re-sealing under master key `{}`", keyring.current_id());

    let mut values: Vec<(SealedOwner, String, Sealed)> = Vec::new();
    let mut page = PageRequest::first(MAX_PAGE_LIMIT);
    loop {
        let result = store.list_providers(&page).await?;
        values.extend(result.items.into_iter().map(|p| {
            let label = format!("provider `{}` ({})", p.name, p.id);
            (SealedOwner::ProviderKey(p.id), label, p.api_key)
        }));
        match result.next_cursor {
            Some(cursor) => page.after = Some(cursor),
            None => break,
        }
    }
    let providers = values.len();
    let mut page = PageRequest::first(MAX_PAGE_LIMIT);
    loop {
        let result = store.list_secrets(&page).await?;
        values.extend(result.items.into_iter().map(|s| {
            let label = format!("secret `{}`", s.name);
            (SealedOwner::Secret(s.name), label, s.value)
        }));
        match result.next_cursor {
            Some(cursor) => page.after = Some(cursor),
            None => break,
        }
    }

    let mut tallies = [Tally::default(), Tally::default()];
    for (i, (owner, label, sealed)) in values.iter().enumerate() {
        let tally = &mut tallies[usize::from(i >= providers)];
        reseal_one(store.as_ref(), &keyring, owner, label, sealed, tally).await?;
    }
    for (what, t) in ["providers", "secrets"].iter().zip(&tallies) {
        println!(
            "{what}: {} re-sealed, {} already under `{}`, {} changed meanwhile, {} failed",
            t.resealed,
            t.current,
            keyring.current_id(),
            t.changed,
            t.failed
        );
    }
    let failed: u64 = tallies.iter().map(|t| t.failed).sum();
    let changed: u64 = tallies.iter().map(|t| t.changed).sum();
    if failed > 0 {
        bail!("{failed} values could not be opened with the configured keys (see above)");
    }
    if changed > 0 {
        println!("values changed while rotating were written anew; run rotate again to check");
    }
    Ok(())
}

async fn reseal_one(
    store: &dyn Store,
    keyring: &Keyring,
    owner: &SealedOwner,
    label: &str,
    sealed: &Sealed,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    match keyring.reseal(owner, sealed) {
        Ok(None) => tally.current += 1,
        Ok(Some(new)) => {
            if store.replace_sealed(owner, sealed, &new).await? {
                tally.resealed += 1;
                println!("{label}: `{}` -> `{}`", sealed.key_id, new.key_id);
            } else {
                tally.changed += 1;
                println!("{label}: changed or deleted meanwhile; left as it is");
            }
        }
        Err(e) => {
            tally.failed += 1;
            eprintln!("{label}: {e}");
        }
    }
    Ok(())
}
