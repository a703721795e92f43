//! The ledger in Postgres: the counts each page stated and the marks each
//! chain page left (both written in the landing transaction), and, for the
//! finalizer, what each partition's pages add up to.
//!
//! The records a page delivered are kept on its task row (`page_tasks.records`),
//! so fanned-out leaves landing in parallel never share a row to lock.

use deadpool_postgres::Transaction;
use uuid::Uuid;

use super::{Store, StoreError};
use crate::pagination::{Counts, Statement};
use crate::verification::{PartitionLedger, Sentinel, StatedRange};

/// A mark a chain page made that an earlier page of its partition had
/// already made.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Repeat {
    pub mark: String,
    pub earlier_page: i64,
}

/// Records the counts a page stated.
pub(super) async fn record_statements(
    tx: &Transaction<'_>,
    export_id: Uuid,
    partition_no: i32,
    page_no: i64,
    stated: &[Statement],
) -> Result<(), StoreError> {
    if stated.is_empty() {
        return Ok(());
    }
    let counts: Vec<&str> = stated.iter().map(|s| s.counts.as_str()).collect();
    let origins: Vec<&str> = stated.iter().map(|s| s.origin.as_str()).collect();
    // A count past i64::MAX is saturated: it disagrees with any delivery
    // just the same.
    let values: Vec<i64> = stated
        .iter()
        .map(|s| i64::try_from(s.value).unwrap_or(i64::MAX))
        .collect();
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO stated_counts (export_id, partition_no, page_no, counts, origin, value)
         SELECT $1, $2, $3, c, o, v FROM unnest($4::text[], $5::text[], $6::int8[]) AS t(c, o, v)
         ON CONFLICT DO NOTHING",
        )
        .await?,
        &[
            &export_id,
            &partition_no,
            &page_no,
            &counts,
            &origins,
            &values,
        ],
    )
    .await?;
    Ok(())
}

/// Leaves a chain page's marks; the first one an earlier page of the
/// partition already left, if any (then the caller rolls back).
pub(super) async fn leave_marks(
    tx: &Transaction<'_>,
    export_id: Uuid,
    partition_no: i32,
    page_no: i64,
    marks: &[String],
) -> Result<Option<Repeat>, StoreError> {
    if marks.is_empty() {
        return Ok(None);
    }
    let repeated = tx
        .query_opt(
            &tx.prepare_cached(
                "SELECT mark, page_no FROM chain_marks
              WHERE export_id = $1 AND partition_no = $2 AND mark = ANY($3) AND page_no <> $4
              ORDER BY page_no LIMIT 1",
            )
            .await?,
            &[&export_id, &partition_no, &marks, &page_no],
        )
        .await?;
    if let Some(row) = repeated {
        return Ok(Some(Repeat {
            mark: row.try_get("mark")?,
            earlier_page: row.try_get("page_no")?,
        }));
    }
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO chain_marks (export_id, partition_no, mark, page_no)
         SELECT $1, $2, m, $3 FROM unnest($4::text[]) AS m
         ON CONFLICT DO NOTHING",
        )
        .await?,
        &[&export_id, &partition_no, &page_no, &marks],
    )
    .await?;
    Ok(None)
}

