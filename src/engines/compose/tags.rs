//! Reading the request's `tags` text: which genre, instruments, moods and textures were named, and
//! which words were not understood (reported, then ignored). Also the default tempo per genre.

use serde::Serialize;

/// A musical style the composer knows how to arrange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Genre {
    Lofi,
    HipHop,
    Trap,
    House,
    Techno,
    Trance,
    DrumAndBass,
    Dubstep,
    Rock,
    Metal,
    Pop,
    Jazz,
    Blues,
    Funk,
    Disco,
    Rnb,
    Reggae,
    Ambient,
    Cinematic,
    Classical,
    Synthwave,
    Folk,
    Country,
    Latin,
}

impl Genre {
    /// Tempo used when the request names this genre but no `bpm`.
    pub fn default_bpm(self) -> u32 {
        match self {
            Genre::Lofi => 80,
            Genre::HipHop => 90,
            Genre::Trap => 140,
            Genre::House => 124,
            Genre::Techno => 130,
            Genre::Trance => 138,
            Genre::DrumAndBass => 174,
            Genre::Dubstep => 140,
            Genre::Rock => 120,
            Genre::Metal => 150,
            Genre::Pop => 110,
            Genre::Jazz => 130,
            Genre::Blues => 90,
            Genre::Funk => 105,
            Genre::Disco => 118,
            Genre::Rnb => 85,
            Genre::Reggae => 75,
            Genre::Ambient => 70,
            Genre::Cinematic => 90,
            Genre::Classical => 100,
            Genre::Synthwave => 100,
            Genre::Folk => 100,
            Genre::Country => 110,
            Genre::Latin => 120,
        }
    }
}

/// An instrument the tags may ask for; the arranger gives it a role (bass, chords, pad, melody…).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Instrument {
    Piano,
    ElectricPiano,
    Organ,
    AcousticGuitar,
    ElectricGuitar,
    Bass,
    SynthBass,
    Sub808,
    Strings,
    Pad,
    Synth,
    Bells,
    Vibraphone,
    Flute,
    Brass,
    Choir,
    Harp,
    Arp,
    Drums,
}

/// A mood word; shifts density, brightness, register and space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mood {
    Dark,
    Happy,
    Sad,
    Chill,
    Calm,
    Energetic,
    Aggressive,
    Dreamy,
    Epic,
    Mysterious,
    Romantic,
    Uplifting,
    Groovy,
}

/// A background texture layered under the music.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Texture {
    VinylCrackle,
    Rain,
    TapeHiss,
}

/// What the composer understood from `tags`, in the order the words were written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TagReading {
    /// Genres named; the first one decides the arrangement, later ones are noted only.
    pub genres: Vec<Genre>,
    /// Instruments named, without repeats.
    pub instruments: Vec<Instrument>,
    /// Moods named, without repeats.
    pub moods: Vec<Mood>,
    /// Textures named, without repeats.
    pub textures: Vec<Texture>,
    /// Words that meant nothing to the composer (filler words such as "and" are dropped silently).
    pub ignored: Vec<String>,
}

impl TagReading {
    /// The genre that shapes the arrangement, if any was named.
    pub fn genre(&self) -> Option<Genre> {
        self.genres.first().copied()
    }

    /// Whether the tags named this mood.
    pub fn has_mood(&self, mood: Mood) -> bool {
        self.moods.contains(&mood)
    }

    /// Whether the tags named this instrument.
    pub fn has_instrument(&self, instrument: Instrument) -> bool {
        self.instruments.contains(&instrument)
    }
}

#[derive(Debug, Clone, Copy)]
enum Term {
    G(Genre),
    I(Instrument),
    M(Mood),
    T(Texture),
    /// A word that names a genre and implies its signature instrument ("orchestral", "synthwave").
    GI(Genre, Instrument),
    /// A filler word: understood as meaning nothing.
    Filler,
}

