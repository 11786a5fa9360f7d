//! From tags to a `Style`: the arrangement recipe of a genre (drum pattern, groove, which voice
//! plays bass, chords, pad, melody and counter-line, and how), then the named instruments take
//! their roles and the moods shift energy, brightness, register and space. Seeded choices fill what
//! the tags leave open, so different seeds of one prompt differ in sound as well as in notes.

use super::dmath::Rng;
use super::score::{Kit, Voice};
use super::tags::{Genre, Instrument, Mood, TagReading, Texture};
use super::theory::Harmony;

/// How the drums fill a bar (every pattern adapts to any beats-per-bar through the meter's groups).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrumPattern {
    /// Kick on group starts, snare on the backbeats, hats on subdivisions.
    Backbeat,
    /// Kick on every beat, clap on backbeats, open hat on the off-beats.
    FourFloor,
    /// Backbeat with syncopated extra kicks and swung hats.
    HipHop,
    /// 808 style: syncopated kicks, claps, rolling 16th hats.
    Trap,
    /// Drum and bass two-step: kick on 1 and the and-of-3, snares on the backbeats.
    Breakbeat,
    /// Swung ride, hi-hat on the backbeats, feathered kick, snare comping.
    Jazz,
    /// 16th hats, ghost snares, syncopated kicks.
    Funk,
    /// Rim clicks on the backbeats, soft kick.
    Reggae,
    /// Taiko and toms on the beats, snare rolls into sections.
    Cinematic,
    /// A soft kick on group starts and a shaker on every beat (ambient).
    Pulse,
    /// Country train beat: brushed snare on every eighth.
    Train,
    /// Bossa nova: kick on the beats, rim clave, shaker 16ths.
    Bossa,
}

/// How the bass line moves under the chords.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BassPattern {
    /// One held root per chord.
    Sustain,
    /// Root on every group start.
    Roots,
    /// Root on every eighth.
    Eighths,
    /// Eighths alternating root and upper octave (disco, synthwave).
    Octaves,
    /// Root on the off-beat eighths (house, trance).
    Offbeat,
    /// Quarter-note walking line with chromatic approaches (jazz, blues).
    Walking,
    /// A syncopated 16th figure repeated per beat pair (funk, hip hop).
    Syncopated,
    /// Long 808 notes on the kick hits, with glides.
    Long808,
    /// Root and fifth alternating on the group starts (country, folk, bossa).
    BoomChick,
}

/// How the chord instrument plays the harmony.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChordPattern {
    /// Held for the whole chord.
    Sustain,
    /// Struck on every group start.
    Block,
    /// Short jazz comping on swung off-beats.
    Comp,
    /// Short stabs on the off-beat eighths (house, reggae skank).
    Offbeat,
    /// Guitar strums, down on the beat and up on the and.
    Strum,
    /// Distorted power chords in eighths (rock, metal).
    Power,
    /// Classical left hand: bass note on the group start, chord on the other beats.
    OomPah,
    /// Muted 16th chops (funk guitar).
    Chop,
}

/// How the counter-line moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterPattern {
    /// Arpeggio through the chord tones.
    Arp,
    /// Staccato repeated root/fifth eighths (cinematic strings).
    Ostinato,
}

