//! Checks on instances that well-typed rows can still fail. Ids, repos and commits end up in
//! container names, file paths and git command lines, so they are held to the shapes real
//! SWE-bench data has rather than to "any string".

use std::collections::hash_map::{Entry, HashMap};

use protocol::Instance;

use super::{shorten, Location, Problems};

/// Ids name containers and files: `django__django-11099`, `sphinx-doc__sphinx-8721`.
const MAX_ID_LEN: usize = 200;

pub(super) fn check<'a>(
    instances: impl IntoIterator<Item = (Location, &'a Instance)>,
    problems: &mut Problems,
) {
    let mut first_seen: HashMap<&str, Location> = HashMap::new();
    for (location, instance) in instances {
        for message in instance_problems(instance) {
            problems.push(location, message);
        }
        match first_seen.entry(&instance.instance_id) {
            Entry::Occupied(first) => problems.push(
                location,
                format!(
                    "duplicate instance_id {:?} (first at {})",
                    shorten(&instance.instance_id),
                    first.get()
                ),
            ),
            Entry::Vacant(slot) => {
                slot.insert(location);
            }
        }
    }
}

fn instance_problems(instance: &Instance) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(why) = check_instance_id(&instance.instance_id) {
        problems.push(format!("field \"instance_id\": {why}"));
    }
    if !is_repo(&instance.repo) {
        problems.push(format!("field \"repo\": {:?} is not of the form owner/name", shorten(&instance.repo)));
    }
    let commits = [
        ("base_commit", Some(&instance.base_commit)),
        ("environment_setup_commit", instance.environment_setup_commit.as_ref()),
    ];
    for (name, commit) in commits {
        if let Some(commit) = commit.filter(|c| !is_commit_id(c)) {
            problems.push(format!(
                "field {name:?}: {:?} is not a commit id (7 to 64 hex digits)",
                shorten(commit)
            ));
        }
    }
    // An instance without a failing test is "resolved" by any patch that breaks nothing, an
    // empty one included, so it would inflate resolve rates without anyone noticing. Every
    // SWE-bench instance has at least one.
    if instance.fail_to_pass.is_empty() {
        problems.push(
            "field \"FAIL_TO_PASS\": is empty (an instance needs at least one test its fix makes pass)"
                .to_string(),
        );
    }
    problems
}

/// Letters, digits, `.`, `_` and `-`, starting with a letter or digit (so never `.`, `..` or
/// an option like `-rf`): safe as a file name, a container name and a shell word.
fn check_instance_id(id: &str) -> Result<(), InvalidId> {
    let first_ok = id.starts_with(|c: char| c.is_ascii_alphanumeric());
    if id.is_empty() {
        Err(InvalidId::Empty)
    } else if id.len() > MAX_ID_LEN {
        Err(InvalidId::TooLong)
    } else if !first_ok || !id.chars().all(is_name_char) {
        Err(InvalidId::Characters { shown: shorten(id) })
    } else {
        Ok(())
    }
}

/// Why an instance id is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
enum InvalidId {
    #[error("is empty")]
    Empty,
    #[error("is longer than {MAX_ID_LEN} characters")]
    TooLong,
    /// `shown` is the id, shortened for the message.
    #[error(
        "{shown:?} may only hold letters, digits, '.', '_' and '-', and must start with a letter or digit"
    )]
    Characters { shown: String },
}

/// `owner/name`, each part made of GitHub's name characters and neither `.` nor `..`.
fn is_repo(repo: &str) -> bool {
    let part_ok =
        |part: &str| !part.is_empty() && part != "." && part != ".." && part.chars().all(is_name_char);
    matches!(repo.split_once('/'), Some((owner, name)) if part_ok(owner) && part_ok(name))
}

/// A (possibly abbreviated) SHA-1 or SHA-256 commit id. Anything else handed to git could be
/// read as a branch name or an option.
fn is_commit_id(commit: &str) -> bool {
    (7..=64).contains(&commit.len()) && commit.chars().all(|c| c.is_ascii_hexdigit())
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}
