//! The engine as the stage keeps it: the states and buffered evidence changed since the last
//! commit, the whole of it to store or restore, and a customer forgotten.

use std::cmp::Reverse;

use super::{Buffered, Evidence, EvidenceId, Key, State, Tracked, VisitEngine, VisitParams};

impl VisitEngine {
    /// The states changed since the last call (`None`: the key is gone), for the stage to
    /// commit with its offset.
    pub fn take_changes(&mut self) -> Vec<(Key, Option<State>)> {
        let dirty = std::mem::take(&mut self.dirty);
        let mut out: Vec<(Key, Option<State>)> = dirty
            .into_iter()
            .map(|k| {
                let state = self.states.get(&k).map(|t| t.state.clone());
                (k, state)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Deadlines up to this event time have fired, and evidence at or before it is late (a
    /// backlog); the last tick's log time less the reorder window.
    pub fn watermark_ms(&self) -> i64 {
        self.watermark_ms
    }

    /// Every state and the reorder buffer, in a stable order (tests compare engines).
    #[cfg(test)]
    pub(crate) fn snapshot(&self) -> (Vec<(Key, State)>, Buffered) {
        let mut states: Vec<(Key, State)> = self
            .states
            .iter()
            .map(|(k, t)| (k.clone(), t.state.clone()))
            .collect();
        states.sort_by(|a, b| a.0.cmp(&b.0));
        (states, self.buffered())
    }

    /// A key's state now.
    pub fn state(&self, key: &Key) -> Option<&State> {
        self.states.get(key).map(|t| &t.state)
    }

    /// The evidence buffered since the last call and still buffered, and the ids of evidence
    /// stored before that has left the buffer since (applied or forgotten), for the stage to
    /// commit; ordered as [`VisitEngine::buffered`] orders them.
    pub fn take_buffer_changes(&mut self) -> (Vec<Evidence>, Vec<EvidenceId>) {
        let mut added: Vec<Evidence> = std::mem::take(&mut self.unstored)
            .into_iter()
            .filter_map(|i| self.pending.get(&i).cloned())
            .collect();
        added.sort_by(Self::buffer_order);
        (added, std::mem::take(&mut self.left_buffer))
    }

    /// Treats the whole buffer as not stored yet (restored from a format the stage replaces).
    pub fn unstore_buffer(&mut self) {
        self.unstored = self.pending.keys().copied().collect();
        self.left_buffer.clear();
    }

    /// Takes evidence `i` out of the buffer, noting it for the stage if it was stored.
    pub(super) fn unbuffer(&mut self, i: usize) -> Option<Evidence> {
        let e = self.pending.remove(&i)?;
        if !self.unstored.remove(&i) {
            self.left_buffer.push(e.id());
        }
        Some(e)
    }

    /// The order evidence tied on time and offset (one record's evidence for a zone and its
    /// store) is applied in: customer, then scope, as it was buffered.
    pub(super) fn buffer_order(a: &Evidence, b: &Evidence) -> std::cmp::Ordering {
        (a.at_ms, a.offset, &a.customer, &a.scope).cmp(&(b.at_ms, b.offset, &b.customer, &b.scope))
    }

    /// The reorder buffer and watermark, for the stage to commit.
    pub fn buffered(&self) -> Buffered {
        let mut evidence: Vec<Evidence> = self.pending.values().cloned().collect();
        evidence.sort_by(Self::buffer_order);
        Buffered {
            watermark_ms: self.watermark_ms,
            evidence,
        }
    }

    /// An engine as a stage committed it: its states and buffer (the buffer in any order;
    /// all of it counts as stored).
    pub fn restore(
        params: VisitParams,
        id_key: [u8; 32],
        states: Vec<(Key, State)>,
        buffered: Buffered,
    ) -> VisitEngine {
        let mut engine = VisitEngine::new(params, id_key);
        engine.watermark_ms = buffered.watermark_ms;
        for (key, state) in states {
            let d = engine.deadline(&state);
            engine.deadlines.push(Reverse((d, key.clone())));
            engine.put(
                key,
                Tracked {
                    state,
                    scheduled_ms: d,
                },
            );
        }
        let mut evidence = buffered.evidence;
        evidence.sort_by(Self::buffer_order);
        for e in evidence {
            let i = engine.next_pending;
            engine.next_pending += 1;
            engine.buffer.push(Reverse((e.at_ms, e.offset, i)));
            engine.pending.insert(i, e);
        }
        engine
    }

    /// Forgets a customer (an erasure): their states and the evidence about them still in the
    /// reorder buffer; returns how many of each. The states' removal shows in the next
    /// [`VisitEngine::take_changes`].
    pub fn forget(&mut self, customer: &str) -> (usize, usize) {
        let keys: Vec<Key> = self
            .states
            .keys()
            .filter(|(c, _)| c == customer)
            .cloned()
            .collect();
        for k in &keys {
            self.take(k);
            self.unlist(k);
            self.dirty.insert(k.clone());
        }
        self.deadlines.retain(|Reverse((_, (c, _)))| c != customer);
        let theirs: Vec<usize> = self
            .pending
            .iter()
            .filter(|(_, e)| e.customer == customer)
            .map(|(i, _)| *i)
            .collect();
        for i in &theirs {
            self.unbuffer(*i);
        }
        let pending = &self.pending;
        self.buffer
            .retain(|Reverse((_, _, i))| pending.contains_key(i));
        (keys.len(), theirs.len())
    }
}