/// The full arrangement recipe for one request.
#[derive(Debug, Clone)]
pub struct Style {
    /// The genre that chose the recipe (`Pop` when none was named).
    pub genre: Genre,
    /// Drum pattern, or none (classical).
    pub drums: Option<DrumPattern>,
    /// Drum sound family.
    pub kit: Kit,
    /// Hi-hat hits per beat (1, 2 or 4).
    pub hat_div: u32,
    /// Where the swung off-beat lands, as a fraction of the swing unit (0.5 = straight).
    pub swing: f64,
    /// 2 when the swing applies to eighths, 4 to sixteenths.
    pub swing_div: u32,
    /// Timing scatter of played (non-kick) parts, seconds (zero-mean, so the grid is kept).
    pub humanize: f64,
    /// Progression family.
    pub harmony: Harmony,
    /// Seventh chords in the harmony parts.
    pub sevenths: bool,
    /// Bass voice and line.
    pub bass: Option<(Voice, BassPattern)>,
    /// Chord voice and pattern.
    pub chords: Option<(Voice, ChordPattern)>,
    /// Sustained pad layer (mostly in choruses).
    pub pad: Option<Voice>,
    /// Lead melody voice.
    pub melody: Option<Voice>,
    /// Counter-line voice and pattern.
    pub counter: Option<(Voice, CounterPattern)>,
    /// Melody notes per beat, roughly (0.1 sparse … 1.0 busy).
    pub density: f64,
    /// MIDI note near which the melody's tonic sits.
    pub melody_center: i32,
    /// Overall drive of the drums and dynamics, 0–1.
    pub energy: f64,
    /// Filter brightness of the voices, 0–1.
    pub bright: f32,
    /// Reverb send scale, 0–1.
    pub reverb: f32,
    /// Echo send scale, 0–1.
    pub delay: f32,
    /// Distortion of guitars and basses, 0–1.
    pub drive: f32,
    /// Sidechain-style ducking of the harmony under the kick.
    pub duck: bool,
    /// Crash cymbal on section starts.
    pub crash: bool,
    /// Drum fills at the ends of sections.
    pub fills: bool,
    /// Low-pass "lofi" master colour.
    pub lofi: bool,
    /// Background textures.
    pub textures: Vec<Texture>,
    /// Bass filter wobble at this many cycles per beat (dubstep), 0 for none.
    pub wobble: f64,
}

