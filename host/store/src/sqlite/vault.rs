//! Providers and secrets on SQLite: rows whose secret part is stored sealed (key id,
//! wrapped data key, nonces, ciphertext), plus the start-up sample and the compare-and-swap
//! used by key rotation.

use everruns_core::{
    NewProvider, Page, PageRequest, Provider, ProviderId, ProviderPatch, Sealed, SealedOwner,
    SealedRef, Secret,
};
use sqlx::Row;
use sqlx::sqlite::{SqlitePool, SqliteRow};

use super::timestamp;
use crate::codec::{self, from_json_text, parse_id, timestamp_to_text, to_json_text};
use crate::{Result, StoreError, paging};

macro_rules! sealed_columns {
    () => {
        "key_id, wrapped_key, key_nonce, nonce, ciphertext"
    };
}
macro_rules! provider_columns {
    () => {
        concat!(
            "id, name, kind, base_url, default_model, models, api_key_hint, ",
            sealed_columns!(),
            ", created_at, updated_at"
        )
    };
}
macro_rules! secret_columns {
    () => {
        concat!("name, ", sealed_columns!(), ", created_at, updated_at")
    };
}

fn sealed_from_row(row: &SqliteRow) -> Result<Sealed> {
    Ok(Sealed {
        key_id: row.try_get("key_id")?,
        wrapped_key: row.try_get("wrapped_key")?,
        key_nonce: row.try_get("key_nonce")?,
        nonce: row.try_get("nonce")?,
        ciphertext: row.try_get("ciphertext")?,
    })
}

fn provider_from_row(row: &SqliteRow) -> Result<Provider> {
    Ok(Provider {
        id: parse_id("provider id", row.try_get("id")?, ProviderId::parse)?,
        name: row.try_get("name")?,
        kind: codec::parse_provider_kind(row.try_get("kind")?)?,
        base_url: row.try_get("base_url")?,
        default_model: row.try_get("default_model")?,
        models: from_json_text("provider models", row.try_get("models")?)?,
        api_key: sealed_from_row(row)?,
        api_key_hint: row.try_get("api_key_hint")?,
        created_at: timestamp(row, "created_at")?,
        updated_at: timestamp(row, "updated_at")?,
    })
}

fn secret_from_row(row: &SqliteRow) -> Result<Secret> {
    Ok(Secret {
        name: row.try_get("name")?,
        value: sealed_from_row(row)?,
        created_at: timestamp(row, "created_at")?,
        updated_at: timestamp(row, "updated_at")?,
    })
}

pub(super) async fn create_provider(pool: &SqlitePool, new: NewProvider) -> Result<Provider> {
    codec::check_provider_text(
        Some(&new.name),
        Some(&new.base_url),
        new.default_model.as_deref(),
        Some(&new.models),
    )?;
    codec::check_sealed(&new.api_key)?;
    codec::reject_nul("a key hint", &new.api_key_hint)?;
    let models = to_json_text("provider models", &new.models)?;
    let now = codec::now();
    let key = &new.api_key;
    sqlx::query(
        "INSERT INTO providers (id, name, kind, base_url, default_model, models, api_key_hint, \
         key_id, wrapped_key, key_nonce, nonce, ciphertext, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)",
    )
    .bind(new.id.as_str())
    .bind(&new.name)
    .bind(new.kind.as_str())
    .bind(&new.base_url)
    .bind(new.default_model.as_deref())
    .bind(models)
    .bind(&new.api_key_hint)
    .bind(&key.key_id)
    .bind(&key.wrapped_key)
    .bind(&key.key_nonce)
    .bind(&key.nonce)
    .bind(&key.ciphertext)
    .bind(timestamp_to_text(&now))
    .execute(pool)
    .await
    .map_err(|err| codec::provider_name_conflict(err, &new.name))?;
    Ok(Provider {
        id: new.id,
        name: new.name,
        kind: new.kind,
        base_url: new.base_url,
        default_model: new.default_model,
        models: new.models,
        api_key: new.api_key,
        api_key_hint: new.api_key_hint,
        created_at: now,
        updated_at: now,
    })
}

pub(super) async fn get_provider(pool: &SqlitePool, id: &ProviderId) -> Result<Provider> {
    let row = sqlx::query(concat!(
        "SELECT ",
        provider_columns!(),
        " FROM providers WHERE id = $1"
    ))
    .bind(id.as_str())
    .fetch_optional(pool)
    .await?;
    match row {
        Some(row) => provider_from_row(&row),
        None => Err(StoreError::not_found("provider", id)),
    }
}

