//! The pitched voices: each renders one note into a mono buffer. Piano (wavetable crossfade from a
//! bright to a dark spectrum), electric piano and bells (FM), organ, subtractive pads, strings,
//! choir, brass, flute, leads and basses, and Karplus–Strong guitars and harp. Drums live in
//! `drums.rs`, the dispatch over both in `play.rs`. Every voice is allocation-free per sample and seeded per note.

use super::dmath::{self, decay_coef, soft_clip, Noise};
use super::dsp::{cycles_to_phase, inc, read, tables, OnePole, Svf, SR};
use super::score::{Note, Timbre, Voice};

impl Voice {
    /// Seconds a note sounds after its gate closes (release tail).
    fn tail(self) -> f64 {
        match self {
            Voice::Piano => 0.5,
            Voice::EPiano => 0.6,
            Voice::Organ => 0.12,
            Voice::AcousticGuitar | Voice::Harp => 0.6,
            Voice::ElectricGuitar => 0.3,
            Voice::MutedGuitar => 0.05,
            Voice::Pad => 1.6,
            Voice::Strings => 0.8,
            Voice::Choir => 1.2,
            Voice::Brass | Voice::Flute | Voice::Lead => 0.35,
            Voice::Bells => 3.0,
            Voice::Vibes => 0.8,
            Voice::Pluck => 0.3,
            Voice::FingerBass | Voice::Upright | Voice::SynthBass | Voice::Reese => 0.2,
            Voice::Sub808 => 0.25,
            Voice::SubBass => 1.2,
            _ => 0.0,
        }
    }

    /// Longest a note of this voice may ring, seconds (bounds the work per note).
    fn max_len(self) -> f64 {
        match self {
            Voice::Piano | Voice::EPiano | Voice::Vibes => 7.0,
            Voice::Bells => 6.0,
            Voice::AcousticGuitar | Voice::Harp => 5.0,
            Voice::MutedGuitar => 0.6,
            Voice::Pluck => 1.5,
            Voice::Upright => 2.5,
            _ => 60.0,
        }
    }
}

/// Seconds a pitched note sounds from its onset: its gate plus the release tail, bounded.
pub fn length(voice: Voice, note: &Note) -> f64 {
    (note.dur + voice.tail()).min(voice.max_len())
}

/// Scratch memory reused across notes (delay lines), so rendering allocates only on growth.
#[derive(Default)]
pub struct Scratch {
    ring: Vec<f32>,
}

/// Renders one pitched note into `out` (zeroed, non-empty); other voices leave it silent.
pub fn render(voice: Voice, tm: &Timbre, note: &Note, scratch: &mut Scratch, out: &mut [f32]) {
    let ctx = Ctx::new(note);
    match voice {
        Voice::Piano => piano(&ctx, tm, out),
        Voice::EPiano => epiano(&ctx, tm, out),
        Voice::Organ => organ(&ctx, out),
        Voice::AcousticGuitar => string(&ctx, tm, scratch, out, StringKind::Acoustic),
        Voice::ElectricGuitar => string(&ctx, tm, scratch, out, StringKind::Electric),
        Voice::MutedGuitar => string(&ctx, tm, scratch, out, StringKind::Muted),
        Voice::Harp => string(&ctx, tm, scratch, out, StringKind::Harp),
        Voice::Pad => pad(&ctx, tm, out),
        Voice::Strings => strings(&ctx, tm, out),
        Voice::Choir => choir(&ctx, out),
        Voice::Brass => brass(&ctx, tm, out),
        Voice::Flute => flute(&ctx, out),
        Voice::Bells => bells(&ctx, out),
        Voice::Vibes => vibes(&ctx, out),
        Voice::Lead => lead(&ctx, tm, out),
        Voice::Pluck => pluck(&ctx, tm, out),
        Voice::FingerBass => finger_bass(&ctx, tm, out),
        Voice::Upright => upright(&ctx, out),
        Voice::SynthBass => synth_bass(&ctx, tm, out),
        Voice::Sub808 => sub808(&ctx, tm, out),
        Voice::Reese => reese(&ctx, tm, out),
        Voice::SubBass => sub_bass(&ctx, out),
        _ => {}
    }
}

/// What every voice derives from the note.
struct Ctx {
    hz: f64,
    midi: f64,
    vel: f32,
    /// Velocity as loudness (softer notes are quieter and darker).
    amp: f32,
    gate: usize,
    seed: u32,
    glide: f32,
}

