//! One partition's part of the visit stage: its engine, how the engine is stored, where the
//! partition is in the log; a step's commit of what it folded, and an erasure.

use super::erasures::Request;
use super::journal::Journal;
use super::{write, Folded, Inputs, VisitRecord, VisitsErased, CONSUMER};
use crate::cluster::Partition;
use crate::profiles;
use crate::store::event_log::{
    advance, bump_revision, expect_at, expect_revision, position, revision,
};
use crate::store::{Commit, Space, Store, StoreError};
use crate::tallies::hours::{self as tally, VisitHours};
use crate::visits::engine::{Scope, VisitEngine};
use crate::visits::keys;

/// One partition's part of the stage: its engine, how it is stored, and where it is in the log.
pub(super) struct Part {
    pub partition: Partition,
    pub engine: VisitEngine,
    journal: Journal,
    /// The next offset it reads (what it last committed, or read at open).
    pub at: u64,
    /// The partition's revision as read at open (an erasure moves it on).
    revision: u64,
    /// A commit failed and opening again failed too: open before anything else.
    pub stale: bool,
}

impl Part {
    /// Restores `partition`'s engine as last committed.
    pub fn open(
        store: &dyn Store,
        inputs: &Inputs,
        partition: Partition,
    ) -> Result<Part, StoreError> {
        // The position first: a commit by another instance after it moves it (or the
        // revision), so this part's first commit conflicts rather than write what it missed.
        let consumer = partition.consumer(CONSUMER);
        let at = position(store, &consumer)?;
        let revision = revision(store, &consumer)?;
        let (journal, engine) =
            Journal::open(store, &partition.key_prefix(), inputs.params, inputs.id_key)?;
        Ok(Part {
            partition,
            engine,
            journal,
            at,
            revision,
            stale: false,
        })
    }

    /// After a commit that failed, the engine and journal are ahead of the store: starts again
    /// from what was committed (now, or before the next step if that fails too).
    pub fn reopen(&mut self, store: &dyn Store, inputs: &Inputs) {
        match Part::open(store, inputs, self.partition) {
            Ok(p) => *self = p,
            Err(e) => {
                tracing::warn!(partition = %self.partition, error = %e, "visit stage partition not reopened yet");
                self.stale = true;
            }
        }
    }

    fn consumer(&self) -> String {
        self.partition.consumer(CONSUMER)
    }

    /// Adds to `c` what a step folded for this partition — its transitions, the visits they
    /// change (their stores' tallies in `hours`), profiles, footfall (the first partition),
    /// what its engine changed — with its offset moved to `to`; `log_ms`: the step's last log
    /// time.
    pub fn stage(
        &mut self,
        (store, inputs): (&dyn Store, &Inputs),
        folded: &Folded,
        (log_ms, to): (i64, u64),
        (hours, c): (&mut VisitHours, &mut Commit),
    ) -> Result<(), StoreError> {
        let p = self.partition;
        write::transitions(store, p, &folded.transitions, (&inputs.id_key, hours), c)?;
        write::profiles(store, inputs, &folded.transitions, log_ms, c)?;
        write::footfall(store, &folded.footfall, c)?;
        self.journal.stage(&mut self.engine, log_ms, false, c);
        advance(c, &self.consumer(), folded.from, to);
        expect_revision(c, &self.consumer(), self.revision);
        Ok(())
    }

    /// Forgets `customer` in this partition's engine and stores that, with their profile,
    /// visits and visit indexes gone, in one commit that holds only while the partition is
    /// where this part last saw it; it moves the partition's revision on.
    pub fn erase(
        &mut self,
        store: &dyn Store,
        customer: &str,
        secret: &[u8; 32],
    ) -> Result<VisitsErased, StoreError> {
        let (visit_states, buffered_evidence) = self.engine.forget(customer);
        let mut c = Commit::new();
        expect_at(&mut c, &self.consumer(), self.at);
        // Any other instance holding this partition's engine from before conflicts at its
        // next commit and reads it again, without them.
        bump_revision(&mut c, &self.consumer(), self.revision);
        // The whole journal is folded into the base, so no entry about them stays.
        let log_ms = self.engine.watermark_ms();
        self.journal.stage(&mut self.engine, log_ms, true, &mut c);
        // Their profile goes in the same commit (the stage is its only writer).
        c.delete(Space::Profiles, profiles::profile_key(customer));
        let folded = profiles::keys::folded_prefix(customer);
        for (k, _) in crate::store::barrier::scan_prefix(
            store,
            Space::Profiles,
            folded.as_bytes(),
            usize::MAX,
        )? {
            c.delete(Space::Profiles, k);
        }
        let prefix = keys::customer_prefix(customer);
        let mut visits = 0;
        // The store report tallies of the hours they visited in forget them as a visitor.
        let mut hours = VisitHours::default();
        let visitor = tally::visitor(secret, customer);
        for (k, _) in
            crate::store::barrier::scan_prefix(store, Space::Visits, prefix.as_bytes(), usize::MAX)?
        {
            let id = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            let row = keys::visit(&id);
            if let Some(b) = store.get(Space::Visits, row.as_bytes())? {
                match serde_json::from_slice::<VisitRecord>(&b) {
                    Ok(v) => {
                        c.delete(
                            Space::Visits,
                            keys::in_scope(&v.scope, v.entered.millis(), &id),
                        );
                        if let Scope::Store(s) = &v.scope {
                            // Their partition's row, and the hour's row of before the split.
                            let at = v.entered.millis();
                            let shard = Some(self.partition.index());
                            hours.get(store, s, at, shard)?.forget(visitor);
                            hours.get(store, s, at, None)?.forget(visitor);
                        }
                    }
                    // Its scope index (the visit id alone) is left to retention.
                    Err(e) => {
                        tracing::warn!(error = %e, "unreadable visit erased without its scope index")
                    }
                }
                c.delete(Space::Visits, row);
                visits += 1;
            }
            c.delete(Space::Visits, k);
        }
        hours.write(&mut c);
        let erased = VisitsErased {
            visit_states,
            buffered_evidence,
            visits,
        };
        // Whoever asked reads what went from the request.
        Request::put_done(store, &mut c, customer, erased)?;
        store.commit(c)?;
        self.revision += 1;
        Ok(erased)
    }
}
