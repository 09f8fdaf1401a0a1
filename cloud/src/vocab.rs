//! Words every part of the cloud shares, kept below them all so none has to import another
//! concept's module for them.

use serde::{Deserialize, Serialize};

/// Where a purchase was made: at a store's till or in the brand's online shop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SaleChannel {
    Store,
    Online,
}