impl Ctx {
    fn new(n: &Note) -> Ctx {
        let vel = n.vel.clamp(0.0, 1.0);
        Ctx {
            hz: dmath::midi_hz(n.pitch as f64),
            midi: n.pitch as f64,
            vel,
            amp: vel * (0.45 + 0.55 * vel),
            gate: ((n.dur * SR) as usize).max(1),
            seed: n.seed,
            glide: n.glide,
        }
    }

    /// Start phase from the seed (so layered notes do not phase-cancel identically).
    fn phase(&self, k: u32) -> u32 {
        self.seed
            .wrapping_mul(0x9e37_79b9)
            .wrapping_add(k.wrapping_mul(0x85eb_ca6b))
    }
}

/// A linear-attack, held, exponential-release gate.
struct Gate {
    attack: usize,
    gate: usize,
    rel: f32,
    level: f32,
}

impl Gate {
    fn new(attack_s: f64, gate: usize, release_s: f64) -> Gate {
        Gate {
            attack: ((attack_s * SR) as usize).max(1),
            gate,
            rel: decay_coef(release_s, SR),
            level: 0.0,
        }
    }

    #[inline]
    fn next(&mut self, i: usize) -> f32 {
        if i < self.gate {
            self.level = if i < self.attack {
                i as f32 / self.attack as f32
            } else {
                1.0
            };
        } else {
            self.level *= self.rel;
        }
        self.level
    }
}

/// A slow sine LFO from the sine table.
struct Lfo {
    phase: u32,
    inc: u32,
}

impl Lfo {
    fn new(hz: f64, phase: u32) -> Lfo {
        Lfo {
            phase,
            inc: inc(hz),
        }
    }

    #[inline]
    fn next(&mut self, sine: &[f32]) -> f32 {
        self.phase = self.phase.wrapping_add(self.inc);
        read(sine, self.phase)
    }
}

fn cents(c: f64) -> f64 {
    dmath::exp2(c / 1200.0)
}

fn piano(c: &Ctx, tm: &Timbre, out: &mut [f32]) {
    let t = tables();
    let bright_t = t.piano_bright.level(c.hz);
    let dark_t = t.piano_dark.level(c.hz);
    let (i1, i2) = (inc(c.hz * cents(0.8)), inc(c.hz * cents(-0.8)));
    let (mut p1, mut p2) = (c.phase(1), c.phase(2));
    let mut b = (0.25 + 0.75 * c.vel * (0.4 + 0.6 * tm.bright)).min(1.0);
    let bc = decay_coef(0.25 + 0.2 * (1.0 - c.vel as f64), SR);
    let tau2 = (3.5 - (c.midi - 60.0) * 0.06).clamp(0.8, 7.0);
    let (mut e1, mut e2) = (0.55f32, 0.45f32);
    let (c1, c2) = (decay_coef(0.3, SR), decay_coef(tau2, SR));
    let mut gate = Gate::new(0.0015, c.gate, 0.1);
    let mut noise = Noise::new(c.seed);
    let mut hammer = 0.12 * c.vel;
    let hc = decay_coef(0.004, SR);
    let mut hlp = OnePole::new(2500.0);
    for (i, o) in out.iter_mut().enumerate() {
        p1 = p1.wrapping_add(i1);
        p2 = p2.wrapping_add(i2);
        let d = read(dark_t, p1) + read(dark_t, p2);
        let br = read(bright_t, p1) + read(bright_t, p2);
        let s = 0.5 * (d + (br - d) * b);
        let h = hlp.low(noise.next()) * hammer;
        *o = (s * (e1 + e2) + h) * gate.next(i) * c.amp;
        e1 *= c1;
        e2 *= c2;
        b *= bc;
        hammer *= hc;
    }
}

fn epiano(c: &Ctx, tm: &Timbre, out: &mut [f32]) {
    let sine = &tables().sine;
    let (ic, im, it) = (inc(c.hz), inc(c.hz * 1.0007), inc(c.hz * 14.0));
    let (mut pc, mut pm, mut pt) = (c.phase(1), c.phase(2), c.phase(3));
    let mut index = 0.08 + 0.28 * c.vel * (0.3 + 0.7 * tm.bright);
    let ix = decay_coef(0.35, SR);
    let mut tine = 0.18 * c.vel;
    let tc = decay_coef(0.025, SR);
    let tau = (2.2 - (c.midi - 60.0) * 0.04).clamp(0.6, 4.0);
    let mut amp = 1.0f32;
    let ac = decay_coef(tau, SR);
    let mut gate = Gate::new(0.0015, c.gate, 0.15);
    for (i, o) in out.iter_mut().enumerate() {
        pm = pm.wrapping_add(im);
        pt = pt.wrapping_add(it);
        pc = pc.wrapping_add(ic);
        let m = read(sine, pm) * (index + 0.03);
        let s = read(sine, pc.wrapping_add(cycles_to_phase(m)));
        let tn = read(sine, pt) * tine;
        *o = (s + tn) * amp * gate.next(i) * c.amp;
        index *= ix;
        tine *= tc;
        amp *= ac;
    }
}