/// Known phrases; at each word the longest matching phrase wins.
const PHRASES: &[(&str, Term)] = {
    use Genre as Gn;
    use Instrument as In;
    use Mood as Md;
    use Term::*;
    &[
        // genres
        ("lofi", G(Gn::Lofi)),
        ("lo fi", G(Gn::Lofi)),
        ("chillhop", G(Gn::Lofi)),
        ("hip hop", G(Gn::HipHop)),
        ("hiphop", G(Gn::HipHop)),
        ("rap", G(Gn::HipHop)),
        ("boom bap", G(Gn::HipHop)),
        ("boombap", G(Gn::HipHop)),
        ("trap", G(Gn::Trap)),
        ("drill", G(Gn::Trap)),
        ("deep house", G(Gn::House)),
        ("tech house", G(Gn::House)),
        ("house", G(Gn::House)),
        ("garage", G(Gn::House)),
        ("techno", G(Gn::Techno)),
        ("minimal techno", G(Gn::Techno)),
        ("trance", G(Gn::Trance)),
        ("edm", G(Gn::Trance)),
        ("dance", G(Gn::House)),
        ("electronic", G(Gn::Techno)),
        ("drum and bass", G(Gn::DrumAndBass)),
        ("drum n bass", G(Gn::DrumAndBass)),
        ("drum & bass", G(Gn::DrumAndBass)),
        ("drum&bass", G(Gn::DrumAndBass)),
        ("drumnbass", G(Gn::DrumAndBass)),
        ("dnb", G(Gn::DrumAndBass)),
        ("d&b", G(Gn::DrumAndBass)),
        ("jungle", G(Gn::DrumAndBass)),
        ("liquid", G(Gn::DrumAndBass)),
        ("dubstep", G(Gn::Dubstep)),
        ("rock", G(Gn::Rock)),
        ("indie", G(Gn::Rock)),
        ("punk", G(Gn::Rock)),
        ("grunge", G(Gn::Rock)),
        ("alternative", G(Gn::Rock)),
        ("metal", G(Gn::Metal)),
        ("heavy metal", G(Gn::Metal)),
        ("pop", G(Gn::Pop)),
        ("k pop", G(Gn::Pop)),
        ("kpop", G(Gn::Pop)),
        ("jazz", G(Gn::Jazz)),
        ("jazzy", G(Gn::Jazz)),
        ("swing", G(Gn::Jazz)),
        ("bebop", G(Gn::Jazz)),
        ("blues", G(Gn::Blues)),
        ("bluesy", G(Gn::Blues)),
        ("funk", G(Gn::Funk)),
        ("funky", G(Gn::Funk)),
        ("disco", G(Gn::Disco)),
        ("nu disco", G(Gn::Disco)),
        ("r&b", G(Gn::Rnb)),
        ("rnb", G(Gn::Rnb)),
        ("r and b", G(Gn::Rnb)),
        ("soul", G(Gn::Rnb)),
        ("neo soul", G(Gn::Rnb)),
        ("reggae", G(Gn::Reggae)),
        ("dub", G(Gn::Reggae)),
        ("ambient", G(Gn::Ambient)),
        ("drone", G(Gn::Ambient)),
        ("meditation", G(Gn::Ambient)),
        ("new age", G(Gn::Ambient)),
        ("cinematic", G(Gn::Cinematic)),
        ("orchestral", GI(Gn::Cinematic, In::Strings)),
        ("orchestra", GI(Gn::Cinematic, In::Strings)),
        ("film score", G(Gn::Cinematic)),
        ("soundtrack", G(Gn::Cinematic)),
        ("score", G(Gn::Cinematic)),
        ("trailer", G(Gn::Cinematic)),
        ("classical", G(Gn::Classical)),
        ("baroque", G(Gn::Classical)),
        ("romantic era", G(Gn::Classical)),
        ("synthwave", GI(Gn::Synthwave, In::Synth)),
        ("retrowave", GI(Gn::Synthwave, In::Synth)),
        ("outrun", GI(Gn::Synthwave, In::Synth)),
        ("vaporwave", G(Gn::Synthwave)),
        ("80s", G(Gn::Synthwave)),
        ("folk", G(Gn::Folk)),
        ("acoustic", GI(Gn::Folk, In::AcousticGuitar)),
        ("singer songwriter", G(Gn::Folk)),
        ("country", G(Gn::Country)),
        ("bluegrass", G(Gn::Country)),
        ("latin", G(Gn::Latin)),
        ("bossa nova", G(Gn::Latin)),
        ("bossa", G(Gn::Latin)),
        ("salsa", G(Gn::Latin)),
        ("samba", G(Gn::Latin)),
        // instruments
        ("piano", I(In::Piano)),
        ("grand piano", I(In::Piano)),
        ("keys", I(In::Piano)),
        ("electric piano", I(In::ElectricPiano)),
        ("e piano", I(In::ElectricPiano)),
        ("epiano", I(In::ElectricPiano)),
        ("rhodes", I(In::ElectricPiano)),
        ("wurlitzer", I(In::ElectricPiano)),
        ("organ", I(In::Organ)),
        ("hammond", I(In::Organ)),
        ("guitar", I(In::AcousticGuitar)),
        ("acoustic guitar", I(In::AcousticGuitar)),
        ("nylon guitar", I(In::AcousticGuitar)),
        ("electric guitar", I(In::ElectricGuitar)),
        ("distorted guitar", I(In::ElectricGuitar)),
        ("guitars", I(In::ElectricGuitar)),
        ("bass", I(In::Bass)),
        ("bass guitar", I(In::Bass)),
        ("bassline", I(In::Bass)),
        ("upright bass", I(In::Bass)),
        ("double bass", I(In::Bass)),
        ("synth bass", I(In::SynthBass)),
        ("808", I(In::Sub808)),
        ("808s", I(In::Sub808)),
        ("sub bass", I(In::Sub808)),
        ("sub", I(In::Sub808)),
        ("strings", I(In::Strings)),
        ("string", I(In::Strings)),
        ("violin", I(In::Strings)),
        ("violins", I(In::Strings)),
        ("cello", I(In::Strings)),
        ("pad", I(In::Pad)),
        ("pads", I(In::Pad)),
        ("synth pad", I(In::Pad)),
        ("synth", I(In::Synth)),
        ("synths", I(In::Synth)),
        ("synthesizer", I(In::Synth)),
        ("lead", I(In::Synth)),
        ("synth lead", I(In::Synth)),
        ("bells", I(In::Bells)),
        ("bell", I(In::Bells)),
        ("chimes", I(In::Bells)),
        ("glockenspiel", I(In::Bells)),
        ("music box", I(In::Bells)),
        ("celesta", I(In::Bells)),
        ("vibraphone", I(In::Vibraphone)),
        ("vibes", I(In::Vibraphone)),
        ("marimba", I(In::Vibraphone)),
        ("flute", I(In::Flute)),
        ("woodwind", I(In::Flute)),
        ("woodwinds", I(In::Flute)),
        ("brass", I(In::Brass)),
        ("horns", I(In::Brass)),
        ("horn", I(In::Brass)),
        ("trumpet", I(In::Brass)),
        ("sax", I(In::Brass)),
        ("saxophone", I(In::Brass)),
        ("choir", I(In::Choir)),
        ("vocals", I(In::Choir)),
        ("voices", I(In::Choir)),
        ("harp", I(In::Harp)),
        ("arp", I(In::Arp)),
        ("arps", I(In::Arp)),
        ("arpeggio", I(In::Arp)),
        ("arpeggios", I(In::Arp)),
        ("drums", I(In::Drums)),
        ("drum", I(In::Drums)),
        ("percussion", I(In::Drums)),
        // moods
        ("dark", M(Md::Dark)),
        ("moody", M(Md::Dark)),
        ("ominous", M(Md::Dark)),
        ("gloomy", M(Md::Dark)),
        ("happy", M(Md::Happy)),
        ("cheerful", M(Md::Happy)),
        ("joyful", M(Md::Happy)),
        ("bright", M(Md::Happy)),
        ("fun", M(Md::Happy)),
        ("playful", M(Md::Happy)),
        ("sad", M(Md::Sad)),
        ("melancholic", M(Md::Sad)),
        ("melancholy", M(Md::Sad)),
        ("emotional", M(Md::Sad)),
        ("nostalgic", M(Md::Sad)),
        ("chill", M(Md::Chill)),
        ("chilled", M(Md::Chill)),
        ("laid back", M(Md::Chill)),
        ("mellow", M(Md::Chill)),
        ("smooth", M(Md::Chill)),
        ("calm", M(Md::Calm)),
        ("relaxing", M(Md::Calm)),
        ("relaxed", M(Md::Calm)),
        ("peaceful", M(Md::Calm)),
        ("soft", M(Md::Calm)),
        ("gentle", M(Md::Calm)),
        ("sleep", M(Md::Calm)),
        ("study", M(Md::Calm)),
        ("energetic", M(Md::Energetic)),
        ("upbeat", M(Md::Energetic)),
        ("driving", M(Md::Energetic)),
        ("intense", M(Md::Energetic)),
        ("hype", M(Md::Energetic)),
        ("fast", M(Md::Energetic)),
        ("powerful", M(Md::Energetic)),
        ("aggressive", M(Md::Aggressive)),
        ("angry", M(Md::Aggressive)),
        ("heavy", M(Md::Aggressive)),
        ("hard", M(Md::Aggressive)),
        ("dreamy", M(Md::Dreamy)),
        ("ethereal", M(Md::Dreamy)),
        ("atmospheric", M(Md::Dreamy)),
        ("spacey", M(Md::Dreamy)),
        ("spacious", M(Md::Dreamy)),
        ("epic", M(Md::Epic)),
        ("heroic", M(Md::Epic)),
        ("triumphant", M(Md::Epic)),
        ("mysterious", M(Md::Mysterious)),
        ("suspense", M(Md::Mysterious)),
        ("tense", M(Md::Mysterious)),
        ("romantic", M(Md::Romantic)),
        ("love", M(Md::Romantic)),
        ("warm", M(Md::Romantic)),
        ("uplifting", M(Md::Uplifting)),
        ("hopeful", M(Md::Uplifting)),
        ("inspiring", M(Md::Uplifting)),
        ("groovy", M(Md::Groovy)),
        ("groove", M(Md::Groovy)),
        ("bouncy", M(Md::Groovy)),
        // textures
        ("vinyl crackle", T(Texture::VinylCrackle)),
        ("vinyl", T(Texture::VinylCrackle)),
        ("crackle", T(Texture::VinylCrackle)),
        ("crackles", T(Texture::VinylCrackle)),
        ("record crackle", T(Texture::VinylCrackle)),
        ("rain", T(Texture::Rain)),
        ("rainy", T(Texture::Rain)),
        ("raining", T(Texture::Rain)),
        ("rain sounds", T(Texture::Rain)),
        ("tape hiss", T(Texture::TapeHiss)),
        ("hiss", T(Texture::TapeHiss)),
        ("tape", T(Texture::TapeHiss)),
        ("cassette", T(Texture::TapeHiss)),
        // filler
        ("and", Filler),
        ("&", Filler),
        ("with", Filler),
        ("a", Filler),
        ("an", Filler),
        ("the", Filler),
        ("of", Filler),
        ("in", Filler),
        ("some", Filler),
        ("music", Filler),
        ("song", Filler),
        ("track", Filler),
        ("beat", Filler),
        ("beats", Filler),
        ("instrumental", Filler),
        ("vibe", Filler),
        ("vibes", Filler),
        ("style", Filler),
        ("feel", Filler),
        ("type", Filler),
        ("bpm", Filler),
        ("sounds", Filler),
    ]
};

