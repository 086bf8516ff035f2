//! What a JobManager starts its job from.

use std::fmt;
use std::str::FromStr;

/// What a JobManager starts its job from: `--restore` on the command line,
/// and what the operator decides for each deployment.
///
/// Whatever it says, a JobManager restarted within the same deployment
/// (`--deployment-id`) recovers that deployment's own latest checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Restore {
    /// No state (`--restore none`).
    Fresh,
    /// The newest completed checkpoint or savepoint under the checkpoint
    /// directory if there is one, else no state: a restarted JobManager
    /// recovers its job. The default (no `--restore`).
    #[default]
    LatestOrFresh,
    /// The newest completed checkpoint or savepoint; none is an error, never
    /// a silent fresh start (`--restore latest`).
    Latest,
    /// This snapshot: a checkpoint's or savepoint's URI (`--restore URI`).
    Snapshot(String),
}

impl Restore {
    /// The `--restore` value that says this, or `None` for the default.
    pub fn flag_value(&self) -> Option<String> {
        match self {
            Restore::LatestOrFresh => None,
            other => Some(other.to_string()),
        }
    }
}

impl fmt::Display for Restore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Restore::Fresh => f.write_str("none"),
            Restore::LatestOrFresh => f.write_str("latest-or-none"),
            Restore::Latest => f.write_str("latest"),
            Restore::Snapshot(uri) => f.write_str(uri),
        }
    }
}

impl FromStr for Restore {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.trim() {
            "" => return Err("expected latest, none, latest-or-none or a snapshot's URI".into()),
            "none" => Restore::Fresh,
            "latest" => Restore::Latest,
            "latest-or-none" => Restore::LatestOrFresh,
            uri => Restore::Snapshot(uri.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_restore_reads_back_what_it_writes() {
        for r in [Restore::Fresh, Restore::LatestOrFresh, Restore::Latest, Restore::Snapshot("s3://b/sp-1".into())] {
            assert_eq!(r.to_string().parse::<Restore>(), Ok(r.clone()));
        }
        assert_eq!(Restore::default().flag_value(), None, "the default needs no flag");
        assert!("".parse::<Restore>().is_err());
    }
}
