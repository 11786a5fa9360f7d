//! Background textures layered under the music, at a level relative to the mix: vinyl crackle
//! (random clicks and pops over a faint rumble), rain (filtered noise with droplet pings) and tape
//! hiss (high-passed noise). Seeded like everything else.

use super::dmath::{decay_coef, Noise, Rng};
use super::dsp::{inc, read, tables, OnePole, Svf, SR};
use super::tags::Texture;

/// Adds each texture to the stereo mix, scaled to the mix's RMS level.
pub fn add(textures: &[Texture], l: &mut [f32], r: &mut [f32], seed: u64) {
    if textures.is_empty() || l.is_empty() {
        return;
    }
    let rms = (l
        .iter()
        .chain(r.iter())
        .map(|x| (*x as f64) * (*x as f64))
        .sum::<f64>()
        / (2 * l.len()) as f64)
        .sqrt() as f32;
    let level = if rms > 0.0 { rms } else { 0.05 };
    for (k, t) in textures.iter().enumerate() {
        let s = Rng::stream(seed, "texture").fork(&k.to_string()).seed32();
        match t {
            Texture::VinylCrackle => vinyl(l, r, level, s),
            Texture::Rain => rain(l, r, level, s),
            Texture::TapeHiss => hiss(l, r, level, s),
        }
    }
}

fn vinyl(l: &mut [f32], r: &mut [f32], level: f32, seed: u32) {
    let mut n = Noise::new(seed);
    let mut rumble = OnePole::new(400.0);
    let mut click_hp = OnePole::new(1500.0);
    let (mut cl, mut cr) = (0.0f32, 0.0f32);
    let decay = decay_coef(0.0004, SR);
    let click_p = 14.0 / SR as f32;
    let pop_p = 0.4 / SR as f32;
    for i in 0..l.len() {
        let u = n.unit();
        if u < click_p {
            let a = n.unit();
            let amp = a * a * a * 1.6 * level * 6.0;
            let pan = n.unit();
            cl += amp * (1.0 - pan * 0.6);
            cr += amp * (0.4 + pan * 0.6);
        } else if u > 1.0 - pop_p {
            let amp = (0.5 + 0.5 * n.unit()) * level * 5.0;
            cl += amp;
            cr += amp;
        }
        let base = rumble.low(n.next()) * level * 0.35;
        let c = click_hp.high(cl + cr) * 0.5;
        l[i] += base + c + (cl - cr) * 0.2;
        r[i] += base + c - (cl - cr) * 0.2;
        cl *= decay;
        cr *= decay;
    }
}

fn rain(l: &mut [f32], r: &mut [f32], level: f32, seed: u32) {
    let mut nl = Noise::new(seed);
    let mut nr = Noise::new(seed ^ 0x5bd1_e995);
    let mut fl = (Svf::new(2500.0, 0.6), OnePole::new(350.0));
    let mut fr = (Svf::new(2500.0, 0.6), OnePole::new(350.0));
    let mut swell = OnePole::new(0.3);
    for i in 0..l.len() {
        let m = 0.8 + 0.4 * swell.low(nl.next() * 4.0).clamp(-0.5, 0.5);
        l[i] += fl.1.high(fl.0.low(nl.next())) * level * 0.9 * m;
        r[i] += fr.1.high(fr.0.low(nr.next())) * level * 0.9 * m;
    }
    // Droplets: short high pings at random times and places.
    let sine = &tables().sine;
    let mut rng = Rng::new(seed as u64);
    let count = (l.len() as f64 / SR * 25.0) as usize;
    let len = (0.03 * SR) as usize;
    for _ in 0..count {
        let start = rng.below(l.len());
        let hz = rng.range(1500.0, 4500.0);
        let amp = rng.range(0.2, 1.0) as f32 * level * 0.8;
        let pan = rng.unit() as f32;
        let step = inc(hz);
        let mut p = 0u32;
        let (mut e, c) = (1.0f32, decay_coef(0.008, SR));
        for j in 0..len.min(l.len() - start) {
            p = p.wrapping_add(step);
            let x = read(sine, p) * e * amp;
            l[start + j] += x * (1.0 - pan);
            r[start + j] += x * pan;
            e *= c;
        }
    }
}

fn hiss(l: &mut [f32], r: &mut [f32], level: f32, seed: u32) {
    let mut nl = Noise::new(seed);
    let mut nr = Noise::new(seed ^ 0x2545_f491);
    let (mut hl, mut hr) = (OnePole::new(3000.0), OnePole::new(3000.0));
    for i in 0..l.len() {
        l[i] += hl.high(nl.next()) * level * 0.18;
        r[i] += hr.high(nr.next()) * level * 0.18;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn textures_add_sound_below_the_music() {
        for t in [Texture::VinylCrackle, Texture::Rain, Texture::TapeHiss] {
            let n = 44_100;
            let music: Vec<f32> = (0..n)
                .map(|i| if i % 100 < 50 { 0.2 } else { -0.2 })
                .collect();
            let (mut l, mut r) = (music.clone(), music.clone());
            add(&[t], &mut l, &mut r, 5);
            let diff: f64 = l
                .iter()
                .zip(&music)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum::<f64>()
                / n as f64;
            let rms_added = diff.sqrt();
            assert!(rms_added > 0.002, "{t:?} inaudible: {rms_added}");
            assert!(rms_added < 0.2 * 0.5, "{t:?} too loud: {rms_added}");
            assert_ne!(l, r, "{t:?} should be stereo");
        }
    }
}