fn organ(c: &Ctx, out: &mut [f32]) {
    let t = tables();
    let w = t.organ.level(c.hz);
    let (i1, i2) = (c.hz, c.hz * cents(3.0));
    let mut lfo = Lfo::new(6.2, c.phase(9));
    let (mut p1, mut p2) = (c.phase(1), c.phase(2));
    let mut gate = Gate::new(0.006, c.gate, 0.03);
    let mut noise = Noise::new(c.seed);
    let mut click = 0.06f32;
    let cc = decay_coef(0.002, SR);
    let (base1, base2) = (inc(i1) as f32, inc(i2) as f32);
    for (i, o) in out.iter_mut().enumerate() {
        let v = 1.0 + 0.0015 * lfo.next(&t.sine);
        p1 = p1.wrapping_add((base1 * v) as u32);
        p2 = p2.wrapping_add((base2 * v) as u32);
        let s = 0.5 * (read(w, p1) + read(w, p2));
        *o = (s * 0.8 + noise.next() * click) * gate.next(i) * c.amp;
        click *= cc;
    }
}

#[derive(Clone, Copy, PartialEq)]
enum StringKind {
    Acoustic,
    Electric,
    Muted,
    Harp,
}

/// Karplus–Strong plucked string: a noise burst circulating in a tuned, damped delay line.
fn string(c: &Ctx, tm: &Timbre, scratch: &mut Scratch, out: &mut [f32], kind: StringKind) {
    // (decay time, loop-filter delay, excitation brightness in harmonics)
    let (t60, loop_s, pick_h) = match kind {
        StringKind::Acoustic => ((4.0 - (c.midi - 40.0) * 0.06).clamp(0.8, 4.0), 0.5, 5.0),
        StringKind::Electric => (5.0, 0.45, 6.0),
        StringKind::Muted => (0.15, 0.5, 4.0),
        StringKind::Harp => (3.0, 0.5, 3.0),
    };
    // A soft, pitch-relative pick keeps the low partials (and so the pitch class) dominant.
    let pick_hz =
        (c.hz * pick_h * (0.6 + tm.bright as f64) * (0.6 + c.vel as f64)).clamp(300.0, 6000.0);
    let period = SR / c.hz;
    let delay = period - loop_s;
    let len = ((delay as usize) + 4).next_power_of_two();
    if scratch.ring.len() < len {
        scratch.ring.resize(len, 0.0);
    }
    let ring = &mut scratch.ring[..len];
    ring.fill(0.0);
    let mask = len - 1;
    let rho = dmath::exp(-3.0 * std::f64::consts::LN_10 / (t60 * c.hz)) as f32;
    let d_int = delay as usize;
    let frac = (delay - d_int as f64) as f32;
    let a = 1.0 - loop_s as f32;
    let burst = period as usize;
    let mut noise = Noise::new(c.seed);
    let mut exc = (OnePole::new(pick_hz), OnePole::new(pick_hz));
    let mut gate = Gate::new(
        0.0,
        c.gate,
        if kind == StringKind::Muted {
            0.02
        } else {
            0.06
        },
    );
    let drive = if kind == StringKind::Electric {
        tm.drive
    } else {
        0.0
    };
    let mut cab = Svf::new(if drive > 0.0 { 4200.0 } else { 7000.0 }, 0.8);
    let mut prev = 0.0f32;
    for (i, o) in out.iter_mut().enumerate() {
        let x = if i < burst {
            exc.1.low(exc.0.low(noise.next())) * 2.0
        } else {
            0.0
        };
        // Fractional read at `delay` samples back, then the loop's two-tap low-pass.
        let r0 = ring[(i.wrapping_sub(d_int)) & mask];
        let r1 = ring[(i.wrapping_sub(d_int + 1)) & mask];
        let tap = r0 + (r1 - r0) * frac;
        let y = x + rho * (a * tap + (1.0 - a) * prev);
        prev = tap;
        ring[i & mask] = y;
        let mut s = y;
        if drive > 0.0 {
            let g = 1.0 + 14.0 * drive;
            s = soft_clip(s * g) * (1.2 / (1.0 + 0.4 * g).sqrt());
        }
        *o = cab.low(s) * gate.next(i) * c.amp * 1.6;
    }
}

