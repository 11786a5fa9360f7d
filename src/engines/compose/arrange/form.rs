//! The form: sections sized to the duration in whole phrases, and which layers play in each.

use super::super::score::{Section, SectionKind};
use super::super::style::Style;

/// Layers active in a section.
#[derive(Debug, Clone, Copy)]
pub(super) struct Layers {
    /// 0 silent, 1 light (kick and hats), 2 full.
    pub(super) drums: u8,
    pub(super) bass: bool,
    pub(super) chords: bool,
    pub(super) pad: bool,
    /// 0 none, 1 verse motif, 2 chorus motif.
    pub(super) melody: u8,
    pub(super) counter: bool,
}

pub(super) fn layers(kind: SectionKind, style: &Style, phrases: usize) -> Layers {
    let no_melody = style.melody.is_none();
    let no_chords = style.chords.is_none();
    let mut l = match kind {
        SectionKind::Intro => Layers {
            drums: 1,
            bass: phrases <= 3,
            chords: true,
            pad: true,
            melody: 0,
            counter: true,
        },
        SectionKind::Verse => Layers {
            drums: 2,
            bass: true,
            chords: true,
            pad: no_chords,
            melody: 1,
            counter: no_melody,
        },
        SectionKind::Chorus => Layers {
            drums: 2,
            bass: true,
            chords: true,
            pad: true,
            melody: 2,
            counter: true,
        },
        SectionKind::Bridge => Layers {
            drums: 1,
            bass: true,
            chords: true,
            pad: true,
            melody: if style.counter.is_none() { 1 } else { 0 },
            counter: true,
        },
        SectionKind::Outro => Layers {
            drums: 1,
            bass: true,
            chords: true,
            pad: true,
            melody: 0,
            counter: true,
        },
    };
    if style.drums.is_none() {
        l.drums = 0;
    }
    l
}

/// Sections for `total_bars`, in whole phrases of `phrase_bars` (the last may run past the end).
pub(super) fn plan_sections(total_bars: u32, phrase_bars: u32) -> Vec<Section> {
    use SectionKind::*;
    let p = total_bars.div_ceil(phrase_bars).max(1) as usize;
    let kinds: Vec<SectionKind> = match p {
        1 => vec![Verse],
        2 => vec![Verse, Chorus],
        3 => vec![Intro, Verse, Chorus],
        4 => vec![Intro, Verse, Chorus, Outro],
        _ => {
            const BODY: [SectionKind; 12] = [
                Verse, Verse, Chorus, Chorus, Verse, Verse, Chorus, Chorus, Bridge, Bridge, Chorus,
                Chorus,
            ];
            let mut k = vec![Intro];
            k.extend((0..p - 2).map(|i| BODY[i % BODY.len()]));
            k.push(Outro);
            k
        }
    };
    let mut out: Vec<Section> = Vec::new();
    for (i, kind) in kinds.into_iter().enumerate() {
        let start = i as u32 * phrase_bars;
        match out.last_mut() {
            Some(s) if s.kind == kind => s.bars += phrase_bars,
            _ => out.push(Section {
                kind,
                start_bar: start,
                bars: phrase_bars,
            }),
        }
    }
    out
}