pub(super) async fn get_provider_by_name(pool: &SqlitePool, name: &str) -> Result<Provider> {
    codec::reject_nul("a provider name", name)?;
    let row = sqlx::query(concat!(
        "SELECT ",
        provider_columns!(),
        " FROM providers WHERE name = $1"
    ))
    .bind(name)
    .fetch_optional(pool)
    .await?;
    match row {
        Some(row) => provider_from_row(&row),
        None => Err(StoreError::not_found("provider", &name)),
    }
}

pub(super) async fn list_providers(
    pool: &SqlitePool,
    page: &PageRequest,
) -> Result<Page<Provider>> {
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM providers")
        .fetch_one(pool)
        .await?;
    let rows = sqlx::query(concat!(
        "SELECT ",
        provider_columns!(),
        " FROM providers WHERE id > $1 ORDER BY id LIMIT $2"
    ))
    .bind(page.after.as_deref().unwrap_or(""))
    .bind(paging::fetch_limit(page))
    .fetch_all(pool)
    .await?;
    let items = rows
        .iter()
        .map(provider_from_row)
        .collect::<Result<Vec<_>>>()?;
    Ok(paging::finish(page, items, total, |p| p.id.to_string()))
}

pub(super) async fn update_provider(
    pool: &SqlitePool,
    id: &ProviderId,
    patch: ProviderPatch,
) -> Result<Provider> {
    codec::check_provider_patch(&patch)?;
    let models = patch
        .models
        .as_ref()
        .map(|m| to_json_text("provider models", m))
        .transpose()?;
    let (sealed, hint) = match &patch.api_key {
        Some((sealed, hint)) => (Some(sealed), Some(hint.as_str())),
        None => (None, None),
    };
    let row = sqlx::query(concat!(
        "UPDATE providers SET \
           name = COALESCE($2, name), \
           kind = COALESCE($3, kind), \
           base_url = COALESCE($4, base_url), \
           default_model = CASE WHEN $5 THEN $6 ELSE default_model END, \
           models = COALESCE($7, models), \
           api_key_hint = COALESCE($8, api_key_hint), \
           key_id = COALESCE($9, key_id), \
           wrapped_key = COALESCE($10, wrapped_key), \
           key_nonce = COALESCE($11, key_nonce), \
           nonce = COALESCE($12, nonce), \
           ciphertext = COALESCE($13, ciphertext), \
           updated_at = $14 \
         WHERE id = $1 RETURNING ",
        provider_columns!()
    ))
    .bind(id.as_str())
    .bind(patch.name.as_deref())
    .bind(patch.kind.map(|k| k.as_str()))
    .bind(patch.base_url.as_deref())
    .bind(patch.default_model.is_some())
    .bind(patch.default_model.clone().flatten())
    .bind(models)
    .bind(hint)
    .bind(sealed.map(|s| s.key_id.as_str()))
    .bind(sealed.map(|s| s.wrapped_key.as_slice()))
    .bind(sealed.map(|s| s.key_nonce.as_slice()))
    .bind(sealed.map(|s| s.nonce.as_slice()))
    .bind(sealed.map(|s| s.ciphertext.as_slice()))
    .bind(timestamp_to_text(&codec::now()))
    .fetch_optional(pool)
    .await
    .map_err(|err| codec::provider_name_conflict(err, patch.name.as_deref().unwrap_or_default()))?;
    match row {
        Some(row) => provider_from_row(&row),
        None => Err(StoreError::not_found("provider", id)),
    }
}

pub(super) async fn delete_provider(pool: &SqlitePool, id: &ProviderId) -> Result<()> {
    let done = sqlx::query("DELETE FROM providers WHERE id = $1")
        .bind(id.as_str())
        .execute(pool)
        .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::not_found("provider", id));
    }
    Ok(())
}

pub(super) async fn put_secret(
    pool: &SqlitePool,
    name: &str,
    value: &Sealed,
) -> Result<(Secret, bool)> {
    codec::check_secret_name(name)?;
    codec::check_sealed(value)?;
    // Update first, else insert; a concurrent insert of the same name makes the insert a
    // no-op, and the next round updates it.
    loop {
        let now = codec::now();
        let updated = sqlx::query(concat!(
            "UPDATE secrets SET key_id = $2, wrapped_key = $3, key_nonce = $4, nonce = $5, \
             ciphertext = $6, updated_at = $7 WHERE name = $1 RETURNING ",
            secret_columns!()
        ))
        .bind(name)
        .bind(&value.key_id)
        .bind(&value.wrapped_key)
        .bind(&value.key_nonce)
        .bind(&value.nonce)
        .bind(&value.ciphertext)
        .bind(timestamp_to_text(&now))
        .fetch_optional(pool)
        .await?;
        if let Some(row) = updated {
            return Ok((secret_from_row(&row)?, false));
        }
        let inserted = sqlx::query(concat!(
            "INSERT INTO secrets (name, key_id, wrapped_key, key_nonce, nonce, ciphertext, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
             ON CONFLICT (name) DO NOTHING RETURNING ",
            secret_columns!()
        ))
        .bind(name)
        .bind(&value.key_id)
        .bind(&value.wrapped_key)
        .bind(&value.key_nonce)
        .bind(&value.nonce)
        .bind(&value.ciphertext)
        .bind(timestamp_to_text(&now))
        .fetch_optional(pool)
        .await?;
        if let Some(row) = inserted {
            return Ok((secret_from_row(&row)?, true));
        }
    }
}

