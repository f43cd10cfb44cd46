//! The names of a set: checked, deduplicated and put in canonical order
//! before anything is sent.

use crate::error::{Error, Result};

use super::super::key;

/// Most names one set may hold. The acquire is one `Txn` whose queueing
/// branch has two operations per name (the put of my key and the read of
/// the name's first key); etcd refuses a `Txn` with more than
/// `--max-txn-ops` operations in one branch, 128 by default.
pub const MAX_SET_NAMES: usize = ETCD_MAX_TXN_OPS / OPS_PER_NAME;

/// etcd's default `--max-txn-ops`.
pub(crate) const ETCD_MAX_TXN_OPS: usize = 128;

/// Operations per name in the acquire's largest branch.
pub(crate) const OPS_PER_NAME: usize = 2;

/// Checks the names of a set and returns them deduplicated, in canonical
/// (byte) order: the order of the reservations and of the keys in every
/// transaction, whatever order the caller gave.
///
/// # Errors
/// [`Error::InvalidArgument`] for an empty set, a bad name (see
/// [`validate_name`](crate::validate_name)) or a name that is a `/`-prefix
/// of another (`a` and `a/b`: the queue of `a` holds every key of `a/b`);
/// [`Error::TooManyNames`] beyond [`MAX_SET_NAMES`].
pub(crate) fn canonical<I, S>(names: I) -> Result<Vec<String>>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut names: Vec<String> = names.into_iter().map(Into::into).collect();
    if names.is_empty() {
        return Err(Error::invalid("a set of locks needs at least one name"));
    }
    for name in &names {
        key::validate_name(name)?;
    }
    names.sort_unstable();
    names.dedup();
    if names.len() > MAX_SET_NAMES {
        return Err(Error::TooManyNames {
            count: names.len(),
            limit: MAX_SET_NAMES,
        });
    }
    // In byte order, a name's `/`-extensions follow it, though not always
    // right after it (`a`, `a.b`, `a/b`): check every later name.
    for (i, outer) in names.iter().enumerate() {
        let under = key::prefix(outer);
        if let Some(inner) = names[i + 1..].iter().find(|n| n.starts_with(&under)) {
            return Err(Error::invalid(format!(
                "lock names {outer:?} and {inner:?} cannot be in one set: the queue of {outer:?} holds every key of {inner:?}"
            )));
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_deduplicated_and_sorted_whatever_the_callers_order() {
        assert_eq!(canonical(["b", "a", "b", "c"]).unwrap(), ["a", "b", "c"]);
        assert_eq!(canonical(["x"]).unwrap(), ["x"]);
        // "ab" and "a" are separate queues (`a/` is not a prefix of `ab/`).
        assert_eq!(canonical(["ab", "a"]).unwrap(), ["a", "ab"]);
    }

    #[test]
    fn a_set_refuses_what_it_cannot_take_in_one_transaction() {
        assert!(matches!(
            canonical(Vec::<String>::new()),
            Err(Error::InvalidArgument { .. })
        ));
        assert!(matches!(
            canonical(["a", ""]),
            Err(Error::InvalidArgument { .. })
        ));
        for nested in [
            &["a", "a/b"][..],
            &["a/b/c", "a.x", "a"],
            &["q/r", "q/r/s/t"],
        ] {
            let e = canonical(nested.iter().copied()).unwrap_err();
            assert!(e.to_string().contains("cannot be in one set"), "{e}");
        }
        let many: Vec<String> = (0..=MAX_SET_NAMES).map(|i| format!("n{i}")).collect();
        assert!(canonical(many[..MAX_SET_NAMES].to_vec()).is_ok());
        let e = canonical(many).unwrap_err();
        assert!(
            matches!(
                e,
                Error::TooManyNames {
                    count: 65,
                    limit: 64
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("--max-txn-ops"), "{e}");
        // Duplicates do not count against the limit.
        let twice = (0..MAX_SET_NAMES).flat_map(|i| [format!("n{i}"), format!("n{i}")]);
        assert_eq!(canonical(twice).unwrap().len(), MAX_SET_NAMES);
    }
}
