//! Synthesised drums, no samples: kick (pitch-swept sine and click), snare (tone plus filtered
//! noise, brushes for jazz), clap (noise bursts), hats/ride/crash (six detuned square waves, the
//! 808 recipe, plus noise), shaker, rim, toms and taiko. The kit changes tuning and decay.

use super::dmath::{decay_coef, midi_hz, soft_clip, Noise};
use super::dsp::{inc, read, tables, OnePole, Svf, SR};
use super::score::{Kit, Note, Timbre, Voice};

/// Seconds a drum hit rings.
pub fn length(v: Voice) -> f64 {
    match v {
        Voice::Kick => 0.9,
        Voice::Snare | Voice::Clap => 0.4,
        Voice::HatClosed => 0.15,
        Voice::HatOpen => 0.7,
        Voice::Ride => 1.6,
        Voice::Crash => 2.5,
        Voice::Shaker => 0.15,
        Voice::Rim => 0.1,
        Voice::Tom => 0.8,
        Voice::Taiko => 1.4,
        _ => 0.5,
    }
}

/// Renders one hit into `out`.
pub fn render(v: Voice, tm: &Timbre, n: &Note, out: &mut [f32]) {
    let vel = n.vel.clamp(0.0, 1.0);
    let amp = vel * (0.4 + 0.6 * vel);
    match v {
        Voice::Kick => kick(tm.kit, n, amp, out),
        Voice::Snare => snare(tm.kit, n, amp, out),
        Voice::Clap => clap(n, amp, out),
        Voice::HatClosed => metal(tm.kit, n, amp, out, 0.035, 7000.0),
        Voice::HatOpen => metal(tm.kit, n, amp, out, 0.28, 7000.0),
        Voice::Ride => ride(n, amp, out),
        Voice::Crash => metal(tm.kit, n, amp, out, 1.1, 3500.0),
        Voice::Shaker => shaker(n, amp, out),
        Voice::Rim => rim(n, amp, out),
        Voice::Tom => tom(n, amp, out, 0.35, 0.8),
        Voice::Taiko => tom(n, amp, out, 0.6, 1.6),
        _ => {}
    }
}

fn kick(kit: Kit, n: &Note, amp: f32, out: &mut [f32]) {
    // (start multiple, pitch tau, amp tau, click); the body, a pure sine (distortion would add a
    // major third as the 5th harmonic), ends on the note's pitch: the key's tonic.
    let (mult, tp, ta, click) = match kit {
        Kit::Acoustic => (3.0, 0.018, 0.22, 0.35),
        Kit::Electronic => (4.0, 0.017, 0.38, 0.25),
        Kit::Lofi => (2.6, 0.02, 0.26, 0.12),
        Kit::Jazz => (2.2, 0.015, 0.18, 0.15),
        Kit::Orchestral => (2.0, 0.03, 0.5, 0.1),
        Kit::Soft => (1.8, 0.025, 0.4, 0.0),
    };
    let f0 = midi_hz(n.pitch as f64);
    let sine = &tables().sine;
    let mut phase = 0u32;
    let (mut pe, pc) = (1.0f32, decay_coef(tp, SR));
    let (mut ae, ac) = (1.0f32, decay_coef(ta, SR));
    let (mut ce, cc) = (click, decay_coef(0.004, SR));
    let base = inc(f0) as f32;
    let span = base * (mult - 1.0);
    let mut noise = Noise::new(n.seed);
    let mut lp = OnePole::new(if kit == Kit::Lofi { 2000.0 } else { 4500.0 });
    let attack = (0.0008 * SR) as usize;
    for (i, o) in out.iter_mut().enumerate() {
        // The sweep lands exactly on the pitch after ~3 time constants instead of creeping
        // towards it (a long approach from above smears energy onto the next semitone).
        let sweep = ((pe - 0.05) * (1.0 / 0.95)).max(0.0);
        phase = phase.wrapping_add((base + span * sweep) as u32);
        let body = read(sine, phase);
        let a = if i < attack {
            i as f32 / attack as f32
        } else {
            1.0
        };
        *o = (body * ae + lp.low(noise.next()) * ce) * a * amp;
        pe *= pc;
        ae *= ac;
        ce *= cc;
    }
}

