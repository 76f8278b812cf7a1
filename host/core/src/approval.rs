//! Tool approval: the policy saying which tool calls need a person's decision before they run,
//! and the approval records of a run that waits for one.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{ApiKeyId, ApprovalId, RunId, SessionId, Timestamp};

/// The longest a call may wait for a decision: a week.
pub const APPROVAL_TIMEOUT_MAX: u32 = 604_800;
/// How long a call waits for a decision unless the policy says otherwise.
pub const APPROVAL_TIMEOUT_DEFAULT: u32 = 900;
/// Longest reason given with a decision, in characters.
pub const DECISION_REASON_MAX: usize = 4096;
/// At most this many patterns in [`ToolApproval::require`].
pub const APPROVAL_PATTERNS_MAX: usize = 64;

/// Which tool calls need approval (persisted shape: stored as JSON on agents, in overrides and
/// in run configurations).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolApproval {
    /// Glob patterns over namespaced tool names (`capability__tool`; `*` any run of
    /// characters, `?` one character): a call whose name matches one needs approval.
    #[serde(default)]
    pub require: Vec<String>,
    /// Seconds a call waits for a decision before it counts as rejected (`expired`), 1 to
    /// [`APPROVAL_TIMEOUT_MAX`].
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u32,
}

fn default_timeout() -> u32 {
    APPROVAL_TIMEOUT_DEFAULT
}

impl Default for ToolApproval {
    fn default() -> Self {
        Self {
            require: Vec::new(),
            timeout_seconds: APPROVAL_TIMEOUT_DEFAULT,
        }
    }
}

impl ToolApproval {
    /// The compiled patterns, or the first invalid one with the reason.
    pub fn matcher(&self) -> Result<ApprovalMatcher, (usize, String)> {
        let mut set = globset::GlobSetBuilder::new();
        for (i, pattern) in self.require.iter().enumerate() {
            // `*` already crosses everything (no separators here): a run of them is one.
            let mut collapsed = String::with_capacity(pattern.len());
            for c in pattern.chars() {
                if !(c == '*' && collapsed.ends_with('*')) {
                    collapsed.push(c);
                }
            }
            let glob = globset::GlobBuilder::new(&collapsed)
                .literal_separator(false)
                .build()
                .map_err(|e| (i, e.kind().to_string()))?;
            set.add(glob);
        }
        let set = set.build().map_err(|e| (0, e.to_string()))?;
        Ok(ApprovalMatcher {
            set,
            patterns: self.require.clone(),
        })
    }
}

/// [`ToolApproval::require`], compiled.
#[derive(Debug, Clone)]
pub struct ApprovalMatcher {
    set: globset::GlobSet,
    patterns: Vec<String>,
}

impl ApprovalMatcher {
    /// The first pattern `tool` (a namespaced tool name) matches, if any.
    pub fn first_match(&self, tool: &str) -> Option<&str> {
        self.set
            .matches(tool)
            .first()
            .map(|&i| self.patterns[i].as_str())
    }
}

/// Where an approval stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApprovalStatus {
    /// Waiting for a decision.
    Pending,
    /// Someone approved the call: it runs with the arguments that were shown.
    Approved,
    /// Someone rejected the call: the model is told so, with the reason.
    Rejected,
    /// Nobody decided in time: counts as rejected.
    Expired,
    /// The run was cancelled while the call waited.
    Cancelled,
}

impl ApprovalStatus {
    /// Every status.
    pub const ALL: [Self; 5] = [
        Self::Pending,
        Self::Approved,
        Self::Rejected,
        Self::Expired,
        Self::Cancelled,
    ];

    /// The stored / wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses the stored name.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }
}

/// A person's decision on a pending approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Reject,
}

impl Decision {
    /// The status the approval gets.
    pub fn status(self) -> ApprovalStatus {
        match self {
            Self::Approve => ApprovalStatus::Approved,
            Self::Reject => ApprovalStatus::Rejected,
        }
    }
}

/// A tool call that needed approval, and what became of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Approval {
    pub id: ApprovalId,
    pub run_id: RunId,
    pub session_id: SessionId,
    /// The journal step the call is (its position among the run's steps).
    pub step_no: u32,
    /// The model's id of the call.
    pub tool_call_id: String,
    /// The namespaced tool name.
    pub name: String,
    /// The capability that provides the tool, when one does.
    pub capability: Option<String>,
    /// The arguments (JSON text) that were shown for approval: exactly what runs if approved.
    pub arguments: String,
    /// SHA-256 of `arguments` (hex), taken when the approval was requested.
    pub arguments_sha256: String,
    /// Why approval is needed.
    pub reason: String,
    /// Who asked for it: `tool_approval` (the agent's or session's policy) or the id of the
    /// capability whose `before-tool` hook did.
    pub requested_by: String,
    pub status: ApprovalStatus,
    /// The reason given with the decision.
    pub decision_reason: Option<String>,
    /// The API key that decided (`None` for expiry and cancellation).
    pub decided_by: Option<ApiKeyId>,
    pub decided_at: Option<Timestamp>,
    /// When a pending approval expires.
    pub expires_at: Timestamp,
    pub created_at: Timestamp,
}