fn pad(c: &Ctx, tm: &Timbre, out: &mut [f32]) {
    let t = tables();
    let w = t.saw.level(c.hz);
    let incs = [inc(c.hz * cents(-9.0)), inc(c.hz), inc(c.hz * cents(8.0))];
    let mut ph = [c.phase(1), c.phase(2), c.phase(3)];
    let attack = (c.gate as f64 / SR * 0.4).clamp(0.02, 0.6);
    let mut gate = Gate::new(attack, c.gate, 0.5);
    let base = c.hz * (1.5 + 5.0 * tm.bright as f64);
    let mut lfo = Lfo::new(0.17, c.phase(4));
    let mut f = Svf::new(base, 0.9);
    for (k, chunk) in out.chunks_mut(32).enumerate() {
        let l = lfo.next(&t.sine) as f64;
        for _ in 0..31 {
            lfo.next(&t.sine);
        }
        f.set((base * (1.0 + 0.25 * l)).clamp(150.0, 9000.0), 0.9);
        for (j, o) in chunk.iter_mut().enumerate() {
            let mut s = 0.0;
            for (p, i) in ph.iter_mut().zip(incs) {
                *p = p.wrapping_add(i);
                s += read(w, *p);
            }
            *o = f.low(s * 0.33) * gate.next(k * 32 + j) * c.amp;
        }
    }
}

fn strings(c: &Ctx, tm: &Timbre, out: &mut [f32]) {
    let t = tables();
    let w = t.saw.level(c.hz);
    let incs = [
        inc(c.hz * cents(-6.0)) as f32,
        inc(c.hz) as f32,
        inc(c.hz * cents(5.0)) as f32,
    ];
    let mut ph = [c.phase(1), c.phase(2), c.phase(3)];
    let attack = (c.gate as f64 / SR * 0.3).clamp(0.012, 0.25);
    let short = c.gate as f64 / SR < 0.3;
    let mut gate = Gate::new(attack, c.gate, if short { 0.06 } else { 0.25 });
    let mut lfo = Lfo::new(5.3, c.phase(4));
    let mut depth = 0.0f32;
    let depth_step = 0.003 / (0.5 * SR as f32);
    let cutoff = (c.hz * (2.5 + 6.0 * tm.bright as f64 * c.vel as f64)).clamp(300.0, 10_000.0);
    let mut f = Svf::new(cutoff, 0.7);
    let mut hp = OnePole::new(90.0);
    for (i, o) in out.iter_mut().enumerate() {
        let v = 1.0 + depth * lfo.next(&t.sine);
        depth = (depth + depth_step).min(0.003);
        let mut s = 0.0;
        for (p, inc) in ph.iter_mut().zip(incs) {
            *p = p.wrapping_add((inc * v) as u32);
            s += read(w, *p);
        }
        *o = hp.high(f.low(s * 0.33)) * gate.next(i) * c.amp;
    }
}

fn choir(c: &Ctx, out: &mut [f32]) {
    let t = tables();
    let w = t.saw.level(c.hz);
    let incs = [
        inc(c.hz * cents(-5.0)) as f32,
        inc(c.hz * cents(5.0)) as f32,
    ];
    let mut ph = [c.phase(1), c.phase(2)];
    let mut gate = Gate::new((c.gate as f64 / SR * 0.4).clamp(0.05, 0.4), c.gate, 0.4);
    let mut lfo = Lfo::new(5.0, c.phase(4));
    let mut f1 = Svf::new(700.0, 5.0);
    let mut f2 = Svf::new(1150.0, 6.0);
    let mut body = Svf::new(c.hz * 3.0, 0.7);
    for (i, o) in out.iter_mut().enumerate() {
        let v = 1.0 + 0.003 * lfo.next(&t.sine);
        let mut s = 0.0;
        for (p, inc) in ph.iter_mut().zip(incs) {
            *p = p.wrapping_add((inc * v) as u32);
            s += read(w, *p);
        }
        s *= 0.5;
        let y = 0.9 * f1.band(s) + 0.6 * f2.band(s) + 0.35 * body.low(s);
        *o = y * gate.next(i) * c.amp;
    }
}

