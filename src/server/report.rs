//! Reports on the mapping sources, kept apart from the sources themselves: whether each has
//! loaded (`mapping_source_ready`), and which of its mappings the guard rails skip
//! (`mappings_skipped`, one WARN line per skipped mapping when it appears, one INFO line when it
//! goes away). It looks at each source's snapshot, so it works the same for every source.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::mapping::{Chain, Index, Skipped};
use crate::metrics::{Metrics, SourceLabel};

/// Runs for the life of the server, checking every `interval`.
pub async fn watch_sources(chain: Chain, metrics: Arc<Metrics>, interval: Duration) {
    let mut seen: Vec<(Option<Arc<Index>>, HashSet<String>)> =
        vec![(None, HashSet::new()); chain.sources().len()];
    for source in chain.sources() {
        // Every configured source has its series from start-up.
        metrics.mapping_refused_init(source.name());
    }
    loop {
        for (source, (last_index, last_skipped)) in chain.sources().iter().zip(seen.iter_mut()) {
            let label = SourceLabel {
                source: source.name().to_string(),
            };
            metrics
                .mapping_source_ready
                .get_or_create(&label)
                .set(i64::from(source.ready()));
            let index = source.index();
            if last_index.as_ref().is_some_and(|l| Arc::ptr_eq(l, &index)) {
                continue;
            }
            *last_index = Some(index);
            let skipped = chain.skipped_in(source.as_ref());
            metrics
                .mappings_skipped
                .get_or_create(&label)
                .set(i64::try_from(skipped.len()).unwrap_or(i64::MAX));
            let now: HashSet<String> = skipped.iter().map(describe).collect();
            for s in &skipped {
                if !last_skipped.contains(&describe(s)) {
                    tracing::warn!(source = s.source, entry = %s.origin, reason = %s.reserved, "mapping skipped");
                }
            }
            for gone in last_skipped.difference(&now) {
                tracing::info!(source = source.name(), entry = %gone, "a skipped mapping is gone");
            }
            *last_skipped = now;
        }
        tokio::time::sleep(interval).await;
    }
}

fn describe(s: &Skipped) -> String {
    format!("{} ({})", s.origin, s.reserved)
}