impl Store {
    /// What each partition's landed pages add up to, and what the source
    /// stated along the way, in partition order.
    pub async fn ledger(&self, export_id: Uuid) -> Result<Vec<PartitionLedger>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &client
                    .prepare_cached(
                        "SELECT p.partition_no, p.backward_pass,
                        count(t.id) FILTER (WHERE t.role <> 'backward') AS pages_landed,
                        count(t.id) FILTER (WHERE t.records IS NULL) AS pages_unrecorded,
                        count(t.id) FILTER (WHERE t.role = 'sentinel') AS sentinel_pages,
                        COALESCE(sum(t.records) FILTER (WHERE t.role = 'sentinel'), 0)::int8
                            AS sentinel_records,
                        count(t.id) FILTER (WHERE t.role <> 'backward' AND t.records > 0)
                            AS pages_with_records,
                        COALESCE(sum(t.records) FILTER (WHERE t.role <> 'backward'), 0)::int8
                            AS records_delivered,
                        count(t.id) FILTER (WHERE t.role = 'backward') AS pages_reread
                   FROM partitions p
                   LEFT JOIN page_tasks t ON t.export_id = p.export_id
                        AND t.partition_no = p.partition_no AND t.state = 'done'
                  WHERE p.export_id = $1 AND NOT p.split
                  GROUP BY p.partition_no, p.backward_pass ORDER BY p.partition_no",
                    )
                    .await?,
                &[&export_id],
            )
            .await?;
        let mut ledgers = Vec::with_capacity(rows.len());
        for row in rows {
            ledgers.push(PartitionLedger {
                partition_no: row.try_get("partition_no")?,
                pages_landed: count(row.try_get("pages_landed")?),
                pages_with_records: count(row.try_get("pages_with_records")?),
                records_delivered: count(row.try_get("records_delivered")?),
                unrecorded_pages: count(row.try_get("pages_unrecorded")?),
                sentinel: Sentinel {
                    pages: count(row.try_get("sentinel_pages")?),
                    records: count(row.try_get("sentinel_records")?),
                },
                reread_pages: row
                    .try_get::<_, bool>("backward_pass")?
                    .then(|| row.try_get("pages_reread").map(count))
                    .transpose()?,
                stated: Vec::new(),
            });
        }
        for (partition_no, range) in self.stated_ranges(export_id).await? {
            if let Some(l) = ledgers.iter_mut().find(|l| l.partition_no == partition_no) {
                l.stated.push(range);
            }
        }
        Ok(ledgers)
    }

    /// Every (partition, count, origin) the source stated, with the values
    /// on its first and latest page and the range between. Counts stated by
    /// empty pages past the first are left out: many sources state 0 past
    /// their end, which is no statement about the data.
    async fn stated_ranges(&self, export_id: Uuid) -> Result<Vec<(i32, StatedRange)>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &client
                    .prepare_cached(
                        "SELECT s.partition_no, s.counts, s.origin,
                        (array_agg(s.value ORDER BY s.page_no))[1] AS first,
                        (array_agg(s.value ORDER BY s.page_no DESC))[1] AS last,
                        min(s.value) AS min, max(s.value) AS max
                   FROM stated_counts s
                   JOIN page_tasks t ON t.export_id = s.export_id
                        AND t.partition_no = s.partition_no AND t.page_no = s.page_no
                  WHERE s.export_id = $1 AND (t.records > 0 OR s.page_no = 0)
                  GROUP BY s.partition_no, s.counts, s.origin
                  ORDER BY s.partition_no, s.counts DESC, min(s.page_no), s.origin",
                    )
                    .await?,
                &[&export_id],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let counts: String = row.try_get("counts")?;
                let counts: Counts = counts.parse()?;
                let range = StatedRange {
                    counts,
                    origin: row.try_get("origin")?,
                    first: count(row.try_get("first")?),
                    last: count(row.try_get("last")?),
                    min: count(row.try_get("min")?),
                    max: count(row.try_get("max")?),
                };
                Ok((row.try_get("partition_no")?, range))
            })
            .collect()
    }
}