/// Splits text into lower-case words: letters, digits and `&` stay; everything else separates.
fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !(c.is_alphanumeric() || c == '&'))
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Reads `tags`: longest known phrase first at each word, unknown words kept in `ignored`.
pub fn parse_tags(tags: &str) -> TagReading {
    let phrases: Vec<(Vec<String>, Term)> = PHRASES.iter().map(|(p, t)| (words(p), *t)).collect();
    let ws = words(tags);
    let mut out = TagReading::default();
    let mut i = 0;
    while i < ws.len() {
        let mut best: Option<(usize, Term)> = None;
        for (p, t) in &phrases {
            let n = p.len();
            if n > 0
                && i + n <= ws.len()
                && ws[i..i + n] == p[..]
                && best.is_none_or(|(m, _)| n > m)
            {
                best = Some((n, *t));
            }
        }
        match best {
            Some((n, term)) => {
                match term {
                    Term::G(g) => push_new(&mut out.genres, g),
                    Term::I(x) => push_new(&mut out.instruments, x),
                    Term::M(m) => push_new(&mut out.moods, m),
                    Term::T(t) => push_new(&mut out.textures, t),
                    Term::GI(g, x) => {
                        push_new(&mut out.genres, g);
                        push_new(&mut out.instruments, x);
                    }
                    Term::Filler => {}
                }
                i += n;
            }
            None => {
                if !ws[i].chars().all(|c| c.is_ascii_digit()) {
                    out.ignored.push(ws[i].clone());
                }
                i += 1;
            }
        }
    }
    out
}

