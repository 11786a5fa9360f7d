//! Standard MIDI file output with `midly`, laid out as basic-pitch's `note_events_to_midi` + pretty_midi's
//! `write` lay it out: 220 ticks per quarter note, a timing track (tempo, 4/4), then one "Electric Piano 1"
//! track (or one per pitch with `multiple_pitch_bends`) with notes and pitch bends, events ordered like
//! pretty_midi so a file from either tool has the same events.

use midly::num::{u14, u15, u24, u28, u4, u7};
use midly::{
    Format, Header, MetaMessage, MidiMessage, PitchBend, Smf, Timing, TrackEvent, TrackEventKind,
};

use super::Note;

/// pretty_midi's default resolution.
const TICKS_PER_BEAT: u16 = 220;
/// General MIDI "Electric Piano 1" (program 5, zero-based 4), as basic-pitch writes.
const PROGRAM: u8 = 4;
/// Pitch-bend units per contour bin (1/3 semitone) with a ±2 semitone bend range.
const BEND_PER_BIN: f64 = 4096.0 / 3.0;

/// What a track event is, before delta times are computed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Program,
    /// velocity 0 means note off (as pretty_midi writes it)
    NoteOn {
        key: u8,
        vel: u8,
    },
    Bend(i16),
}

impl Kind {
    /// pretty_midi's `event_compare` secondary key for events on the same tick.
    fn order(&self) -> i64 {
        const S: i64 = 256 * 256;
        match *self {
            Kind::Program => 6 * S,
            Kind::Bend(v) => 7 * S + v as i64,
            Kind::NoteOn { key, vel } => 10 * S + key as i64 * 256 + vel as i64,
        }
    }
}

/// Seconds → ticks at a constant tempo (pretty_midi `time_to_tick`: Python's round-half-even).
fn to_tick(t: f64, tick_scale: f64) -> u64 {
    if t > 0.0 {
        (t / tick_scale).round_ties_even() as u64
    } else {
        0
    }
}

/// `drop_overlapping_pitch_bends`: notes sorted by (start, end, pitch, amplitude); a note that overlaps
/// another in time loses its bends (one MIDI channel cannot bend two notes differently).
fn sorted_without_overlapping_bends(notes: &[Note]) -> Vec<Note> {
    let mut notes = notes.to_vec();
    notes.sort_by(|a, b| {
        a.start
            .total_cmp(&b.start)
            .then(a.end.total_cmp(&b.end))
            .then(a.pitch.cmp(&b.pitch))
            .then(a.amplitude.total_cmp(&b.amplitude))
    });
    for i in 0..notes.len().saturating_sub(1) {
        for j in i + 1..notes.len() {
            if notes[j].start >= notes[i].end {
                break;
            }
            notes[i].pitch_bends = None;
            notes[j].pitch_bends = None;
        }
    }
    notes
}

/// numpy `linspace(start, end, n)`.
fn linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f64;
    (0..n)
        .map(|i| {
            if i == n - 1 {
                end
            } else {
                i as f64 * step + start
            }
        })
        .collect()
}

fn track_events(mut evs: Vec<(u64, Kind)>, channel: u8) -> Vec<TrackEvent<'static>> {
    evs.sort_by_key(|(tick, k)| (*tick, k.order())); // stable, like Python's sorted
                                                     // pretty_midi: a note-on followed by a note-off of the same pitch on the same tick is swapped.
    for n in 0..evs.len().saturating_sub(1) {
        if let ((t1, Kind::NoteOn { key: k1, vel: v1 }), (t2, Kind::NoteOn { key: k2, vel: v2 })) =
            (evs[n], evs[n + 1])
        {
            if t1 == t2 && k1 == k2 && v1 != 0 && v2 == 0 {
                evs.swap(n, n + 1);
            }
        }
    }
    let channel = u4::new(channel);
    let mut out = Vec::with_capacity(evs.len() + 1);
    let mut last = 0u64;
    for (tick, kind) in evs {
        let message = match kind {
            Kind::Program => MidiMessage::ProgramChange {
                program: u7::new(PROGRAM),
            },
            Kind::NoteOn { key, vel } => MidiMessage::NoteOn {
                key: u7::new(key.min(127)),
                vel: u7::new(vel.min(127)),
            },
            Kind::Bend(v) => MidiMessage::PitchBend {
                bend: PitchBend(u14::new((v as i32 + 8192) as u16)),
            },
        };
        out.push(TrackEvent {
            delta: u28::new((tick - last).min(0x0FFF_FFFF) as u32),
            kind: TrackEventKind::Midi { channel, message },
        });
        last = tick;
    }
    out.push(TrackEvent {
        delta: u28::new(1),
        kind: TrackEventKind::Meta(MetaMessage::EndOfTrack),
    });
    out
}