fn snare(kit: Kit, n: &Note, amp: f32, out: &mut [f32]) {
    let sine = &tables().sine;
    let mut noise = Noise::new(n.seed);
    let brush = kit == Kit::Jazz;
    let (tone_lvl, noise_tau, hp_hz, lp_hz) = match kit {
        Kit::Acoustic => (0.55, 0.16, 900.0, 9000.0),
        Kit::Electronic => (0.45, 0.18, 1200.0, 11000.0),
        Kit::Lofi => (0.5, 0.14, 700.0, 4500.0),
        Kit::Jazz => (0.1, 0.12, 1500.0, 7000.0),
        Kit::Orchestral => (0.3, 0.2, 600.0, 8000.0),
        Kit::Soft => (0.3, 0.12, 800.0, 5000.0),
    };
    // Shell modes on the note's pitch and its fifth (tuned to the key by the arranger).
    let hz = midi_hz(n.pitch as f64);
    let (i1, i2) = (inc(hz), inc(hz * 1.5));
    let (mut p1, mut p2) = (0u32, 0u32);
    let (mut te, tc) = (tone_lvl, decay_coef(0.05, SR));
    let (mut ne, nc) = (1.0f32, decay_coef(noise_tau, SR));
    let mut hp = Svf::new(hp_hz, 0.7);
    let mut lp = Svf::new(lp_hz, 0.7);
    let attack = if brush { (0.008 * SR) as usize } else { 1 };
    for (i, o) in out.iter_mut().enumerate() {
        p1 = p1.wrapping_add(i1);
        p2 = p2.wrapping_add(i2);
        let tone = (read(sine, p1) + 0.6 * read(sine, p2)) * te;
        let nz = lp.low(hp.high(noise.next())) * ne;
        let a = if i < attack {
            i as f32 / attack as f32
        } else {
            1.0
        };
        *o = (tone + nz * 0.9) * a * amp;
        te *= tc;
        ne *= nc;
    }
}

fn clap(n: &Note, amp: f32, out: &mut [f32]) {
    let mut noise = Noise::new(n.seed);
    let mut bp = Svf::new(1200.0, 1.5);
    let burst = decay_coef(0.003, SR);
    let tail = decay_coef(0.12, SR);
    let gap = (0.009 * SR) as usize;
    let mut e = 0.0f32;
    for (i, o) in out.iter_mut().enumerate() {
        // Three quick bursts, then the room tail.
        if i == 0 || i == gap || i == 2 * gap {
            e = 1.0;
        } else if i == 3 * gap {
            e = 0.8;
        }
        e *= if i < 3 * gap { burst } else { tail };
        *o = bp.band(noise.next()) * e * amp * 2.2;
    }
}

/// Six square waves at inharmonic ratios plus noise, high-passed: hats and cymbals.
fn metal(kit: Kit, n: &Note, amp: f32, out: &mut [f32], tau: f64, hp_hz: f64) {
    const RATIOS: [f64; 6] = [1.0, 1.4826, 1.8003, 2.5456, 2.6307, 3.8946];
    let base = if kit == Kit::Lofi { 180.0 } else { 205.3 };
    let incs: [u32; 6] = RATIOS.map(|r| inc(base * r * 1.7));
    let mut ph = [0u32; 6];
    for (k, p) in ph.iter_mut().enumerate() {
        *p = n.seed.wrapping_mul(k as u32 + 1);
    }
    let mut noise = Noise::new(n.seed);
    let mut hp = Svf::new(hp_hz, 0.8);
    let mut hp2 = OnePole::new(hp_hz);
    let lp_hz = match kit {
        Kit::Lofi => 7000.0,
        Kit::Jazz | Kit::Soft => 10000.0,
        _ => 15000.0,
    };
    let mut lp = Svf::new(lp_hz, 0.7);
    let (mut e, c) = (1.0f32, decay_coef(tau, SR));
    let attack = if tau > 0.5 { (0.002 * SR) as usize } else { 1 };
    for (i, o) in out.iter_mut().enumerate() {
        let mut sq = 0.0;
        for (p, inc) in ph.iter_mut().zip(incs) {
            *p = p.wrapping_add(inc);
            sq += if *p >> 31 == 0 { 1.0 } else { -1.0 };
        }
        let x = sq * (1.0 / 6.0) + 0.6 * noise.next();
        let y = lp.low(hp2.high(hp.high(x)));
        let a = if i < attack {
            i as f32 / attack as f32
        } else {
            1.0
        };
        *o = y * e * a * amp * 1.4;
        e *= c;
    }
}