fn base(genre: Genre, rng: &mut Rng) -> Style {
    use BassPattern as B;
    use ChordPattern as C;
    use DrumPattern as D;
    let mut s = Style {
        genre,
        drums: Some(D::Backbeat),
        kit: Kit::Acoustic,
        hat_div: 2,
        swing: 0.5,
        swing_div: 2,
        humanize: 0.0,
        harmony: Harmony::Plain,
        sevenths: false,
        bass: Some((Voice::SynthBass, B::Roots)),
        chords: Some((Voice::Piano, C::Block)),
        pad: None,
        melody: Some(Voice::Lead),
        counter: None,
        density: 0.5,
        melody_center: 72,
        energy: 0.7,
        bright: 0.6,
        reverb: 0.3,
        delay: 0.1,
        drive: 0.0,
        duck: false,
        crash: false,
        fills: false,
        lofi: false,
        textures: Vec::new(),
        wobble: 0.0,
    };
    match genre {
        Genre::Lofi => {
            s.drums = Some(D::HipHop);
            s.kit = Kit::Lofi;
            s.swing = 0.6;
            s.swing_div = 4;
            s.humanize = 0.007;
            s.harmony = Harmony::Jazzy;
            s.sevenths = true;
            s.bass = Some((Voice::FingerBass, B::Roots));
            s.chords = Some((Voice::EPiano, C::Block));
            s.melody = Some(*rng.pick(&[Voice::Piano, Voice::EPiano, Voice::Vibes, Voice::Bells]));
            s.density = 0.35;
            s.energy = 0.45;
            s.bright = 0.35;
            s.delay = 0.2;
            s.lofi = true;
            s.textures = vec![Texture::VinylCrackle];
        }
        Genre::HipHop => {
            s.drums = Some(D::HipHop);
            s.swing = 0.56;
            s.swing_div = 4;
            s.humanize = 0.004;
            s.bass = Some((Voice::SynthBass, B::Syncopated));
            s.melody = Some(*rng.pick(&[Voice::Bells, Voice::Strings, Voice::Flute]));
            s.density = 0.4;
            s.bright = 0.5;
        }
        Genre::Trap => {
            s.drums = Some(D::Trap);
            s.kit = Kit::Electronic;
            s.hat_div = 4;
            s.bass = Some((Voice::Sub808, B::Long808));
            s.chords = Some((Voice::Pad, C::Sustain));
            s.melody = Some(*rng.pick(&[Voice::Bells, Voice::Pluck, Voice::Flute]));
            s.density = 0.4;
            s.energy = 0.75;
            s.bright = 0.5;
        }
        Genre::House => {
            s.drums = Some(D::FourFloor);
            s.kit = Kit::Electronic;
            s.swing = 0.53;
            s.swing_div = 4;
            s.bass = Some((Voice::SynthBass, B::Offbeat));
            s.chords = Some((
                *rng.pick(&[Voice::Piano, Voice::Organ, Voice::EPiano]),
                C::Offbeat,
            ));
            s.pad = Some(Voice::Pad);
            s.density = 0.3;
            s.energy = 0.8;
            s.bright = 0.65;
            s.duck = true;
            s.crash = true;
        }
        Genre::Techno => {
            s.drums = Some(D::FourFloor);
            s.kit = Kit::Electronic;
            s.hat_div = 4;
            s.harmony = Harmony::Static;
            s.bass = Some((Voice::SynthBass, B::Offbeat));
            s.chords = Some((Voice::Pluck, C::Offbeat));
            s.pad = Some(Voice::Pad);
            s.melody = None;
            s.counter = Some((Voice::Pluck, CounterPattern::Arp));
            s.energy = 0.85;
            s.bright = 0.55;
            s.drive = 0.3;
            s.duck = true;
            s.reverb = 0.25;
        }
        Genre::Trance => {
            s.drums = Some(D::FourFloor);
            s.kit = Kit::Electronic;
            s.hat_div = 4;
            s.bass = Some((Voice::SynthBass, B::Offbeat));
            s.chords = Some((Voice::Pad, C::Sustain));
            s.counter = Some((Voice::Pluck, CounterPattern::Arp));
            s.density = 0.55;
            s.energy = 0.85;
            s.bright = 0.7;
            s.reverb = 0.4;
            s.delay = 0.25;
            s.duck = true;
            s.crash = true;
        }
        Genre::DrumAndBass => {
            s.drums = Some(D::Breakbeat);
            s.kit = Kit::Electronic;
            s.harmony = *rng.pick(&[Harmony::Plain, Harmony::Jazzy]);
            s.sevenths = s.harmony == Harmony::Jazzy;
            s.hat_div = 4;
            s.bass = Some((Voice::Reese, B::Sustain));
            s.chords = Some((Voice::Pad, C::Sustain));
            s.melody = Some(*rng.pick(&[Voice::Bells, Voice::Piano, Voice::EPiano]));
            s.density = 0.4;
            s.energy = 0.85;
            s.bright = 0.7;
            s.crash = true;
        }
        Genre::Dubstep => {
            s.drums = Some(D::Trap);
            s.kit = Kit::Electronic;
            s.bass = Some((Voice::Reese, B::Roots));
            s.chords = Some((Voice::Pad, C::Sustain));
            s.density = 0.35;
            s.energy = 0.9;
            s.drive = 0.5;
            s.wobble = 1.0;
            s.crash = true;
        }
        Genre::Rock => {
            s.humanize = 0.004;
            s.bass = Some((Voice::FingerBass, B::Eighths));
            s.chords = Some((Voice::ElectricGuitar, C::Power));
            s.melody = Some(*rng.pick(&[Voice::ElectricGuitar, Voice::Lead, Voice::Organ]));
            s.density = 0.45;
            s.energy = 0.85;
            s.drive = 0.6;
            s.crash = true;
            s.fills = true;
        }
        Genre::Metal => {
            s.humanize = 0.002;
            s.bass = Some((Voice::FingerBass, B::Eighths));
            s.chords = Some((Voice::ElectricGuitar, C::Power));
            s.melody = Some(Voice::ElectricGuitar);
            s.density = 0.55;
            s.energy = 1.0;
            s.drive = 0.9;
            s.crash = true;
            s.fills = true;
        }
        Genre::Pop => {
            s.kit = Kit::Electronic;
            s.bass = Some((Voice::SynthBass, *rng.pick(&[B::Roots, B::Eighths])));
            s.chords = Some((*rng.pick(&[Voice::Piano, Voice::AcousticGuitar]), C::Block));
            s.pad = Some(Voice::Pad);
            s.melody = Some(*rng.pick(&[Voice::Lead, Voice::Bells, Voice::Pluck]));
            s.bright = 0.7;
            s.crash = true;
            s.fills = true;
        }
        Genre::Jazz => {
            s.drums = Some(D::Jazz);
            s.kit = Kit::Jazz;
            s.swing = 0.65;
            s.humanize = 0.008;
            s.harmony = Harmony::Jazzy;
            s.sevenths = true;
            s.bass = Some((Voice::Upright, B::Walking));
            s.chords = Some((*rng.pick(&[Voice::Piano, Voice::EPiano]), C::Comp));
            s.melody = Some(*rng.pick(&[Voice::Brass, Voice::Vibes, Voice::Piano]));
            s.density = 0.55;
            s.energy = 0.55;
            s.bright = 0.5;
            s.reverb = 0.25;
        }
        Genre::Blues => {
            s.swing = 0.66;
            s.humanize = 0.006;
            s.bass = Some((Voice::FingerBass, B::Walking));
            s.chords = Some((*rng.pick(&[Voice::Organ, Voice::Piano]), C::Block));
            s.melody = Some(*rng.pick(&[Voice::ElectricGuitar, Voice::Brass]));
            s.density = 0.45;
            s.energy = 0.6;
            s.drive = 0.25;
            s.fills = true;
        }
        Genre::Funk => {
            s.drums = Some(D::Funk);
            s.hat_div = 4;
            s.swing = 0.54;
            s.swing_div = 4;
            s.humanize = 0.004;
            s.sevenths = true;
            s.bass = Some((Voice::FingerBass, B::Syncopated));
            s.chords = Some((Voice::MutedGuitar, C::Chop));
            s.pad = Some(Voice::Organ);
            s.melody = Some(Voice::Brass);
            s.density = 0.5;
            s.energy = 0.8;
            s.bright = 0.7;
            s.fills = true;
        }
        Genre::Disco => {
            s.drums = Some(D::FourFloor);
            s.bass = Some((Voice::FingerBass, B::Octaves));
            s.chords = Some((Voice::MutedGuitar, C::Offbeat));
            s.pad = Some(Voice::Strings);
            s.melody = Some(*rng.pick(&[Voice::Strings, Voice::Brass, Voice::Lead]));
            s.energy = 0.8;
            s.bright = 0.7;
            s.crash = true;
        }
        Genre::Rnb => {
            s.drums = Some(D::HipHop);
            s.kit = Kit::Electronic;
            s.hat_div = 4;
            s.swing = 0.55;
            s.swing_div = 4;
            s.humanize = 0.004;
            s.harmony = Harmony::Jazzy;
            s.sevenths = true;
            s.bass = Some((Voice::Sub808, B::Roots));
            s.chords = Some((Voice::EPiano, C::Sustain));
            s.pad = Some(Voice::Pad);
            s.melody = Some(*rng.pick(&[Voice::Bells, Voice::EPiano, Voice::Flute]));
            s.density = 0.35;
            s.energy = 0.55;
            s.bright = 0.5;
        }
        Genre::Reggae => {
            s.drums = Some(D::Reggae);
            s.swing = 0.55;
            s.humanize = 0.004;
            s.bass = Some((Voice::FingerBass, B::Roots));
            s.chords = Some((*rng.pick(&[Voice::Organ, Voice::MutedGuitar]), C::Offbeat));
            s.melody = Some(*rng.pick(&[Voice::Flute, Voice::Brass, Voice::Piano]));
            s.density = 0.4;
            s.energy = 0.55;
            s.bright = 0.5;
            s.delay = 0.3;
        }
        Genre::Ambient => {
            s.drums = Some(D::Pulse);
            s.kit = Kit::Soft;
            s.hat_div = 1;
            s.harmony = Harmony::Static;
            s.bass = Some((Voice::SubBass, B::Sustain));
            s.chords = None;
            s.pad = Some(*rng.pick(&[Voice::Pad, Voice::Choir, Voice::Strings]));
            s.melody = Some(*rng.pick(&[Voice::Bells, Voice::Piano, Voice::Flute]));
            s.counter = Some((
                *rng.pick(&[Voice::Bells, Voice::Harp, Voice::Piano]),
                CounterPattern::Arp,
            ));
            s.density = 0.15;
            s.energy = 0.25;
            s.bright = 0.3;
            s.reverb = 0.65;
            s.delay = 0.35;
        }
        Genre::Cinematic => {
            s.drums = Some(D::Cinematic);
            s.kit = Kit::Orchestral;
            s.hat_div = 1;
            s.humanize = 0.004;
            s.bass = Some((Voice::Strings, B::Sustain));
            s.chords = Some((Voice::Brass, C::Sustain));
            s.pad = Some(Voice::Choir);
            s.counter = Some((Voice::Strings, CounterPattern::Ostinato));
            s.melody = Some(*rng.pick(&[Voice::Strings, Voice::Piano, Voice::Flute]));
            s.density = 0.35;
            s.energy = 0.7;
            s.bright = 0.5;
            s.reverb = 0.55;
            s.crash = true;
        }
        Genre::Classical => {
            s.drums = None;
            s.humanize = 0.006;
            s.bass = None;
            s.chords = Some((Voice::Piano, ChordPattern::OomPah));
            s.melody = Some(*rng.pick(&[Voice::Piano, Voice::Strings, Voice::Flute]));
            s.density = 0.55;
            s.energy = 0.4;
            s.bright = 0.5;
            s.reverb = 0.4;
        }
        Genre::Synthwave => {
            s.kit = Kit::Electronic;
            s.bass = Some((Voice::SynthBass, B::Octaves));
            s.chords = Some((Voice::Pad, C::Sustain));
            s.counter = Some((Voice::Pluck, CounterPattern::Arp));
            s.density = 0.45;
            s.reverb = 0.45;
            s.delay = 0.3;
            s.crash = true;
        }
        Genre::Folk => {
            s.drums = Some(D::Pulse);
            s.kit = Kit::Acoustic;
            s.humanize = 0.006;
            s.bass = Some((Voice::FingerBass, B::BoomChick));
            s.chords = Some((Voice::AcousticGuitar, C::Strum));
            s.melody = Some(*rng.pick(&[Voice::Flute, Voice::Piano, Voice::Harp]));
            s.density = 0.45;
            s.energy = 0.45;
            s.bright = 0.55;
        }
        Genre::Country => {
            s.drums = Some(D::Train);
            s.humanize = 0.005;
            s.bass = Some((Voice::FingerBass, B::BoomChick));
            s.chords = Some((Voice::AcousticGuitar, C::Strum));
            s.melody = Some(*rng.pick(&[Voice::ElectricGuitar, Voice::Piano]));
            s.energy = 0.6;
            s.fills = true;
        }
        Genre::Latin => {
            s.drums = Some(D::Bossa);
            s.hat_div = 4;
            s.humanize = 0.005;
            s.harmony = Harmony::Jazzy;
            s.sevenths = true;
            s.bass = Some((Voice::Upright, B::BoomChick));
            s.chords = Some((Voice::AcousticGuitar, C::Comp));
            s.melody = Some(*rng.pick(&[Voice::Flute, Voice::Vibes, Voice::Brass]));
            s.energy = 0.5;
            s.bright = 0.55;
        }
    }
    s
}

