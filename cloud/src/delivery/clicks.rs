//! An offer's tracked link followed: the first visit counts a click for the delivery's
//! campaign and variant (`clicked` in the funnel, between delivered and redeemed); a test
//! send's link leads on and counts nothing.

use super::keys::{click_key, clicked_key};
use crate::store::{Commit, Space, Store, StoreError};
use crate::tallies::funnel::Counts;

/// Where the link with `token` leads, counting its first click; `None`: no such link.
pub fn click(store: &dyn Store, token: &str, now_ms: i64) -> Result<Option<String>, StoreError> {
    let Some(id) = store.get(Space::Campaigns, click_key(token).as_bytes())? else {
        return Ok(None);
    };
    let Some((d, _)) = super::read(store, &String::from_utf8_lossy(&id))? else {
        return Ok(None);
    };
    let Some(link) = d.link.clone() else {
        return Ok(None);
    };
    if d.test {
        return Ok(Some(link));
    }
    // Clicks at once on one variant's links: each counts its own delivery, re-reading the
    // variant's counter on a conflict.
    for _ in 0..50 {
        if store
            .get(Space::Campaigns, clicked_key(&d.id).as_bytes())?
            .is_some()
        {
            return Ok(Some(link));
        }
        let mut c = Commit::new();
        c.expect(Space::Campaigns, clicked_key(&d.id), None);
        c.put(
            Space::Campaigns,
            clicked_key(&d.id),
            now_ms.to_be_bytes().to_vec(),
        );
        let mut counts = Counts::default();
        counts.add(&d.campaign, &d.variant, "clicked");
        counts.add_counter(d.store_counter("clicked"));
        counts.write(store, &mut c)?;
        match store.commit(c) {
            Ok(()) => {
                metrics::counter!("omo_offer_clicks_total").increment(1);
                return Ok(Some(link));
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    tracing::warn!("a click could not be counted: its counter kept changing");
    Ok(Some(link))
}
