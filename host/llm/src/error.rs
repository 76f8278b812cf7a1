//! The error of an LLM call. Messages are meant for users and logs, so they name the provider
//! and carry the provider's own explanation, and they never contain the API key.

use crate::ProviderKind;

/// `Result` with [`LlmError`].
pub type Result<T, E = LlmError> = std::result::Result<T, E>;

/// Why an LLM call failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum LlmError {
    /// The provider answered with an HTTP error (or an error event before any output).
    #[error("{provider} provider returned HTTP {status}: {message}{}", attempts_note(*attempts))]
    Http {
        /// Which provider.
        provider: ProviderKind,
        /// HTTP status (529 for Anthropic's overloaded errors).
        status: u16,
        /// The provider's error message (or the start of its body).
        message: String,
        /// Whether the failure was of a kind worth retrying (it was, up to the policy's limit).
        retryable: bool,
        /// Attempts made.
        attempts: u32,
    },
    /// The provider could not be reached.
    #[error("could not connect to {provider} provider at {url}: {message}{}", attempts_note(*attempts))]
    Connect {
        /// Which provider.
        provider: ProviderKind,
        /// The endpoint.
        url: String,
        /// The cause.
        message: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The connection broke before the response was complete (and before any output).
    #[error("{provider} provider closed the connection mid-response: {message}{}", attempts_note(*attempts))]
    Disconnected {
        /// Which provider.
        provider: ProviderKind,
        /// The cause.
        message: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The provider did not answer, or stopped streaming, within the configured time.
    #[error("{provider} provider timed out: {message}{}", attempts_note(*attempts))]
    Timeout {
        /// Which provider.
        provider: ProviderKind,
        /// What took too long.
        message: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The provider sent something that is not a valid response stream.
    #[error("{provider} provider sent an invalid response: {message}")]
    Protocol {
        /// Which provider.
        provider: ProviderKind,
        /// What was wrong.
        message: String,
    },
    /// The response failed after output had already been delivered; not retried, because the
    /// caller has seen part of an answer.
    #[error("{provider} response was interrupted after output had started: {message}")]
    Interrupted {
        /// Which provider.
        provider: ProviderKind,
        /// What went wrong.
        message: String,
    },
    /// The request cannot be sent as given (e.g. no model and no default model).
    #[error("invalid LLM request: {0}")]
    InvalidRequest(String),
}

impl LlmError {
    /// A short, stable name of the failure (`http`, `connect`, `timeout`, ...), for traces'
    /// `error.type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Http { .. } => "http",
            Self::Connect { .. } => "connect",
            Self::Disconnected { .. } => "disconnected",
            Self::Timeout { .. } => "timeout",
            Self::Protocol { .. } => "protocol",
            Self::Interrupted { .. } => "interrupted",
            Self::InvalidRequest(_) => "invalid_request",
        }
    }
}

fn attempts_note(attempts: u32) -> String {
    if attempts > 1 {
        format!(" (gave up after {attempts} attempts)")
    } else {
        String::new()
    }
}

impl LlmError {
    /// Whether the failure was transient (rate limit, overload, network); the client already
    /// retried it as far as its policy allows.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Http { retryable, .. } => *retryable,
            Self::Connect { .. }
            | Self::Disconnected { .. }
            | Self::Timeout { .. }
            | Self::Interrupted { .. } => true,
            Self::Protocol { .. } | Self::InvalidRequest(_) => false,
        }
    }

    pub(crate) fn set_attempts(&mut self, n: u32) {
        match self {
            Self::Http { attempts, .. }
            | Self::Connect { attempts, .. }
            | Self::Disconnected { attempts, .. }
            | Self::Timeout { attempts, .. } => *attempts = n,
            Self::Protocol { .. } | Self::Interrupted { .. } | Self::InvalidRequest(_) => {}
        }
    }

    /// Replaces every occurrence of `secret` in the message texts: providers echo keys back
    /// in their error bodies ("Incorrect API key provided: sk-...").
    pub(crate) fn redact(mut self, secret: &str) -> Self {
        if secret.is_empty() {
            return self;
        }
        let scrub = |s: &mut String| {
            if s.contains(secret) {
                *s = s.replace(secret, "[redacted]");
            }
        };
        match &mut self {
            Self::Http { message, .. }
            | Self::Disconnected { message, .. }
            | Self::Timeout { message, .. }
            | Self::Protocol { message, .. }
            | Self::Interrupted { message, .. }
            | Self::InvalidRequest(message) => scrub(message),
            Self::Connect { url, message, .. } => {
                scrub(url);
                scrub(message);
            }
        }
        self
    }
}