/// Which parts of the arrangement an instrument may take, most wanted first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Bass,
    Chords,
    Pad,
    Melody,
    Counter,
}

fn instrument_roles(i: Instrument) -> (&'static [Role], Voice) {
    use Role::*;
    match i {
        Instrument::Piano => (&[Chords, Melody, Counter], Voice::Piano),
        Instrument::ElectricPiano => (&[Chords, Melody], Voice::EPiano),
        Instrument::Organ => (&[Chords, Pad], Voice::Organ),
        Instrument::AcousticGuitar => (&[Chords, Counter, Melody], Voice::AcousticGuitar),
        Instrument::ElectricGuitar => (&[Chords, Melody], Voice::ElectricGuitar),
        Instrument::Bass => (&[Bass], Voice::FingerBass),
        Instrument::SynthBass => (&[Bass], Voice::SynthBass),
        Instrument::Sub808 => (&[Bass], Voice::Sub808),
        Instrument::Strings => (&[Pad, Chords, Melody], Voice::Strings),
        Instrument::Pad => (&[Pad, Chords], Voice::Pad),
        Instrument::Synth => (&[Melody, Counter, Chords], Voice::Lead),
        Instrument::Bells => (&[Melody, Counter], Voice::Bells),
        Instrument::Vibraphone => (&[Melody, Chords], Voice::Vibes),
        Instrument::Flute => (&[Melody, Counter], Voice::Flute),
        Instrument::Brass => (&[Melody, Chords], Voice::Brass),
        Instrument::Choir => (&[Pad, Chords], Voice::Choir),
        Instrument::Harp => (&[Counter, Melody, Chords], Voice::Harp),
        Instrument::Arp => (&[Counter], Voice::Pluck),
        Instrument::Drums => (&[], Voice::Kick),
    }
}

