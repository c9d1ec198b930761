//! Identity nodes and their values (decisions 0015 and 0028): `identity_nodes` holds what a
//! lookup of an identifier's owners needs, and is written at random places, so every byte in
//! its rows costs page writes on each group commit; the node's value (sealed) and provenance
//! are in `identity_values`, which only grows at its end.

use rusqlite::{Transaction, params};

use idgraph_store::StoreResult;

use crate::codec::map_error;

/// The SQL of a column of an identity node's row of `identity_values`, in a query of
/// `identity_nodes` alone (where [`NODE_FROM`] cannot be used, as in an `UPDATE`).
macro_rules! node_value_column {
    ($column:literal) => {
        concat!(
            "(SELECT v.",
            $column,
            " FROM identity_values v \
             WHERE v.tenant_id = identity_nodes.tenant_id AND v.value_id = identity_nodes.value_id)"
        )
    };
}

/// The SQL of an identity node's value as stored, in a query of `identity_nodes` alone: its
/// sealed value when it has one (open it with the vault), else `value`, the plain value.
pub(crate) const NODE_STORED_VALUE: &str = concat!(
    "COALESCE(",
    node_value_column!("sealed"),
    ", identity_nodes.value)"
);

/// The SQL of the signal that attached an identity node, in a query of `identity_nodes` alone.
pub(crate) const NODE_SIGNAL: &str = node_value_column!("signal_id");

/// The tables a node is read from with its value and provenance: `n`, the node, and `v`, its
/// row of `identity_values`.
pub(crate) const NODE_FROM: &str = "identity_nodes n JOIN identity_values v \
     ON v.tenant_id = n.tenant_id AND v.value_id = n.value_id";

/// The columns of [`crate::codec::identity_node`] from [`NODE_FROM`], the value as stored:
/// sealed when there is a sealed copy (open it with `Vault::open_nodes`), plain otherwise.
pub(crate) const NODE_COLUMNS: &str = "n.kind, COALESCE(v.sealed, n.value), n.person_id, \
     v.source, v.confidence, v.first_seen, n.last_seen, v.signal_id";

/// Hands out a tenant's `identity_values` ids after its last one, for one job on the writer
/// thread: the last id is read once, then counted up, instead of found again (a B-tree descent
/// and a `RETURNING` table) for every value. Only the writer thread writes, so no one else
/// takes an id meanwhile; a job that fails rolls its values back with it.
pub(crate) struct ValueIds<'a> {
    tenant: &'a str,
    next: Option<i64>,
}

impl<'a> ValueIds<'a> {
    pub(crate) fn new(tenant: &'a str) -> Self {
        Self { tenant, next: None }
    }

    /// Stores a node's value and provenance after the tenant's last values and returns its id
    /// for the node's `value_id`.
    fn insert(&mut self, tx: &Transaction<'_>, node: &NewNode<'_>) -> StoreResult<i64> {
        let id = match self.next {
            Some(id) => id,
            None => tx
                .prepare_cached(
                    "SELECT COALESCE(MAX(value_id), 0) + 1 FROM identity_values WHERE tenant_id = ?1",
                )
                .and_then(|mut s| s.query_row(params![self.tenant], |r| r.get(0)))
                .map_err(map_error)?,
        };
        tx.prepare_cached(
            "INSERT INTO identity_values (tenant_id, value_id, sealed, source, confidence, first_seen, signal_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .and_then(|mut s| {
            s.execute(params![
                self.tenant,
                id,
                node.sealed,
                node.source,
                node.confidence,
                node.first_seen,
                node.signal_id
            ])
        })
        .map_err(map_error)?;
        self.next = Some(id + 1);
        Ok(id)
    }

    /// Removes the value [`Self::insert`] stored last, which no node came to name.
    fn take_back(&mut self, tx: &Transaction<'_>, id: i64) -> StoreResult<()> {
        delete_value(tx, self.tenant, id)?;
        if self.next == Some(id + 1) {
            self.next = Some(id);
        }
        Ok(())
    }
}

/// Removes a value no node names any more.
fn delete_value(tx: &Transaction<'_>, tenant: &str, value_id: i64) -> StoreResult<()> {
    tx.prepare_cached("DELETE FROM identity_values WHERE tenant_id = ?1 AND value_id = ?2")
        .and_then(|mut s| s.execute(params![tenant, value_id]))
        .map_err(map_error)?;
    Ok(())
}

/// Inserts an identity node unless the tenant already has it (same kind, lookup value and
/// person), with its value and provenance. Returns whether it was inserted.
pub(crate) fn insert_node(
    tx: &Transaction<'_>,
    values: &mut ValueIds<'_>,
    node: &NewNode<'_>,
) -> StoreResult<bool> {
    let tenant = values.tenant;
    let value_id = values.insert(tx, node)?;
    let inserted = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO identity_nodes (tenant_id, kind, value, person_id, last_seen, value_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .and_then(|mut s| {
            s.execute(params![
                tenant,
                node.kind,
                node.value,
                node.person,
                node.last_seen,
                value_id
            ])
        })
        .map_err(map_error)?
        == 1;
    // The resolver only attaches identifiers a person lacks, so this is the rare path.
    if !inserted {
        values.take_back(tx, value_id)?;
    }
    Ok(inserted)
}

/// An identity node to insert, its value in lookup form (blind index or plain).
pub(crate) struct NewNode<'a> {
    pub kind: &'a str,
    pub value: &'a str,
    pub sealed: Option<&'a str>,
    pub person: &'a str,
    pub source: &'a str,
    pub confidence: f64,
    pub first_seen: i64,
    pub last_seen: i64,
    pub signal_id: Option<&'a str>,
}

/// Deletes a person's identity nodes and their values.
pub(crate) fn delete_person_nodes(
    tx: &Transaction<'_>,
    tenant: &str,
    person: &str,
) -> StoreResult<()> {
    tx.prepare_cached(
        "DELETE FROM identity_values WHERE tenant_id = ?1 AND value_id IN
         (SELECT value_id FROM identity_nodes WHERE tenant_id = ?1 AND person_id = ?2)",
    )
    .and_then(|mut s| s.execute(params![tenant, person]))
    .map_err(map_error)?;
    tx.prepare_cached("DELETE FROM identity_nodes WHERE tenant_id = ?1 AND person_id = ?2")
        .and_then(|mut s| s.execute(params![tenant, person]))
        .map_err(map_error)?;
    Ok(())
}
