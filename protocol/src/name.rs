//! The wire names of the protocol's closed sets (run states, error codes, call statuses, ...):
//! each enum's serde name, its `as_str`, `Display`, `FromStr`, and comparison with a `&str`,
//! all from one list so that they cannot disagree.

/// A name that is not one of its set's (e.g. a run state read back from the database that this
/// build does not know).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{name}`{hint}")]
pub struct UnknownName {
    /// What the set is, e.g. "run state".
    pub what: &'static str,
    pub name: String,
    /// Appended to the message, e.g. " (admin, user or worker)"; empty for most sets.
    pub hint: &'static str,
}

/// Gives an enum whose serde names are the listed strings its `ALL`, `as_str`, `Display`,
/// `FromStr` (erring with [`UnknownName`]) and `PartialEq<&str>` (so that a record's status
/// compares with `"ok"` as it did when it was a string).
macro_rules! wire_names {
    ($ty:ident, $what:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The wire name (as JSON, the database and metrics spell it).
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $ty {
            type Err = $crate::name::UnknownName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $ty::ALL.iter().copied().find(|v| v.as_str() == s).ok_or_else(|| $crate::name::UnknownName {
                    what: $what,
                    name: s.to_string(),
                    hint: "",
                })
            }
        }

        impl PartialEq<str> for $ty {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $ty {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}