fn brass(c: &Ctx, tm: &Timbre, out: &mut [f32]) {
    let t = tables();
    let w = t.saw.level(c.hz);
    let incs = [
        inc(c.hz * cents(-4.0)) as f32,
        inc(c.hz * cents(4.0)) as f32,
    ];
    let mut ph = [c.phase(1), c.phase(2)];
    let mut gate = Gate::new(0.03, c.gate, 0.08);
    // The filter opens over ~50 ms, then settles to 70%.
    let mut swell = 1.0f32;
    let sc = decay_coef(0.05, SR);
    let mut settle = 1.0f32;
    let stc = decay_coef(0.4, SR);
    let mut scoop = 0.025f32;
    let scc = decay_coef(0.03, SR);
    let peak = (2.0 + 6.0 * c.vel * tm.bright) as f64;
    let mut f = Svf::new(c.hz, 1.1);
    for (k, chunk) in out.chunks_mut(32).enumerate() {
        let open = (1.0 - swell) * (0.7 + 0.3 * settle);
        f.set(
            (c.hz * (1.2 + peak * open as f64)).clamp(100.0, 12_000.0),
            1.1,
        );
        for (j, o) in chunk.iter_mut().enumerate() {
            let v = 1.0 - scoop;
            let mut s = 0.0;
            for (p, inc) in ph.iter_mut().zip(incs) {
                *p = p.wrapping_add((inc * v) as u32);
                s += read(w, *p);
            }
            *o = soft_clip(f.low(s * 0.5) * 1.4) * gate.next(k * 32 + j) * c.amp;
            scoop *= scc;
        }
        for _ in 0..chunk.len() {
            swell *= sc;
            settle *= stc;
        }
    }
}

fn flute(c: &Ctx, out: &mut [f32]) {
    let t = tables();
    let (i1, i2) = (inc(c.hz) as f32, inc(c.hz * 2.0) as f32);
    let (mut p1, mut p2) = (c.phase(1), c.phase(2));
    let mut gate = Gate::new(0.06, c.gate, 0.08);
    let mut lfo = Lfo::new(5.0, c.phase(4));
    let mut depth = 0.0f32;
    let step = 0.0035 / (0.3 * SR as f32);
    let mut noise = Noise::new(c.seed);
    let mut breath = Svf::new(c.hz * 2.0, 2.0);
    for (i, o) in out.iter_mut().enumerate() {
        let v = 1.0 + depth * lfo.next(&t.sine);
        depth = (depth + step).min(0.0035);
        p1 = p1.wrapping_add((i1 * v) as u32);
        p2 = p2.wrapping_add((i2 * v) as u32);
        let s = read(&t.sine, p1) + 0.12 * read(&t.sine, p2) + 0.25 * breath.band(noise.next());
        *o = s * gate.next(i) * c.amp;
    }
}

fn bells(c: &Ctx, out: &mut [f32]) {
    let sine = &tables().sine;
    // A 1:3 ratio keeps every partial harmonic (an inharmonic bell would blur the key).
    let (ic, im) = (inc(c.hz), inc(c.hz * 3.0));
    let (mut pc, mut pm, mut pf) = (c.phase(1), c.phase(2), c.phase(3));
    // A modest index (0.5–1.6 rad) keeps the upper sidebands, among them the tonic's major
    // third (5th harmonic), quiet enough not to colour minor keys.
    let mut index = 0.08 + 0.17 * c.vel;
    let ix = decay_coef(0.5, SR);
    let tau = (2.5 - (c.midi - 72.0) * 0.05).clamp(0.8, 3.5);
    let mut amp = 1.0f32;
    let ac = decay_coef(tau, SR);
    let mut gate = Gate::new(0.001, c.gate, 1.0);
    for (i, o) in out.iter_mut().enumerate() {
        pm = pm.wrapping_add(im);
        pc = pc.wrapping_add(ic);
        pf = pf.wrapping_add(ic);
        let m = read(sine, pm) * (index + 0.03);
        let s = 0.7 * read(sine, pc.wrapping_add(cycles_to_phase(m))) + 0.3 * read(sine, pf);
        *o = s * amp * gate.next(i) * c.amp;
        index *= ix;
        amp *= ac;
    }
}

fn vibes(c: &Ctx, out: &mut [f32]) {
    let sine = &tables().sine;
    let (i1, i4) = (inc(c.hz), inc(c.hz * 4.0));
    let (mut p1, mut p4) = (c.phase(1), c.phase(2));
    let mut over = 0.3 * c.vel;
    let oc = decay_coef(0.12, SR);
    let mut amp = 1.0f32;
    let ac = decay_coef(1.6, SR);
    let mut trem = Lfo::new(5.5, c.phase(3));
    let mut gate = Gate::new(0.001, c.gate, 0.25);
    for (i, o) in out.iter_mut().enumerate() {
        p1 = p1.wrapping_add(i1);
        p4 = p4.wrapping_add(i4);
        let s = read(sine, p1) + over * read(sine, p4);
        let tr = 1.0 - 0.2 * (0.5 + 0.5 * trem.next(sine));
        *o = s * amp * tr * gate.next(i) * c.amp;
        over *= oc;
        amp *= ac;
    }
}