/// The chord pattern a voice can play, given the genre's wish.
fn chord_pattern_for(voice: Voice, wanted: ChordPattern, genre: Genre) -> ChordPattern {
    match voice {
        Voice::Pad | Voice::Strings | Voice::Choir | Voice::Brass
            if wanted != ChordPattern::Offbeat =>
        {
            ChordPattern::Sustain
        }
        Voice::AcousticGuitar if wanted != ChordPattern::Comp => ChordPattern::Strum,
        Voice::ElectricGuitar => match genre {
            Genre::Rock | Genre::Metal => ChordPattern::Power,
            _ if wanted == ChordPattern::Power => ChordPattern::Power,
            _ => ChordPattern::Strum,
        },
        _ if matches!(
            wanted,
            ChordPattern::Power | ChordPattern::Strum | ChordPattern::Chop
        ) =>
        {
            ChordPattern::Block
        }
        _ => wanted,
    }
}

/// Builds the style for the tags under `seed`.
pub fn style_for(reading: &TagReading, rng: &mut Rng) -> Style {
    let genre = reading.genre().unwrap_or(Genre::Pop);
    let mut s = base(genre, rng);

    // Named instruments take roles first, in the order written; the genre keeps the rest.
    let mut taken: Vec<Role> = Vec::new();
    for &inst in &reading.instruments {
        if inst == Instrument::Drums {
            if matches!(s.drums, None | Some(DrumPattern::Pulse)) {
                s.drums = Some(DrumPattern::Backbeat);
                if s.kit == Kit::Soft {
                    s.kit = Kit::Acoustic;
                }
                s.energy = s.energy.max(0.45);
            }
            continue;
        }
        let (roles, voice) = instrument_roles(inst);
        let Some(&role) = roles.iter().find(|r| !taken.contains(r)) else {
            continue;
        };
        taken.push(role);
        match role {
            Role::Bass => {
                let pattern = match (voice, s.bass) {
                    (Voice::Sub808, _) => BassPattern::Long808,
                    (_, Some((_, BassPattern::Long808))) => BassPattern::Roots,
                    (_, Some((_, p))) => p,
                    (_, None) => BassPattern::Roots,
                };
                s.bass = Some((voice, pattern));
            }
            Role::Chords => {
                let wanted = s.chords.map_or(ChordPattern::Block, |(_, p)| p);
                s.chords = Some((voice, chord_pattern_for(voice, wanted, genre)));
            }
            Role::Pad => s.pad = Some(voice),
            Role::Melody => s.melody = Some(voice),
            Role::Counter => {
                let pattern = s.counter.map_or(CounterPattern::Arp, |(_, p)| p);
                s.counter = Some((voice, pattern));
            }
        }
    }
    // A genre pattern a sustained voice cannot play (e.g. strings asked to strum) is adapted.
    if let Some((v, p)) = s.chords {
        if !taken.contains(&Role::Chords) {
            s.chords = Some((v, chord_pattern_for(v, p, genre)));
        }
    }

    for &mood in &reading.moods {
        match mood {
            Mood::Dark => {
                s.bright -= 0.2;
                s.melody_center -= 5;
                s.pad.get_or_insert(Voice::Pad);
                s.reverb += 0.1;
            }
            Mood::Happy => {
                s.bright += 0.15;
                s.density += 0.1;
                s.energy += 0.1;
                s.melody_center += 2;
            }
            Mood::Sad => {
                s.density -= 0.15;
                s.energy -= 0.15;
                s.bright -= 0.1;
                s.reverb += 0.15;
                s.pad.get_or_insert(Voice::Strings);
            }
            Mood::Chill => {
                s.energy -= 0.15;
                s.density -= 0.08;
                s.bright -= 0.08;
                s.reverb += 0.08;
                s.hat_div = s.hat_div.min(2);
            }
            Mood::Calm => {
                s.energy -= 0.25;
                s.density -= 0.12;
                s.bright -= 0.1;
                s.reverb += 0.12;
                s.hat_div = s.hat_div.min(2);
            }
            Mood::Energetic => {
                s.energy += 0.2;
                s.density += 0.1;
                s.bright += 0.1;
                s.crash = true;
                if s.hat_div == 2 && s.drums.is_some() {
                    s.hat_div = 4;
                }
            }
            Mood::Aggressive => {
                s.drive += 0.4;
                s.energy += 0.25;
                s.bright += 0.1;
            }
            Mood::Dreamy => {
                s.reverb += 0.25;
                s.delay += 0.2;
                s.pad.get_or_insert(Voice::Pad);
            }
            Mood::Epic => {
                s.pad.get_or_insert(Voice::Strings);
                s.crash = true;
                s.energy += 0.15;
                s.reverb += 0.15;
            }
            Mood::Mysterious => {
                s.density -= 0.1;
                s.bright -= 0.1;
                s.reverb += 0.15;
                s.pad.get_or_insert(Voice::Pad);
            }
            Mood::Romantic => {
                s.pad.get_or_insert(Voice::Strings);
                s.reverb += 0.1;
            }
            Mood::Uplifting => {
                s.bright += 0.15;
                s.density += 0.05;
                s.melody_center += 2;
            }
            Mood::Groovy => {
                if s.swing < 0.58 {
                    s.swing += 0.04;
                }
                if let Some((v, BassPattern::Roots | BassPattern::Eighths)) = s.bass {
                    s.bass = Some((v, BassPattern::Syncopated));
                }
            }
        }
    }
    for &t in &reading.textures {
        if !s.textures.contains(&t) {
            s.textures.push(t);
        }
    }
    s.energy = s.energy.clamp(0.1, 1.0);
    s.density = s.density.clamp(0.08, 1.0);
    s.bright = s.bright.clamp(0.05, 1.0);
    s.reverb = s.reverb.clamp(0.0, 0.9);
    s.delay = s.delay.clamp(0.0, 0.6);
    s.drive = s.drive.clamp(0.0, 1.0);
    s
}

