//! The score: what the arranger writes and the mixer and voices read. The sounds (`Voice`, `Kit`),
//! a part's settings (`Timbre`, `Part`), one timed note (`Note`), the form's sections and the whole
//! `Score`. Pure data, shared by `arrange`, `voices`, `drums` and `mix` so none of them imports
//! another for its types.

use super::dsp::SR;

/// Every sound the composer can play.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Voice {
    Kick,
    Snare,
    Clap,
    HatClosed,
    HatOpen,
    Ride,
    Crash,
    Shaker,
    Rim,
    Tom,
    Taiko,
    Piano,
    EPiano,
    Organ,
    AcousticGuitar,
    ElectricGuitar,
    MutedGuitar,
    Harp,
    Pad,
    Strings,
    Choir,
    Brass,
    Flute,
    Bells,
    Vibes,
    Lead,
    Pluck,
    FingerBass,
    Upright,
    SynthBass,
    Sub808,
    Reese,
    SubBass,
}

/// Drum sound family: how kick, snare and hats are tuned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kit {
    Acoustic,
    Electronic,
    Lofi,
    Jazz,
    Orchestral,
    Soft,
}

/// Per-part sound settings a voice reads.
#[derive(Debug, Clone, Copy)]
pub struct Timbre {
    /// Filter brightness, 0–1.
    pub bright: f32,
    /// Distortion amount, 0–1.
    pub drive: f32,
    /// Drum family (drum voices only).
    pub kit: Kit,
    /// Filter wobble rate in Hz (0 = none).
    pub wobble_hz: f64,
}

/// One note of the score.
#[derive(Debug, Clone, Copy)]
pub struct Note {
    /// Index of the mixer part (gain, pan, sends, timbre) it plays on.
    pub part: u16,
    /// Onset, seconds from the start of the track.
    pub start: f64,
    /// Held length (gate), seconds; drums ignore it.
    pub dur: f64,
    /// MIDI pitch (drums: tuning hint).
    pub pitch: f32,
    /// Velocity, 0–1.
    pub vel: f32,
    /// Pan offset added to the part's pan, -1…1.
    pub pan: f32,
    /// Semitones the note glides from at its start (808 slides), 0 for none.
    pub glide: f32,
    /// Seed of the note's noise and oscillator phases.
    pub seed: u32,
}

impl Voice {
    /// Whether this is a drum sound (fixed length, no pitch role).
    pub fn is_drum(self) -> bool {
        matches!(
            self,
            Voice::Kick
                | Voice::Snare
                | Voice::Clap
                | Voice::HatClosed
                | Voice::HatOpen
                | Voice::Ride
                | Voice::Crash
                | Voice::Shaker
                | Voice::Rim
                | Voice::Tom
                | Voice::Taiko
        )
    }
}

/// A mixer channel: one voice with its level, placement, sends and timbre.
#[derive(Debug, Clone)]
pub struct Part {
    /// What it sounds like.
    pub voice: Voice,
    /// Filter, drive and kit settings passed to the voice.
    pub timbre: Timbre,
    /// Linear gain.
    pub gain: f32,
    /// Stereo position, -1 (left) … 1 (right).
    pub pan: f32,
    /// Reverb send, linear.
    pub reverb: f32,
    /// Echo send, linear.
    pub delay: f32,
    /// Dips under the kick (four-on-the-floor pumping).
    pub duck: bool,
}

/// A section of the form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionKind {
    Intro,
    Verse,
    Chorus,
    Bridge,
    Outro,
}

/// A run of bars with one role in the form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section {
    pub kind: SectionKind,
    pub start_bar: u32,
    pub bars: u32,
}

/// Everything the mixer needs to render the track.
#[derive(Debug, Clone)]
pub struct Score {
    pub parts: Vec<Part>,
    pub notes: Vec<Note>,
    /// Onsets of the kick drum (seconds), for ducking.
    pub kicks: Vec<f64>,
    /// Seconds per beat.
    pub spb: f64,
}

/// Sample index of a time in seconds.
pub fn sample_of(t: f64) -> usize {
    (t * SR).round().max(0.0) as usize
}
