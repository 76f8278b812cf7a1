//! `everruns api-key create|list|revoke`: key management straight on the database, for scripts
//! and for recovering access when no key is at hand.

use anyhow::{Context, bail};
use everruns_api::generate_key;
use everruns_core::{ApiKey, ApiKeyId, MAX_PAGE_LIMIT, PageRequest};
use everruns_store::Store;

use crate::cli::ApiKeyCommand;
use crate::config::Config;
use crate::server::open_store;

pub async fn run(config: &Config, command: ApiKeyCommand) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    match command {
        ApiKeyCommand::Create { name, role } => {
            if name.trim().is_empty() || name.chars().count() > 100 {
                bail!("the key name must be 1 to 100 characters");
            }
            let generated = generate_key(&name, role);
            let key = store.create_api_key(generated.record).await?;
            println!("created {} API key `{}` ({})", key.role, key.name, key.id);
            println!("{}", generated.secret);
            eprintln!("store it now: the key cannot be shown again");
        }
        ApiKeyCommand::List => {
            let keys = all_keys(store.as_ref()).await?;
            if keys.is_empty() {
                println!("no API keys");
            }
            for key in keys {
                let status = match key.revoked_at {
                    Some(at) => format!("revoked {}", at.format("%Y-%m-%d %H:%M")),
                    None => "active".to_owned(),
                };
                println!(
                    "{}  {:<24}  {:<8}  {}…  {}",
                    key.id, key.name, key.role, key.prefix, status
                );
            }
        }
        ApiKeyCommand::Revoke { key } => {
            let id = match ApiKeyId::parse(&key) {
                Ok(id) => id,
                Err(_) => all_keys(store.as_ref())
                    .await?
                    .into_iter()
                    .find(|k| k.name == key)
                    .map(|k| k.id)
                    .with_context(|| format!("no API key with id or name `{key}`"))?,
            };
            let revoked = store.revoke_api_key(&id).await?;
            println!("revoked API key `{}` ({})", revoked.name, revoked.id);
        }
    }
    Ok(())
}

async fn all_keys(store: &dyn Store) -> anyhow::Result<Vec<ApiKey>> {
    let mut keys = Vec::new();
    let mut page = PageRequest::first(MAX_PAGE_LIMIT);
    loop {
        let result = store.list_api_keys(&page).await?;
        keys.extend(result.items);
        match result.next_cursor {
            Some(cursor) => page.after = Some(cursor),
            None => return Ok(keys),
        }
    }
}