fn ride(n: &Note, amp: f32, out: &mut [f32]) {
    let sine = &tables().sine;
    metal(Kit::Jazz, n, amp * 0.7, out, 0.8, 4500.0);
    // The ride's bell: a clear ping over the wash.
    let hz = midi_hz(n.pitch as f64);
    let (i1, i2) = (inc(hz), inc(hz * 1.5));
    let (mut p1, mut p2) = (0u32, 0u32);
    let (mut e, c) = (0.25 * amp, decay_coef(0.35, SR));
    for o in out.iter_mut() {
        p1 = p1.wrapping_add(i1);
        p2 = p2.wrapping_add(i2);
        *o += (read(sine, p1) + 0.5 * read(sine, p2)) * e;
        e *= c;
    }
}

fn shaker(n: &Note, amp: f32, out: &mut [f32]) {
    let mut noise = Noise::new(n.seed);
    let mut bp = Svf::new(6500.0, 1.2);
    let attack = (0.008 * SR) as usize;
    let (mut e, c) = (1.0f32, decay_coef(0.04, SR));
    for (i, o) in out.iter_mut().enumerate() {
        let a = if i < attack {
            i as f32 / attack as f32
        } else {
            e *= c;
            e
        };
        *o = bp.band(noise.next()) * a * amp * 1.5;
    }
}

fn rim(n: &Note, amp: f32, out: &mut [f32]) {
    let sine = &tables().sine;
    let mut noise = Noise::new(n.seed);
    let hz = midi_hz(n.pitch as f64);
    let (i1, i2) = (inc(hz), inc(hz * 2.0));
    let (mut p1, mut p2) = (0u32, 0u32);
    let (mut e, c) = (1.0f32, decay_coef(0.015, SR));
    let (mut ce, cc) = (0.6f32, decay_coef(0.003, SR));
    let mut hp = OnePole::new(2500.0);
    for o in out.iter_mut() {
        p1 = p1.wrapping_add(i1);
        p2 = p2.wrapping_add(i2);
        *o = ((read(sine, p1) + 0.7 * read(sine, p2)) * e + hp.high(noise.next()) * ce) * amp * 0.8;
        e *= c;
        ce *= cc;
    }
}

/// Tom or taiko: a sine falling onto the note's pitch, with a skin-noise attack.
fn tom(n: &Note, amp: f32, out: &mut [f32], tau: f64, noise_lvl: f32) {
    let sine = &tables().sine;
    let hz = midi_hz(n.pitch as f64);
    let base = inc(hz) as f32;
    let mut phase = 0u32;
    let (mut pe, pc) = (1.0f32, decay_coef(0.08, SR));
    let (mut e, c) = (1.0f32, decay_coef(tau, SR));
    let (mut ne, nc) = (noise_lvl, decay_coef(0.03, SR));
    let mut noise = Noise::new(n.seed);
    let mut lp = Svf::new(hz * 6.0, 0.8);
    for o in out.iter_mut() {
        phase = phase.wrapping_add((base * (1.0 + 0.5 * pe)) as u32);
        *o = (soft_clip(read(sine, phase) * 1.3) * e + lp.low(noise.next()) * ne) * amp;
        pe *= pc;
        e *= c;
        ne *= nc;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_drum_hit_starts_loud_and_dies_away() {
        let kits = [
            Kit::Acoustic,
            Kit::Electronic,
            Kit::Lofi,
            Kit::Jazz,
            Kit::Orchestral,
            Kit::Soft,
        ];
        let drums = [
            Voice::Kick,
            Voice::Snare,
            Voice::Clap,
            Voice::HatClosed,
            Voice::HatOpen,
            Voice::Ride,
            Voice::Crash,
            Voice::Shaker,
            Voice::Rim,
            Voice::Tom,
            Voice::Taiko,
        ];
        for kit in kits {
            let tm = Timbre {
                bright: 0.5,
                drive: 0.0,
                kit,
                wobble_hz: 0.0,
            };
            for v in drums {
                let n = Note {
                    part: 0,
                    start: 0.0,
                    dur: 0.1,
                    pitch: 33.0,
                    vel: 1.0,
                    pan: 0.0,
                    glide: 0.0,
                    seed: 9,
                };
                let mut out = vec![0.0; (length(v) * SR) as usize];
                render(v, &tm, &n, &mut out);
                let q = out.len() / 10;
                let energy = |s: &[f32]| s.iter().map(|x| (x * x) as f64).sum::<f64>();
                let head = energy(&out[..q]);
                let tail = energy(&out[out.len() - q..]);
                assert!(head > 1e-3, "{v:?} {kit:?} silent");
                assert!(tail < head * 0.05, "{v:?} {kit:?} does not decay");
                assert!(
                    out.iter().all(|x| x.is_finite() && x.abs() < 3.0),
                    "{v:?} {kit:?}"
                );
            }
        }
    }
}
