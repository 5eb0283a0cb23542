//! A tenant's documents: stored sealed and chunked, fingerprinted for the guard,
//! indexed for retrieval, and every access logged in the tenant's log — a read's
//! content leaves only once its event is durable. A malformed, missing or foreign
//! id is the same `NotFound`, logged as a denied access.

use bulkhead_audit::{Attr, Subject};
use bulkhead_types::{DocumentId, LogId};
use bulkhead_vault::{
    Document, DocumentPage, NewChunk, NewDocument, StoredDocument, TenantCtx, VaultError,
};

use crate::error::{AppError, AppResult};
use crate::kinds::EventKind;
use crate::services::Services;
use crate::trail::{RequestId, Trail, denial_reason};

/// A document as a tenant hands it in.
#[derive(Debug)]
pub struct DocumentInput {
    pub id: Option<DocumentId>,
    pub text: String,
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    pub ttl_seconds: Option<u64>,
}

/// Logs a tenant's document access that was refused (a missing or foreign id, an
/// id taken) and hands the error back.
async fn refused(
    app: &Services,
    ctx: &TenantCtx,
    rid: &RequestId,
    kind: EventKind,
    id: Option<&DocumentId>,
    e: VaultError,
) -> AppError {
    if let Some(reason) = denial_reason(&e) {
        let mut trail = Trail::tenant(app, ctx, kind, rid).denied(reason);
        if let Some(id) = id {
            trail = trail.subject(Subject::new("document", id.as_str()));
        }
        if let Err(audit) = trail.record(LogId::Tenant(ctx.tenant().clone())).await {
            return audit;
        }
    }
    e.into()
}

/// The document an id names, or a logged `NotFound`: a malformed id is refused
/// like a missing one, and both are denied accesses.
async fn named_document(
    app: &Services,
    ctx: &TenantCtx,
    rid: &RequestId,
    kind: EventKind,
    raw: &str,
) -> AppResult<DocumentId> {
    match DocumentId::parse(raw) {
        Ok(id) => Ok(id),
        Err(_) => Err(refused(app, ctx, rid, kind, None, VaultError::NotFound).await),
    }
}

/// Stores a document: chunked and embedded, sealed with its chunks in one
/// write, fingerprinted, indexed, logged. Returns it and its number of chunks.
pub async fn create(
    app: &Services,
    ctx: &TenantCtx,
    rid: &RequestId,
    input: DocumentInput,
) -> AppResult<(StoredDocument, usize)> {
    let content = Subject::new("document", "").with_content(input.text.as_bytes());
    let requested_id = input.id.clone();
    let metadata = input.metadata.clone().unwrap_or_default();
    // Only the embedder of the tenant's region may see its text; a region
    // without one stores the document without vectors (BM25 still finds it).
    let embedder = app.retrieval.embedder_for(app, ctx.tenant()).await?;
    let embedder = embedder.embedder();
    if embedder.is_some() {
        // The embedding budget is spent before anything reaches the embedder.
        app.quotas
            .spend_embedding(ctx.tenant(), input.text.len() as u64)
            .await?;
    }
    let chunks = app
        .retrieval
        .prepare(ctx.tenant(), embedder, &input.text)
        .await?;
    let text = zeroize::Zeroizing::new(input.text.clone());
    let ttl_secs = pack_ttl(app, ctx, input.ttl_seconds).await?;
    let new = NewDocument {
        id: input.id,
        text: input.text,
        metadata: input.metadata,
        ttl_secs,
    };
    let stored = match app
        .vault
        .put_document_chunked(ctx, new, chunks_for_store(&chunks))
        .await
    {
        Ok(stored) => stored,
        Err(e) => {
            let kind = EventKind::DocumentCreate;
            return Err(refused(app, ctx, rid, kind, requested_id.as_ref(), e).await);
        }
    };
    app.retrieval
        .after_insert(ctx.tenant(), &stored.id, &metadata, &chunks)
        .await;
    app.guard.index(ctx.tenant(), &stored.id, &text).await;
    Trail::tenant(app, ctx, EventKind::DocumentCreate, rid)
        .subject(Subject {
            id: stored.id.to_string(),
            ..content
        })
        .attr("chunks", Attr::Int(chunks.len() as i64))
        .record(LogId::Tenant(ctx.tenant().clone()))
        .await?;
    Ok((stored, chunks.len()))
}