fn lead(c: &Ctx, tm: &Timbre, out: &mut [f32]) {
    let t = tables();
    let (ws, wq) = (t.saw.level(c.hz), t.square.level(c.hz));
    let (i1, i2) = (inc(c.hz) as f32, inc(c.hz * cents(7.0)) as f32);
    let (mut p1, mut p2) = (c.phase(1), c.phase(2));
    let mut gate = Gate::new(0.005, c.gate, 0.08);
    let mut lfo = Lfo::new(5.5, c.phase(4));
    let mut depth = 0.0f32;
    let step = 0.004 / (0.4 * SR as f32);
    let mut env = 1.0f32;
    let ec = decay_coef(0.25, SR);
    let bright = tm.bright as f64;
    let mut f = Svf::new(c.hz * 4.0, 1.6);
    for (k, chunk) in out.chunks_mut(32).enumerate() {
        let cut = c.hz * (1.5 + (3.0 + 10.0 * bright * c.vel as f64) * env as f64 + 3.0 * bright);
        f.set(cut.clamp(150.0, 12_000.0), 1.6);
        for (j, o) in chunk.iter_mut().enumerate() {
            let v = 1.0 + depth * lfo.next(&t.sine);
            depth = (depth + step).min(0.004);
            p1 = p1.wrapping_add((i1 * v) as u32);
            p2 = p2.wrapping_add((i2 * v) as u32);
            let s = 0.5 * (read(ws, p1) + read(wq, p2));
            *o = f.low(s) * gate.next(k * 32 + j) * c.amp * 0.8;
        }
        for _ in 0..chunk.len() {
            env *= ec;
        }
    }
}

fn pluck(c: &Ctx, tm: &Timbre, out: &mut [f32]) {
    let t = tables();
    let w = t.saw.level(c.hz);
    let i1 = inc(c.hz);
    let mut p1 = c.phase(1);
    let mut gate = Gate::new(0.001, c.gate, 0.06);
    let mut env = 1.0f32;
    let ec = decay_coef(0.07, SR);
    let mut amp = 1.0f32;
    let ac = decay_coef(0.3, SR);
    let peak = 14.0 * tm.bright as f64 * c.vel as f64;
    let mut f = Svf::new(c.hz * 4.0, 1.2);
    for (k, chunk) in out.chunks_mut(32).enumerate() {
        f.set(
            (200.0 + c.hz * (1.0 + peak * env as f64)).clamp(150.0, 14_000.0),
            1.2,
        );
        for (j, o) in chunk.iter_mut().enumerate() {
            p1 = p1.wrapping_add(i1);
            *o = f.low(read(w, p1)) * amp * gate.next(k * 32 + j) * c.amp;
            amp *= ac;
        }
        for _ in 0..chunk.len() {
            env *= ec;
        }
    }
}

fn finger_bass(c: &Ctx, tm: &Timbre, out: &mut [f32]) {
    let t = tables();
    let w = t.saw.level(c.hz);
    let i1 = inc(c.hz);
    let mut p1 = c.phase(1);
    let mut gate = Gate::new(0.003, c.gate, 0.04);
    let mut env = 1.0f32;
    let ec = decay_coef(0.12, SR);
    let mut amp = 1.0f32;
    let ac = decay_coef(1.5, SR);
    let mut noise = Noise::new(c.seed);
    let mut click = 0.08 * c.vel;
    let cc = decay_coef(0.002, SR);
    // Basses stay dark: the tonic's 5th harmonic is a major third, which would blur minor keys.
    let peak = 1.0 + 3.0 * tm.bright as f64;
    let drive = tm.drive;
    let mut f = Svf::new(c.hz * 4.0, 0.9);
    for (k, chunk) in out.chunks_mut(32).enumerate() {
        f.set((c.hz * (1.2 + peak * env as f64)).clamp(60.0, 6000.0), 0.9);
        for (j, o) in chunk.iter_mut().enumerate() {
            p1 = p1.wrapping_add(i1);
            let mut s = 0.6 * f.low(read(w, p1)) + 0.6 * read(&t.sine, p1) + noise.next() * click;
            if drive > 0.0 {
                s = soft_clip(s * (1.0 + 2.0 * drive));
            }
            *o = s * amp * gate.next(k * 32 + j) * c.amp;
            amp *= ac;
            click *= cc;
        }
        for _ in 0..chunk.len() {
            env *= ec;
        }
    }
}

