//! Which layout stored bytes were written in. bincode is not self-describing, so the
//! storage layer, which knows each value's format version, decodes old bytes inside
//! [`decode_as`], and the types that grew read only the fields their layout had.

use serde::{Deserialize, Deserializer};
use std::cell::Cell;

/// The layouts of the domain's types, oldest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Layout {
    /// Orders without their tax rate and returns (`Order`).
    BeforeReturns,
    /// Stores without `utc_offset_minutes`, products without lead and safety days, states
    /// without sales counters.
    BeforeAnalytics,
    /// States without the transfers they received.
    BeforeTransfers,
    /// What this build writes.
    Current,
}

thread_local! {
    static LAYOUT: Cell<Layout> = const { Cell::new(Layout::Current) };
}

/// Runs `decode` with every value in it read as `layout` wrote it.
pub fn decode_as<T>(layout: Layout, decode: impl FnOnce() -> T) -> T {
    struct Restore(Layout);
    impl Drop for Restore {
        fn drop(&mut self) {
            LAYOUT.set(self.0);
        }
    }
    let _restore = Restore(LAYOUT.replace(layout));
    decode()
}

/// The layout being decoded.
pub fn current() -> Layout {
    LAYOUT.get()
}

/// Reads a field added in the layout after `before`: in bytes of `before` or older it is
/// absent (nothing is read) and takes `default`.
pub fn added_after<'de, D, T>(before: Layout, default: T, d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    if current() <= before {
        Ok(default)
    } else {
        T::deserialize(d)
    }
}