fn push_new<T: PartialEq>(v: &mut Vec<T>, x: T) {
    if !v.contains(&x) {
        v.push(x);
    }
}

/// The tempo chosen when a request gives `tags` but no `bpm`: the genre's usual tempo, nudged by
/// mood (energetic faster, calm slower), 100 when no genre is named; always within 30–300.
pub fn default_bpm_for_tags(tags: &str) -> u32 {
    let reading = parse_tags(tags);
    let base = reading.genre().map_or(100, Genre::default_bpm) as f64;
    let mut factor = 1.0;
    if reading.has_mood(Mood::Energetic) || reading.has_mood(Mood::Aggressive) {
        factor *= 1.1;
    }
    if reading.has_mood(Mood::Calm) || reading.has_mood(Mood::Chill) || reading.has_mood(Mood::Sad)
    {
        factor *= 0.9;
    }
    ((base * factor).round() as u32).clamp(30, 300)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_seed_example() {
        let r = parse_tags("lofi chill, piano, vinyl crackle");
        assert_eq!(r.genres, vec![Genre::Lofi]);
        assert_eq!(r.moods, vec![Mood::Chill]);
        assert_eq!(r.instruments, vec![Instrument::Piano]);
        assert_eq!(r.textures, vec![Texture::VinylCrackle]);
        assert!(r.ignored.is_empty(), "{:?}", r.ignored);
    }

    #[test]
    fn multi_word_phrases_win_over_single_words() {
        let r = parse_tags("Drum and Bass with 808s, electric piano & tape hiss");
        assert_eq!(r.genres, vec![Genre::DrumAndBass]);
        assert_eq!(
            r.instruments,
            vec![Instrument::Sub808, Instrument::ElectricPiano]
        );
        assert_eq!(r.textures, vec![Texture::TapeHiss]);
        let r = parse_tags("hip-hop, Lo-Fi; R&B");
        assert_eq!(r.genres, vec![Genre::HipHop, Genre::Lofi, Genre::Rnb]);
        assert_eq!(r.genre(), Some(Genre::HipHop));
    }

    #[test]
    fn unknown_words_are_reported_and_fillers_dropped() {
        let r = parse_tags("sparkly jazz with a kazoo and the rain, 120 bpm");
        assert_eq!(r.genres, vec![Genre::Jazz]);
        assert_eq!(r.textures, vec![Texture::Rain]);
        assert_eq!(r.ignored, vec!["sparkly".to_string(), "kazoo".to_string()]);
        let empty = parse_tags("  ,, ");
        assert_eq!(empty, TagReading::default());
    }

    #[test]
    fn repeats_are_listed_once() {
        let r = parse_tags("piano piano keys dark moody");
        assert_eq!(r.instruments, vec![Instrument::Piano]);
        assert_eq!(r.moods, vec![Mood::Dark]);
    }

    #[test]
    fn default_bpm_follows_genre_and_mood() {
        assert_eq!(default_bpm_for_tags("lofi hip hop"), 80);
        assert_eq!(default_bpm_for_tags("drum and bass"), 174);
        assert_eq!(default_bpm_for_tags("house"), 124);
        assert_eq!(default_bpm_for_tags("ambient"), 70);
        assert_eq!(default_bpm_for_tags(""), 100);
        assert_eq!(default_bpm_for_tags("energetic rock"), 132);
        assert_eq!(default_bpm_for_tags("calm jazz"), 117);
        for g in ["techno", "metal energetic", "reggae sad calm", "whatever"] {
            let b = default_bpm_for_tags(g);
            assert!((30..=300).contains(&b));
        }
    }
}