#[cfg(test)]
mod tests {
    use super::super::tags::parse_tags;
    use super::*;

    fn style(tags: &str) -> Style {
        style_for(&parse_tags(tags), &mut Rng::new(1))
    }

    #[test]
    fn genres_choose_their_grooves() {
        assert_eq!(style("house").drums, Some(DrumPattern::FourFloor));
        assert_eq!(style("jazz").drums, Some(DrumPattern::Jazz));
        assert!(style("jazz").swing > 0.6);
        assert!(style("lofi").swing > 0.55);
        assert_eq!(style("rock").swing, 0.5);
        assert_eq!(style("classical").drums, None);
        assert_eq!(style("").genre, Genre::Pop);
    }

    #[test]
    fn named_instruments_take_roles() {
        let s = style("lofi, guitar, 808, bells");
        assert_eq!(s.chords.map(|c| c.0), Some(Voice::AcousticGuitar));
        assert_eq!(s.chords.map(|c| c.1), Some(ChordPattern::Strum));
        assert_eq!(s.bass, Some((Voice::Sub808, BassPattern::Long808)));
        assert_eq!(s.melody, Some(Voice::Bells));
        let s = style("classical strings piano");
        assert_eq!(s.pad, Some(Voice::Strings));
        assert_eq!(s.chords.map(|c| c.0), Some(Voice::Piano));
        let s = style("ambient drums");
        assert_eq!(s.drums, Some(DrumPattern::Backbeat));
    }

    #[test]
    fn moods_shift_the_recipe() {
        let plain = style("pop");
        let dark = style("pop dark");
        let energetic = style("pop energetic");
        assert!(dark.bright < plain.bright);
        assert!(dark.melody_center < plain.melody_center);
        assert!(energetic.energy > plain.energy);
        assert_eq!(
            style("vinyl crackle rain").textures,
            vec![Texture::VinylCrackle, Texture::Rain]
        );
    }
}
