//! Catalog reads for the API: consistency, blocking queries, the `X-Consul-*` headers and
//! `?filter`.
//!
//! A blocking query (`?index=N`) re-runs its query until the query's own index differs from
//! N (moved on, or went back after a snapshot restore) or its deadline passes; between runs
//! it waits on the catalog's per-table index channels for exactly the tables the query reads
//! (no task or timer of its own), and the shutdown token ends the wait at once. The number of
//! queries waiting at once is bounded; beyond it the answer is 429.

use std::collections::BTreeMap;

use muster_server::{Catalog, Index, ReadMeta, Table};
use serde::Serialize;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

use super::Api;
use super::error::ApiError;
use super::filter::Filter;
use super::query::{ReadOptions, consistency_name};
use super::schema::Shape;
use axum::http::HeaderValue;
use axum::response::Response;

/// A catalog read and its metadata.
pub(crate) struct Read<T> {
    pub value: T,
    /// The query's index, never 0.
    pub index: Index,
    pub meta: ReadMeta,
}

/// A slot among the blocking queries allowed at once (none needed for `index` 0); 429 when
/// every slot is taken.
pub(crate) fn blocking_permit(
    slots: &Semaphore,
    index: Index,
) -> Result<Option<SemaphorePermit<'_>>, ApiError> {
    if index == 0 {
        return Ok(None);
    }
    slots.try_acquire().map(Some).map_err(|_| {
        ApiError::TooManyRequests(
            "Too many blocking queries are waiting on this agent; try again later".into(),
        )
    })
}

/// Runs `query` at the requested consistency, blocking as `opts` asks.
pub(crate) async fn blocking_read<T, F>(
    api: &Api,
    opts: &ReadOptions,
    tables: &[Table],
    query: F,
) -> Result<Read<T>, ApiError>
where
    F: Fn(&Catalog) -> (Index, T),
{
    let catalog = api.catalog()?;
    let _permit = blocking_permit(&api.blocking, opts.index)?;
    let cfg = api.config();
    let wait = opts.blocking_wait(
        cfg.http.default_query_time,
        cfg.http.max_query_time,
        rand::random::<f64>(),
    );
    let deadline = Instant::now() + wait;
    loop {
        let ((index, value), meta) = catalog.read(opts.consistency, &query).await?;
        // Consul never reports index 0: a client would spin on `?index=0`.
        let index = index.max(1);
        let done = opts.index == 0
            || index != opts.index
            || Instant::now() >= deadline
            || api.ctx.shutdown.is_cancelled();
        if done {
            return Ok(Read { value, index, meta });
        }
        let stopping = tokio::select! {
            biased;
            _ = api.ctx.shutdown.cancelled() => true,
            _ = catalog.wait_for_change(tables, opts.index, deadline) => false,
        };
        if stopping {
            // Answer as a timeout would: same content, same index.
            return Ok(Read { value, index, meta });
        }
    }
}

/// Adds `X-Consul-Index`, `X-Consul-KnownLeader`, `X-Consul-LastContact` and
/// `X-Consul-Effective-Consistency`.
pub(crate) fn with_meta(mut response: Response, index: Index, meta: &ReadMeta) -> Response {
    let headers = response.headers_mut();
    let last_contact = u64::try_from(meta.last_contact.as_millis()).unwrap_or(u64::MAX);
    let pairs = [
        ("x-consul-index", index.max(1).to_string()),
        ("x-consul-knownleader", meta.known_leader.to_string()),
        ("x-consul-lastcontact", last_contact.to_string()),
        (
            "x-consul-effective-consistency",
            consistency_name(meta.consistency).to_owned(),
        ),
    ];
    for (name, value) in pairs {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    response
}

/// Parses and validates `?filter` against the shape of the rows it will see.
pub(crate) fn parse_filter(
    filter: Option<&str>,
    shape: &Shape,
) -> Result<Option<Filter>, ApiError> {
    let Some(text) = filter else {
        return Ok(None);
    };
    let filter = Filter::parse(text)
        .and_then(|f| f.validate(shape).map(|()| f))
        .map_err(|e| ApiError::bad(format!("Invalid filter expression: {e}")))?;
    Ok(Some(filter))
}

/// Keeps the rows the filter matches (each is serialized to JSON to be matched; the rows
/// themselves are returned so they serialize in their own field order).
pub(crate) fn filter_rows<T: Serialize>(
    rows: impl IntoIterator<Item = T>,
    filter: Option<&Filter>,
    shape: &Shape,
) -> Result<Vec<T>, ApiError> {
    let Some(filter) = filter else {
        return Ok(rows.into_iter().collect());
    };
    let mut out = Vec::new();
    for row in rows {
        let value = serde_json::to_value(&row)
            .map_err(|e| ApiError::internal(format!("failed to encode a row: {e}")))?;
        let keep = filter
            .matches(&value, shape)
            .map_err(|e| ApiError::bad(format!("Invalid filter expression: {e}")))?;
        if keep {
            out.push(row);
        }
    }
    Ok(out)
}

/// Keeps the `(key, row)` pairs whose row the filter matches: for endpoints that answer a JSON
/// object keyed by ID, where Consul filters the values (never the keys).
pub(crate) fn filter_pairs<K: Ord, T: Serialize>(
    pairs: impl IntoIterator<Item = (K, T)>,
    filter: Option<&Filter>,
    shape: &Shape,
) -> Result<BTreeMap<K, T>, ApiError> {
    let mut out = BTreeMap::new();
    for (key, row) in pairs {
        if let Some(kept) = filter_rows([row], filter, shape)?.pop() {
            out.insert(key, kept);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocking_queries_beyond_the_bound_get_429() {
        let slots = Semaphore::new(2);
        let a = blocking_permit(&slots, 5).unwrap();
        let b = blocking_permit(&slots, 5).unwrap();
        assert!(a.is_some() && b.is_some());
        let refused = blocking_permit(&slots, 5).unwrap_err();
        assert_eq!(refused.status(), axum::http::StatusCode::TOO_MANY_REQUESTS);
        // Non-blocking reads never need a slot.
        assert!(blocking_permit(&slots, 0).unwrap().is_none());
        drop(a);
        assert!(blocking_permit(&slots, 5).unwrap().is_some());
    }
}
