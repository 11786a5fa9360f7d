//! `audio::Error`: why audio could not be read or written, split so that callers can tell the
//! client's fault (unsupported or corrupt input, a 422) from ours (I/O, encoder failures).

use crate::jobs::EngineError;

/// Why decoding, probing, resampling or encoding failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bytes are not audio soundcheck can read (unknown container or codec, empty file, no
    /// audio track). The client's fault: answer `422 unsupported_audio`, do not retry.
    #[error("unsupported audio: {0}")]
    Unsupported(String),
    /// The container was recognised but its contents are damaged or truncated. The client's
    /// fault: answer `422 corrupt_audio`, do not retry.
    #[error("corrupt audio: {0}")]
    Corrupt(String),
    /// The audio decoded but a parameter does not fit it (e.g. a sample rate of 0 asked for).
    #[error("invalid audio request: {0}")]
    Invalid(String),
    /// Reading or writing a file failed; our side (disk, permissions), possibly transient. (Not
    /// the error's `source`: the message already holds it, and a report of the chain would
    /// print it twice.)
    #[error("audio i/o: {0}")]
    Io(std::io::Error),
    /// An encoder or resampler failed on valid input; our side.
    #[error("audio encoder: {0}")]
    Encode(String),
    /// The job was cancelled (or the server is stopping) while a long step ran; not a failure.
    #[error("cancelled")]
    Cancelled,
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

impl Error {
    /// The contract's error code for this failure (`unsupported_audio`, `corrupt_audio`, …).
    pub fn code(&self) -> &'static str {
        match self {
            Error::Unsupported(_) => "unsupported_audio",
            Error::Corrupt(_) => "corrupt_audio",
            Error::Invalid(_) => "invalid_request",
            Error::Io(_) | Error::Encode(_) | Error::Cancelled => "internal_error",
        }
    }

    /// True when the input itself is at fault, so the API should answer 422 and not refund.
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            Error::Unsupported(_) | Error::Corrupt(_) | Error::Invalid(_)
        )
    }
}

impl From<Error> for EngineError {
    fn from(e: Error) -> Self {
        match e {
            Error::Unsupported(m) => EngineError::UnsupportedAudio(m),
            Error::Corrupt(m) => EngineError::CorruptAudio(m),
            Error::Invalid(m) => EngineError::InvalidInput(m),
            e @ (Error::Io(_) | Error::Encode(_)) => EngineError::Internal(e.to_string()),
            Error::Cancelled => EngineError::Cancelled,
        }
    }
}

/// Results of the audio layer.
pub type Result<T> = std::result::Result<T, Error>;