impl Approval {
    /// Whether `arguments` are still the ones that were approved.
    pub fn arguments_intact(&self) -> bool {
        fingerprint(&self.arguments) == self.arguments_sha256
    }
}

/// An approval to request (the run and session come from the run being parked).
#[derive(Debug, Clone, PartialEq)]
pub struct NewApproval {
    pub id: ApprovalId,
    pub step_no: u32,
    pub tool_call_id: String,
    pub name: String,
    pub capability: Option<String>,
    pub arguments: String,
    pub arguments_sha256: String,
    pub reason: String,
    pub requested_by: String,
    pub expires_at: Timestamp,
}

impl NewApproval {
    /// The approval of the call that is step `step_no` of `run`, its id derived from both (a
    /// replay asks for the same approval, never a second one).
    #[allow(
        clippy::too_many_arguments,
        reason = "the fields of the record; a builder would add nothing"
    )]
    pub fn new(
        run: &RunId,
        step_no: u32,
        tool_call_id: String,
        name: String,
        capability: Option<String>,
        arguments: String,
        reason: String,
        requested_by: String,
        expires_at: Timestamp,
    ) -> Self {
        Self {
            id: ApprovalId::for_call(run, step_no),
            step_no,
            tool_call_id,
            name,
            capability,
            arguments_sha256: fingerprint(&arguments),
            arguments,
            reason,
            requested_by,
            expires_at,
        }
    }
}

/// SHA-256 of `arguments`, hex.
pub fn fingerprint(arguments: &str) -> String {
    hex::encode(Sha256::digest(arguments.as_bytes()))
}

impl ApprovalId {
    /// The id of the approval of step `step_no` of `run`: the run's creation time (so ids sort
    /// by run, then step), the step number, and a hash of the run id.
    pub fn for_call(run: &RunId, step_no: u32) -> Self {
        let hex = run.as_str().strip_prefix(RunId::PREFIX).unwrap_or_default();
        let time = hex.get(..12).unwrap_or("000000000000");
        let hash = Sha256::digest(run.as_str().as_bytes());
        let tail = hex::encode(&hash[..6]);
        Self::parse(&format!("{}{time}{step_no:08x}{tail}", Self::PREFIX))
            .expect("12 + 8 + 12 lowercase hex digits")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_namespaced_tool_names() {
        let policy = ToolApproval {
            require: vec!["files__delete_*".into(), "*__send".into(), "a?c".into()],
            timeout_seconds: 60,
        };
        let m = policy.matcher().unwrap();
        assert_eq!(m.first_match("files__delete_all"), Some("files__delete_*"));
        assert_eq!(m.first_match("mail__send"), Some("*__send"));
        assert_eq!(m.first_match("abc"), Some("a?c"));
        assert_eq!(m.first_match("files__read"), None);
        let stars = ToolApproval {
            require: vec!["a**b".into()],
            ..ToolApproval::default()
        };
        assert_eq!(stars.matcher().unwrap().first_match("a__xb"), Some("a**b"));
        let bad = ToolApproval {
            require: vec!["ok".into(), "[".into()],
            ..ToolApproval::default()
        };
        assert_eq!(bad.matcher().unwrap_err().0, 1);
    }

    #[test]
    fn policies_default_to_fifteen_minutes() {
        let policy: ToolApproval = serde_json::from_str(r#"{"require": ["x"]}"#).unwrap();
        assert_eq!(policy.timeout_seconds, APPROVAL_TIMEOUT_DEFAULT);
    }

    #[test]
    fn approval_ids_are_derived_from_the_run_and_step_and_sort_by_both() {
        let run = RunId::new();
        let a = ApprovalId::for_call(&run, 2);
        assert_eq!(a, ApprovalId::for_call(&run, 2));
        assert!(a < ApprovalId::for_call(&run, 3));
        assert_ne!(a, ApprovalId::for_call(&RunId::new(), 2));
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(ApprovalId::for_call(&run, 9) < ApprovalId::for_call(&RunId::new(), 0));
    }

    #[test]
    fn statuses_round_trip_and_fingerprints_detect_changes() {
        for s in ApprovalStatus::ALL {
            assert_eq!(ApprovalStatus::parse(s.as_str()), Some(s));
        }
        let new = NewApproval::new(
            &RunId::new(),
            1,
            "c1".into(),
            "t__x".into(),
            Some("t".into()),
            r#"{"a":1}"#.into(),
            "why".into(),
            "tool_approval".into(),
            chrono::Utc::now(),
        );
        assert_eq!(new.arguments_sha256, fingerprint(r#"{"a":1}"#));
        assert_ne!(new.arguments_sha256, fingerprint(r#"{"a":2}"#));
    }
}