/// Writes notes (times in seconds, bends in 1/3 semitones) as a type-1 standard MIDI file.
pub fn notes_to_midi(
    notes: &[Note],
    tempo_bpm: f64,
    multiple_pitch_bends: bool,
) -> std::io::Result<Vec<u8>> {
    let tick_scale = 60.0 / (tempo_bpm * TICKS_PER_BEAT as f64);
    let tempo_us = (6e7 / (60.0 / (tick_scale * TICKS_PER_BEAT as f64))) as u32;

    // Instruments: one for everything, or one per pitch in order of first appearance.
    let mut instruments: Vec<(u8, Vec<Note>)> = Vec::new();
    if multiple_pitch_bends {
        for n in notes {
            match instruments.iter_mut().find(|(p, _)| *p == n.pitch) {
                Some((_, v)) => v.push(n.clone()),
                None => instruments.push((n.pitch, vec![n.clone()])),
            }
        }
    } else if !notes.is_empty() {
        instruments.push((0, sorted_without_overlapping_bends(notes)));
    }

    let timing = vec![
        TrackEvent {
            delta: u28::new(0),
            kind: TrackEventKind::Meta(MetaMessage::Tempo(u24::new(tempo_us.min(0xFF_FFFF)))),
        },
        TrackEvent {
            delta: u28::new(0),
            kind: TrackEventKind::Meta(MetaMessage::TimeSignature(4, 2, 24, 8)),
        },
        TrackEvent {
            delta: u28::new(1),
            kind: TrackEventKind::Meta(MetaMessage::EndOfTrack),
        },
    ];
    let mut tracks = vec![timing];
    // Channels 0..=15 without 9 (drums), cycled.
    let channels: Vec<u8> = (0..16).filter(|&c| c != 9).collect();
    for (n, (_, notes)) in instruments.iter().enumerate() {
        let mut evs = vec![(0u64, Kind::Program)];
        for note in notes {
            let vel = note.velocity();
            evs.push((
                to_tick(note.start, tick_scale),
                Kind::NoteOn {
                    key: note.pitch,
                    vel,
                },
            ));
            evs.push((
                to_tick(note.end, tick_scale),
                Kind::NoteOn {
                    key: note.pitch,
                    vel: 0,
                },
            ));
        }
        for note in notes {
            let Some(bends) = note.pitch_bends.as_ref().filter(|b| !b.is_empty()) else {
                continue;
            };
            for (t, b) in linspace(note.start, note.end, bends.len())
                .iter()
                .zip(bends)
            {
                let v = (*b as f64 * BEND_PER_BIN)
                    .round_ties_even()
                    .clamp(-8192.0, 8191.0) as i16;
                evs.push((to_tick(*t, tick_scale), Kind::Bend(v)));
            }
        }
        tracks.push(track_events(evs, channels[n % channels.len()]));
    }

    let smf = Smf {
        header: Header::new(Format::Parallel, Timing::Metrical(u15::new(TICKS_PER_BEAT))),
        tracks,
    };
    let mut bytes = Vec::new();
    smf.write_std(&mut bytes)?;
    Ok(bytes)
}