pub(super) async fn get_secret(pool: &SqlitePool, name: &str) -> Result<Secret> {
    codec::check_secret_name(name)?;
    let row = sqlx::query(concat!(
        "SELECT ",
        secret_columns!(),
        " FROM secrets WHERE name = $1"
    ))
    .bind(name)
    .fetch_optional(pool)
    .await?;
    match row {
        Some(row) => secret_from_row(&row),
        None => Err(StoreError::not_found("secret", &name)),
    }
}

pub(super) async fn list_secrets(pool: &SqlitePool, page: &PageRequest) -> Result<Page<Secret>> {
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM secrets")
        .fetch_one(pool)
        .await?;
    let after = page.after.as_deref().unwrap_or("");
    codec::reject_nul("a cursor", after)?;
    let rows = sqlx::query(concat!(
        "SELECT ",
        secret_columns!(),
        " FROM secrets WHERE name > $1 ORDER BY name LIMIT $2"
    ))
    .bind(after)
    .bind(paging::fetch_limit(page))
    .fetch_all(pool)
    .await?;
    let items = rows
        .iter()
        .map(secret_from_row)
        .collect::<Result<Vec<_>>>()?;
    Ok(paging::finish(page, items, total, |s| s.name.clone()))
}

pub(super) async fn delete_secret(pool: &SqlitePool, name: &str) -> Result<()> {
    codec::check_secret_name(name)?;
    let done = sqlx::query("DELETE FROM secrets WHERE name = $1")
        .bind(name)
        .execute(pool)
        .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::not_found("secret", &name));
    }
    Ok(())
}

pub(super) async fn sealed_samples(pool: &SqlitePool) -> Result<Vec<SealedRef>> {
    let providers = sqlx::query(concat!(
        "SELECT id, ",
        sealed_columns!(),
        " FROM providers WHERE id IN (SELECT MIN(id) FROM providers GROUP BY key_id) ORDER BY id"
    ))
    .fetch_all(pool)
    .await?;
    let secrets = sqlx::query(concat!(
        "SELECT name, ",
        sealed_columns!(),
        " FROM secrets WHERE name IN (SELECT MIN(name) FROM secrets GROUP BY key_id) \
         ORDER BY name"
    ))
    .fetch_all(pool)
    .await?;
    let mut samples = Vec::with_capacity(providers.len() + secrets.len());
    for row in &providers {
        samples.push(SealedRef {
            owner: SealedOwner::ProviderKey(parse_id(
                "provider id",
                row.try_get("id")?,
                ProviderId::parse,
            )?),
            sealed: sealed_from_row(row)?,
        });
    }
    for row in &secrets {
        samples.push(SealedRef {
            owner: SealedOwner::Secret(row.try_get("name")?),
            sealed: sealed_from_row(row)?,
        });
    }
    Ok(samples)
}

pub(super) async fn replace_sealed(
    pool: &SqlitePool,
    owner: &SealedOwner,
    current: &Sealed,
    new: &Sealed,
) -> Result<bool> {
    codec::check_sealed(new)?;
    let (sql, key) = match owner {
        SealedOwner::ProviderKey(id) => (
            "UPDATE providers SET key_id = $3, wrapped_key = $4, key_nonce = $5, nonce = $6, \
             ciphertext = $7 WHERE id = $1 AND nonce = $2",
            id.as_str(),
        ),
        SealedOwner::Secret(name) => (
            "UPDATE secrets SET key_id = $3, wrapped_key = $4, key_nonce = $5, nonce = $6, \
             ciphertext = $7 WHERE name = $1 AND nonce = $2",
            name.as_str(),
        ),
    };
    codec::reject_nul("a secret name", key)?;
    let done = sqlx::query(sql)
        .bind(key)
        .bind(&current.nonce)
        .bind(&new.key_id)
        .bind(&new.wrapped_key)
        .bind(&new.key_nonce)
        .bind(&new.nonce)
        .bind(&new.ciphertext)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}