fn upright(c: &Ctx, out: &mut [f32]) {
    let t = tables();
    let w = t.triangle.level(c.hz);
    let i1 = inc(c.hz);
    let mut p1 = c.phase(1);
    let mut gate = Gate::new(0.006, c.gate, 0.07);
    let mut amp = 1.0f32;
    let ac = decay_coef(0.6, SR);
    let mut thump = 0.6f32;
    let tc = decay_coef(0.03, SR);
    let mut f = Svf::new(c.hz * 4.0, 0.7);
    for (i, o) in out.iter_mut().enumerate() {
        p1 = p1.wrapping_add(i1);
        let s = f.low(0.7 * read(w, p1)) + (0.6 + thump) * read(&t.sine, p1);
        *o = s * amp * gate.next(i) * c.amp * 0.8;
        amp *= ac;
        thump *= tc;
    }
}

fn synth_bass(c: &Ctx, tm: &Timbre, out: &mut [f32]) {
    let t = tables();
    let (ws, wq) = (t.saw.level(c.hz), t.square.level(c.hz));
    let (i1, i2) = (inc(c.hz), inc(c.hz * cents(5.0)));
    let (mut p1, mut p2) = (c.phase(1), c.phase(2));
    let mut gate = Gate::new(0.002, c.gate, 0.03);
    let mut env = 1.0f32;
    let ec = decay_coef(0.1, SR);
    let peak = 2.0 + 5.0 * tm.bright as f64;
    let mut wob = Lfo::new(tm.wobble_hz.max(0.01), 0);
    let mut f = Svf::new(c.hz * 4.0, 2.2);
    for (k, chunk) in out.chunks_mut(32).enumerate() {
        let w = if tm.wobble_hz > 0.0 {
            let x = wob.next(&t.sine) as f64;
            for _ in 0..31 {
                wob.next(&t.sine);
            }
            0.3 + 0.7 * (0.5 + 0.5 * x)
        } else {
            1.0
        };
        f.set(
            (c.hz * (1.5 + peak * env as f64) * w).clamp(60.0, 8000.0),
            2.2,
        );
        for (j, o) in chunk.iter_mut().enumerate() {
            p1 = p1.wrapping_add(i1);
            p2 = p2.wrapping_add(i2);
            let s = f.low(0.5 * (read(ws, p1) + read(wq, p2)));
            *o = soft_clip(s * (1.5 + 2.0 * tm.drive)) * 0.7 * gate.next(k * 32 + j) * c.amp
                + 0.35 * read(&t.sine, p1) * gate.level * c.amp;
        }
        for _ in 0..chunk.len() {
            env *= ec;
        }
    }
}

fn sub808(c: &Ctx, tm: &Timbre, out: &mut [f32]) {
    let sine = &tables().sine;
    let base = inc(c.hz) as f32;
    let mut p = 0u32;
    let punch = 1.0 - cents(500.0) as f32;
    let glide = cents(c.glide as f64 * 100.0) as f32 - 1.0;
    let (mut ep, mut eg) = (1.0f32, 1.0f32);
    let (cp, cg) = (decay_coef(0.02, SR), decay_coef(0.06, SR));
    let mut amp = 1.0f32;
    let ac = decay_coef(1.4, SR);
    let mut gate = Gate::new(0.001, c.gate, 0.05);
    let g = 1.0 + 2.5 * tm.drive;
    for (i, o) in out.iter_mut().enumerate() {
        let ratio = 1.0 - punch * ep + glide * eg;
        p = p.wrapping_add((base * ratio) as u32);
        *o = soft_clip(read(sine, p) * g) * amp * gate.next(i) * c.amp;
        ep *= cp;
        eg *= cg;
        amp *= ac;
    }
}

fn reese(c: &Ctx, tm: &Timbre, out: &mut [f32]) {
    let t = tables();
    let w = t.saw.level(c.hz);
    let (i1, i2) = (inc(c.hz * cents(-14.0)), inc(c.hz * cents(14.0)));
    let (mut p1, mut p2, mut p3) = (c.phase(1), c.phase(2), c.phase(3));
    let i3 = inc(c.hz);
    let mut gate = Gate::new(0.01, c.gate, 0.06);
    let base = c.hz * (1.5 + 1.5 * tm.bright as f64);
    let mut wob = Lfo::new(tm.wobble_hz.max(0.01), 0);
    let mut f = Svf::new(base, 1.0);
    for (k, chunk) in out.chunks_mut(32).enumerate() {
        let w_amt = if tm.wobble_hz > 0.0 {
            let x = wob.next(&t.sine) as f64;
            for _ in 0..31 {
                wob.next(&t.sine);
            }
            0.25 + 1.5 * (0.5 + 0.5 * x)
        } else {
            1.0
        };
        f.set((base * w_amt).clamp(60.0, 8000.0), 1.0);
        for (j, o) in chunk.iter_mut().enumerate() {
            p1 = p1.wrapping_add(i1);
            p2 = p2.wrapping_add(i2);
            p3 = p3.wrapping_add(i3);
            let s = f.low(0.5 * (read(w, p1) + read(w, p2)));
            let s = soft_clip(s * (1.0 + 1.5 * tm.drive)) * 0.6 + 0.7 * read(&t.sine, p3);
            *o = s * gate.next(k * 32 + j) * c.amp;
        }
    }
}