/// A document's TTL under the tenant's pack: the pack's default when the client
/// names none, and never beyond the pack's maximum.
async fn pack_ttl(app: &Services, ctx: &TenantCtx, asked: Option<u64>) -> AppResult<Option<u64>> {
    let pack = app
        .packs
        .for_tenant(&app.vault.tenant(ctx.tenant()).await?.policy);
    let r = &pack.retention;
    match (asked, r.document_ttl_secs_max) {
        (Some(t), Some(max)) if t > max => Err(AppError::invalid(format!(
            "ttl_seconds may be at most {max} under the tenant's policy `{}`",
            pack.name
        ))),
        (Some(t), _) => Ok(Some(t)),
        (None, max) => Ok(r.document_ttl_secs_default.or(max)),
    }
}

/// One of the tenant's documents, opened; its read is logged (with the
/// content's hash) before it is returned.
pub async fn read(
    app: &Services,
    ctx: &TenantCtx,
    rid: &RequestId,
    raw_id: &str,
) -> AppResult<Document> {
    let id = named_document(app, ctx, rid, EventKind::DocumentRead, raw_id).await?;
    let found = app.vault.document(ctx, &id).await;
    // Test-only: the forgotten tenant filter `bulkhead probe` must catch.
    #[cfg(feature = "weakened-isolation-for-tests")]
    let found = match found {
        Err(VaultError::NotFound) if app.weakened => {
            crate::weakened::document_anywhere(&app.vault, &id)
                .await
                .ok_or(VaultError::NotFound)
        }
        other => other,
    };
    let doc = match found {
        Ok(doc) => doc,
        Err(e) => {
            return Err(refused(app, ctx, rid, EventKind::DocumentRead, Some(&id), e).await);
        }
    };
    Trail::tenant(app, ctx, EventKind::DocumentRead, rid)
        .subject(Subject::new("document", id.as_str()).with_content(doc.text.as_bytes()))
        .record(LogId::Tenant(ctx.tenant().clone()))
        .await?;
    Ok(doc)
}

/// A page of the tenant's documents; every document listed is logged.
pub async fn list(
    app: &Services,
    ctx: &TenantCtx,
    rid: &RequestId,
    cursor: Option<&str>,
    limit: u32,
) -> AppResult<DocumentPage> {
    let page = app.vault.list_documents(ctx, cursor, limit).await?;
    let mut trail = Trail::tenant(app, ctx, EventKind::DocumentList, rid)
        .attr("count", Attr::Int(page.documents.len() as i64));
    for d in &page.documents {
        trail =
            trail.subject(Subject::new("document", d.id.as_str()).with_content(d.text.as_bytes()));
    }
    trail.record(LogId::Tenant(ctx.tenant().clone())).await?;
    Ok(page)
}

/// Deletes one of the tenant's documents, its chunks, its fingerprints and its
/// place in the hot index.
pub async fn remove(
    app: &Services,
    ctx: &TenantCtx,
    rid: &RequestId,
    raw_id: &str,
) -> AppResult<()> {
    let kind = EventKind::DocumentDelete;
    let id = named_document(app, ctx, rid, kind, raw_id).await?;
    // The text is needed to take exactly this document's fingerprints out of the
    // guard's map.
    let doc = match app.vault.document(ctx, &id).await {
        Ok(doc) => doc,
        Err(e) => return Err(refused(app, ctx, rid, kind, Some(&id), e).await),
    };
    if let Err(e) = app.vault.delete_document(ctx, &id).await {
        return Err(refused(app, ctx, rid, kind, Some(&id), e).await);
    }
    app.retrieval.after_delete(ctx.tenant(), &id).await;
    app.guard.unindex(ctx.tenant(), &id, &doc.text);
    Trail::tenant(app, ctx, kind, rid)
        .subject(Subject::new("document", id.as_str()))
        .record(LogId::Tenant(ctx.tenant().clone()))
        .await
}

/// The vault takes its own copies of the chunks (it seals and wipes them); the
/// originals stay for the hot index.
fn chunks_for_store(chunks: &[NewChunk]) -> Vec<NewChunk> {
    chunks
        .iter()
        .map(|c| NewChunk {
            index: c.index,
            text: c.text.clone(),
            embedding: c.embedding.clone(),
        })
        .collect()
}