impl Store {
    /// Sends the partitions whose data moved under a shifting style back
    /// for a backward pass: every page that held records, read again last
    /// first, one at a time (see migration 5). The export goes back to
    /// `running`; the pass's last landing finalizes it again. Returns the
    /// outbox ids of the passes' first pages; empty (and nothing changed)
    /// when the export was no longer finalizing or no page held records.
    pub async fn plan_backward_pass(
        &self,
        export_id: Uuid,
        partitions: &[i32],
    ) -> Result<Vec<i64>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let reopened = tx
            .execute(
                &tx.prepare_cached(
                    "UPDATE exports SET state = 'running', updated_at = now()
                  WHERE id = $1 AND state = 'finalizing'",
                )
                .await?,
                &[&export_id],
            )
            .await?;
        if reopened == 0 {
            return Ok(Vec::new());
        }
        let mut outbox_ids = Vec::new();
        for &partition_no in partitions {
            outbox_ids.extend(plan_partition_pass(&tx, export_id, partition_no).await?);
        }
        if outbox_ids.is_empty() {
            // Nothing to read again (no page held records): leave the
            // export finalizing, as it was; dropping the transaction
            // rolls the reopening back.
            return Ok(Vec::new());
        }
        tx.execute(
            &tx.prepare_cached(
                "UPDATE exports SET pages_planned = pages_planned + $2 WHERE id = $1",
            )
            .await?,
            &[&export_id, &(outbox_ids.len() as i64)],
        )
        .await?;
        tx.commit().await?;
        Ok(outbox_ids)
    }
}

/// Plans one partition's backward pass and queues its first page.
async fn plan_partition_pass(
    tx: &Transaction<'_>,
    export_id: Uuid,
    partition_no: i32,
) -> Result<Option<i64>, StoreError> {
    // The pass's pages are numbered on from the partition's last page, in
    // the order they run: the highest position first (page numbers rise
    // with positions in the forward pass).
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO backward_passes (export_id, partition_no, page_no, position)
         SELECT export_id, partition_no,
                (SELECT max(page_no) FROM page_tasks
                  WHERE export_id = $1 AND partition_no = $2)
                + row_number() OVER (ORDER BY page_no DESC),
                position
           FROM page_tasks
          WHERE export_id = $1 AND partition_no = $2 AND state = 'done'
            AND role <> 'backward' AND records > 0",
        )
        .await?,
        &[&export_id, &partition_no],
    )
    .await?;
    tx.execute(
        &tx.prepare_cached(
            "UPDATE partitions SET planned_all = false, backward_pass = true
          WHERE export_id = $1 AND partition_no = $2",
        )
        .await?,
        &[&export_id, &partition_no],
    )
    .await?;
    let first = tx
        .query_opt(
            &tx.prepare_cached(
                "WITH first AS (
                 INSERT INTO page_tasks (id, tenant_id, export_id, partition_no, page_no, position,
                                         role, overrides)
                 SELECT $3, e.tenant_id, b.export_id, b.partition_no, b.page_no, b.position,
                        'backward',
                        -- A secret an edited replay gave the partition goes on.
                        (SELECT t.overrides - 'page_size' FROM page_tasks t
                          WHERE t.export_id = b.export_id AND t.partition_no = b.partition_no
                            AND t.overrides IS NOT NULL
                          ORDER BY t.page_no DESC LIMIT 1)
                   FROM backward_passes b JOIN exports e ON e.id = b.export_id
                  WHERE b.export_id = $1 AND b.partition_no = $2
                  ORDER BY b.page_no LIMIT 1
                 RETURNING id)
             INSERT INTO outbox (queue, body)
             SELECT 'pages', pagefleet_page_message($1, id) FROM first
             RETURNING id",
            )
            .await?,
            &[&export_id, &partition_no, &crate::model::new_id()],
        )
        .await?;
    match first {
        Some(row) => Ok(Some(row.try_get("id")?)),
        None => {
            // Nothing held records: nothing to re-read.
            tx.execute(
                &tx.prepare_cached(
                    "UPDATE partitions SET planned_all = true
                  WHERE export_id = $1 AND partition_no = $2",
                )
                .await?,
                &[&export_id, &partition_no],
            )
            .await?;
            Ok(None)
        }
    }
}

/// A count Postgres returns as `int8`; never negative here.
fn count(n: i64) -> u64 {
    n.max(0) as u64
}