fn sub_bass(c: &Ctx, out: &mut [f32]) {
    let t = tables();
    let w = t.triangle.level(c.hz);
    let i1 = inc(c.hz);
    let mut p1 = c.phase(1);
    let mut gate = Gate::new(0.06, c.gate, 0.4);
    for (i, o) in out.iter_mut().enumerate() {
        p1 = p1.wrapping_add(i1);
        *o = (read(&t.sine, p1) + 0.15 * read(w, p1)) * gate.next(i) * c.amp;
    }
}

#[cfg(test)]
mod tests {
    use super::super::play::{note_len, render};
    use super::super::score::Kit;
    use super::*;

    const ALL_PITCHED: [Voice; 22] = [
        Voice::Piano,
        Voice::EPiano,
        Voice::Organ,
        Voice::AcousticGuitar,
        Voice::ElectricGuitar,
        Voice::MutedGuitar,
        Voice::Harp,
        Voice::Pad,
        Voice::Strings,
        Voice::Choir,
        Voice::Brass,
        Voice::Flute,
        Voice::Bells,
        Voice::Vibes,
        Voice::Lead,
        Voice::Pluck,
        Voice::FingerBass,
        Voice::Upright,
        Voice::SynthBass,
        Voice::Sub808,
        Voice::Reese,
        Voice::SubBass,
    ];

    fn note(pitch: f32) -> Note {
        Note {
            part: 0,
            start: 0.0,
            dur: 0.5,
            pitch,
            vel: 0.8,
            pan: 0.0,
            glide: 0.0,
            seed: 42,
        }
    }

    /// Dominant period by autocorrelation, in samples.
    fn period(x: &[f32], min: usize, max: usize) -> usize {
        let mut best = (0.0f64, 0);
        for lag in min..max {
            let s: f64 = x.iter().zip(&x[lag..]).map(|(a, b)| (*a * *b) as f64).sum();
            if s > best.0 {
                best = (s, lag);
            }
        }
        best.1
    }

    #[test]
    fn every_pitched_voice_sounds_at_its_pitch_and_stays_bounded() {
        let tm = Timbre {
            bright: 0.6,
            drive: 0.3,
            kit: Kit::Acoustic,
            wobble_hz: 0.0,
        };
        let mut scratch = Scratch::default();
        for v in ALL_PITCHED {
            let bass = matches!(
                v,
                Voice::FingerBass
                    | Voice::Upright
                    | Voice::SynthBass
                    | Voice::Sub808
                    | Voice::Reese
                    | Voice::SubBass
            );
            // A2 (110 Hz) for basses, A4 (440 Hz) for the rest.
            let (pitch, hz) = if bass { (45.0, 110.0) } else { (69.0, 440.0) };
            let n = note(pitch);
            let mut out = vec![0.0; note_len(v, &n)];
            render(v, &tm, &n, &mut scratch, &mut out);
            let peak = out.iter().fold(0f32, |m, x| m.max(x.abs()));
            assert!(peak > 0.05 && peak < 2.5, "{v:?} peak {peak}");
            assert!(out.iter().all(|x| x.is_finite()), "{v:?}");
            // Period of a stretch after the attack.
            let seg = &out[4410..4410 + 4096.min(out.len() - 4410)];
            let want = SR / hz;
            let got = period(seg, (want * 0.6) as usize, (want * 1.4) as usize) as f64;
            assert!(
                (got - want).abs() <= want * 0.03 + 1.0,
                "{v:?}: period {got} want {want}"
            );
        }
    }

    #[test]
    fn notes_are_deterministic_and_seeded() {
        let tm = Timbre {
            bright: 0.5,
            drive: 0.0,
            kit: Kit::Acoustic,
            wobble_hz: 0.0,
        };
        let mut scratch = Scratch::default();
        let n = note(60.0);
        let len = note_len(Voice::AcousticGuitar, &n);
        let (mut a, mut b, mut c) = (vec![0.0; len], vec![0.0; len], vec![0.0; len]);
        render(Voice::AcousticGuitar, &tm, &n, &mut scratch, &mut a);
        render(Voice::AcousticGuitar, &tm, &n, &mut scratch, &mut b);
        render(
            Voice::AcousticGuitar,
            &tm,
            &Note { seed: 7, ..n },
            &mut scratch,
            &mut c,
        );
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
