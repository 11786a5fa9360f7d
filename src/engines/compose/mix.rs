//! The mixer and master. Renders every note of a `Score` into stereo buses (equal-power pan,
//! reverb and echo sends, kick ducking), runs the send effects (an 8-line feedback-delay-network
//! reverb and a tempo-synced ping-pong echo), adds the textures, then masters: rumble high-pass,
//! lofi colour, loudness normalisation to -14 LUFS integrated (`ebur128`), a look-ahead peak
//! limiter at -1 dBFS and the closing fade. Note rendering is split over two threads by start time,
//! the master's passes run a channel (or half the track) per thread, and every sum is taken in a
//! fixed order, so the result does not depend on thread timing.

use std::collections::VecDeque;

use super::dmath::{self, soft_clip};
use super::dsp::{OnePole, Svf, SR};
use super::play;
use super::score::{sample_of, Score, Voice};
use super::style::Style;
use super::textures;
use super::voices::Scratch;

/// Integrated loudness the master aims for (LUFS).
pub const TARGET_LUFS: f64 = -14.0;
/// Peak ceiling of the limiter (-1 dBFS).
pub const CEILING: f32 = 0.891;

/// Longest track rendered on two threads (longer ones render on one, to halve the memory).
const PARALLEL_MAX_SECS: f64 = 180.0;

/// The render was stopped by the caller's cancellation flag.
#[derive(Debug)]
pub struct Cancelled;

/// Stereo buses plus the two effect sends.
struct Buses {
    l: Vec<f32>,
    r: Vec<f32>,
    rev: Vec<f32>,
    dly: Vec<f32>,
}

impl Buses {
    fn new(frames: usize) -> Buses {
        Buses {
            l: vec![0.0; frames],
            r: vec![0.0; frames],
            rev: vec![0.0; frames],
            dly: vec![0.0; frames],
        }
    }

    fn add(&mut self, o: &Buses) {
        for (a, b) in [
            (&mut self.l, &o.l),
            (&mut self.r, &o.r),
            (&mut self.rev, &o.rev),
            (&mut self.dly, &o.dly),
        ] {
            for (x, y) in a.iter_mut().zip(b) {
                *x += *y;
            }
        }
    }
}

/// Kick-keyed gain envelope for ducked parts: dips at each kick, recovers within the beat.
fn duck_envelope(kicks: &[f64], spb: f64, frames: usize) -> Vec<f32> {
    let mut env = vec![1.0f32; frames];
    let len = ((spb * SR) as usize).max(1);
    let attack = (0.004 * SR) as usize;
    let rec = dmath::decay_coef(spb * 0.22, SR);
    let depth = 0.5f32;
    for &k in kicks {
        let s = sample_of(k);
        let mut d = depth;
        for j in 0..len {
            let Some(e) = env.get_mut(s + j) else { break };
            let g = if j < attack {
                1.0 - depth * j as f32 / attack as f32
            } else {
                d *= rec;
                1.0 - d
            };
            *e = e.min(g);
        }
    }
    env
}

/// Renders the notes whose start sample `in_set` accepts into fresh buses.
fn render_notes(
    score: &Score,
    frames: usize,
    duck: Option<&[f32]>,
    in_set: &dyn Fn(usize) -> bool,
    progress: &(dyn Fn(f32) + Sync),
    cancelled: &(dyn Fn() -> bool + Sync),
) -> Result<Buses, Cancelled> {
    let mut b = Buses::new(frames);
    let mut scratch = Scratch::default();
    let mut buf: Vec<f32> = Vec::new();
    let total = score.notes.len().max(1);
    for (i, note) in score.notes.iter().enumerate() {
        if i % 256 == 0 {
            if cancelled() {
                return Err(Cancelled);
            }
            progress(i as f32 / total as f32);
        }
        let start = sample_of(note.start);
        if !in_set(start) {
            continue;
        }
        let part = &score.parts[note.part as usize];
        if start >= frames {
            continue;
        }
        let len = play::note_len(part.voice, note).min(frames - start);
        buf.clear();
        buf.resize(len, 0.0);
        play::render(part.voice, &part.timbre, note, &mut scratch, &mut buf);
        let pan = (part.pan + note.pan).clamp(-1.0, 1.0) as f64;
        let angle = (pan + 1.0) * std::f64::consts::FRAC_PI_4;
        let gl = (dmath::cos(angle) * part.gain as f64) as f32;
        let gr = (dmath::sin(angle) * part.gain as f64) as f32;
        let (rs, ds) = (part.reverb * part.gain, part.delay * part.gain);
        let end = start + len;
        if let (true, Some(env)) = (part.duck, duck) {
            for (x, e) in buf.iter_mut().zip(&env[start..end]) {
                *x *= e;
            }
        }
        for (o, x) in b.l[start..end].iter_mut().zip(&buf) {
            *o += x * gl;
        }
        for (o, x) in b.r[start..end].iter_mut().zip(&buf) {
            *o += x * gr;
        }
        if rs > 0.0 {
            for (o, x) in b.rev[start..end].iter_mut().zip(&buf) {
                *o += x * rs;
            }
        }
        if ds > 0.0 {
            for (o, x) in b.dly[start..end].iter_mut().zip(&buf) {
                *o += x * ds;
            }
        }
    }
    Ok(b)
}

/// Where the notes are split over two threads: the start sample before which the notes' estimated
/// cost (samples × voice weight) is half the total. Notes run through the whole track, so each
/// thread gets about half the work; deterministic.
fn split_point(score: &Score) -> usize {
    let mut costs: Vec<(usize, f64)> = score
        .notes
        .iter()
        .map(|n| {
            let v = score.parts[n.part as usize].voice;
            let w = match v {
                Voice::Pad | Voice::Strings | Voice::Piano => 3.0,
                Voice::Choir | Voice::Lead | Voice::SynthBass | Voice::Reese => 2.0,
                _ => 1.0,
            };
            (sample_of(n.start), w * play::note_len(v, n) as f64)
        })
        .collect();
    costs.sort_by_key(|c| c.0);
    let half = costs.iter().map(|c| c.1).sum::<f64>() / 2.0;
    let mut acc = 0.0;
    for (start, cost) in costs {
        acc += cost;
        if acc >= half {
            return start + 1;
        }
    }
    usize::MAX
}

/// Renders and masters the score into `frames` stereo samples.
pub fn render(
    score: &Score,
    style: &Style,
    frames: usize,
    seed: u64,
    progress: &(dyn Fn(f32) + Sync),
    cancelled: &(dyn Fn() -> bool + Sync),
) -> Result<[Vec<f32>; 2], Cancelled> {
    let duck = score
        .parts
        .iter()
        .any(|p| p.duck)
        .then(|| duck_envelope(&score.kicks, score.spb, frames));
    let note_progress = |x: f32| progress(0.02 + 0.6 * x);
    let bus = if frames as f64 <= PARALLEL_MAX_SECS * SR {
        // Two threads, each with its own buses, the first taking the notes that start before
        // the split; summed in a fixed order.
        let split = split_point(score);
        let quiet = |_: f32| {};
        let (a, b) = std::thread::scope(|s| {
            let duck = duck.as_deref();
            let other = s.spawn(move || {
                render_notes(score, frames, duck, &|at| at >= split, &quiet, cancelled)
            });
            let mine = render_notes(
                score,
                frames,
                duck,
                &|at| at < split,
                &note_progress,
                cancelled,
            );
            let theirs = other.join().unwrap_or(Err(Cancelled));
            (mine, theirs)
        });
        let mut bus = a?;
        bus.add(&b?);
        bus
    } else {
        // Long tracks: one set of buses, to halve the memory.
        render_notes(
            score,
            frames,
            duck.as_deref(),
            &|_| true,
            &note_progress,
            cancelled,
        )?
    };
    drop(duck);
    if cancelled() {
        return Err(Cancelled);
    }
    progress(0.65);

    // Echo first (its output also feeds the reverb), then the reverb.
    let Buses {
        mut l,
        mut r,
        mut rev,
        dly,
    } = bus;
    let beats = echo_beats(score.spb);
    echo(
        &dly,
        &mut l,
        &mut r,
        &mut rev,
        (score.spb * beats * SR) as usize,
    );
    drop(dly);
    reverb(
        &rev,
        &mut l,
        &mut r,
        1.2 + 3.0 * style.reverb as f64,
        0.35 + 0.3 * style.bright,
    );
    drop(rev);
    if cancelled() {
        return Err(Cancelled);
    }
    progress(0.8);

    textures::add(&style.textures, &mut l, &mut r, seed);
    master(&mut l, &mut r, style.lofi);
    progress(1.0);
    Ok([l, r])
}

/// From this many seconds per beat (80 bpm and slower, the arranger's slow beat) the echo repeats
/// once a beat instead of on the half-beat: at a slow tempo an eighth-note echo fills every
/// half-beat with repeats, which makes the eighths sound like the beat at twice the tempo.
const SLOW_ECHO_SPB: f64 = 0.75;

/// The echo's repeat time in beats: a dotted eighth at quick tempos, an eighth at moderate ones,
/// a beat at slow ones.
fn echo_beats(spb: f64) -> f64 {
    if spb < 0.6 {
        0.75
    } else if spb < SLOW_ECHO_SPB {
        0.5
    } else {
        1.0
    }
}

/// Stereo ping-pong echo of the mono send `input`, `delay` samples per repeat.
fn echo(input: &[f32], l: &mut [f32], r: &mut [f32], rev: &mut [f32], delay: usize) {
    if delay == 0 || input.iter().all(|x| *x == 0.0) {
        return;
    }
    let mut bl = vec![0f32; delay];
    let mut br = vec![0f32; delay];
    let mut lp = OnePole::new(3500.0);
    let mut hp = OnePole::new(300.0);
    let fb = 0.42f32;
    let wet = 0.55f32;
    let mut k = 0;
    for i in 0..input.len() {
        let (ol, or) = (bl[k], br[k]);
        bl[k] = hp.high(lp.low(input[i] + fb * or));
        br[k] = fb * ol;
        l[i] += ol * wet;
        r[i] += or * wet;
        rev[i] += (ol + or) * 0.2;
        k += 1;
        if k == delay {
            k = 0;
        }
    }
}

/// Feedback delay network reverb: eight damped delay lines mixed by a Householder matrix.
fn reverb(input: &[f32], l: &mut [f32], r: &mut [f32], t60: f64, damp: f32) {
    if input.iter().all(|x| *x == 0.0) {
        return;
    }
    const LENS: [usize; 8] = [1031, 1327, 1523, 1801, 2053, 2297, 2539, 2801];
    let mut lines: Vec<Vec<f32>> = LENS.iter().map(|&n| vec![0.0; n]).collect();
    let mut idx = [0usize; 8];
    let g: [f32; 8] =
        LENS.map(|n| dmath::exp(-3.0 * std::f64::consts::LN_10 * n as f64 / (t60 * SR)) as f32);
    let mut st = [0f32; 8];
    let pre = (0.018 * SR) as usize;
    let mut hp = OnePole::new(220.0);
    let wet = 0.32f32;
    let signs = [1.0f32, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0];
    for i in 0..input.len() {
        let x = hp.high(if i >= pre { input[i - pre] } else { 0.0 });
        let mut sum = 0.0;
        for k in 0..8 {
            let o = lines[k][idx[k]];
            st[k] += damp * (o - st[k]);
            sum += st[k];
        }
        let h = sum * 0.25;
        let mut ol = 0.0;
        let mut or = 0.0;
        for k in 0..8 {
            let f = st[k] - h;
            lines[k][idx[k]] = x * signs[k] + g[k] * f;
            // Left takes the even lines, right the odd ones, alternating in sign.
            let s = if (k / 2) % 2 == 0 { st[k] } else { -st[k] };
            if k % 2 == 0 {
                ol += s;
            } else {
                or += s;
            }
            idx[k] += 1;
            if idx[k] == LENS[k] {
                idx[k] = 0;
            }
        }
        l[i] += ol * wet;
        r[i] += or * wet;
    }
}

/// Mastering chain: high-pass, optional lofi colour, loudness to -14 LUFS, peak limit, fades.
pub fn master(l: &mut [f32], r: &mut [f32], lofi: bool) {
    let colour = |ch: &mut [f32]| {
        let mut hp1 = OnePole::new(28.0);
        let mut hp2 = OnePole::new(28.0);
        let mut lp = Svf::new(5200.0, 0.6);
        let mut power = 0f64;
        for x in ch.iter_mut() {
            let mut y = hp2.high(hp1.high(*x));
            if lofi {
                y = lp.low(y);
            }
            *x = y;
            power += (y as f64) * (y as f64);
        }
        power
    };
    let (pl, pr) = rayon::join(|| colour(l), || colour(r));
    // Tame the crest factor a little before the loudness gain (the limiter does the rest).
    let rms = ((pl + pr) / (2 * l.len()).max(1) as f64).sqrt() as f32;
    if rms > 0.0 {
        let knee = rms * 4.0;
        let clip = |ch: &mut [f32]| {
            for x in ch.iter_mut() {
                *x = soft_clip(*x / knee) * knee;
            }
        };
        rayon::join(|| clip(l), || clip(r));
    }
    for _ in 0..2 {
        if let Some(lufs) = loudness(l, r) {
            // Quantise the correction so last-bit differences in the measurement cannot change it.
            let diff = ((TARGET_LUFS - lufs) * 100.0).round() / 100.0;
            let g = dmath::db(diff.clamp(-40.0, 60.0)) as f32;
            let gain = |ch: &mut [f32]| ch.iter_mut().for_each(|x| *x *= g);
            rayon::join(|| gain(l), || gain(r));
        }
        limit(l, r);
    }
    fades(l, r);
}

/// Integrated loudness (LUFS) by EBU R128, `None` for silence or too-short input. The two halves
/// of the track are measured on two threads: the second meter starts three 100 ms hops before the
/// split, so together the meters gate exactly the 400 ms blocks one meter would. Only the energy
/// of the second meter's first block differs a little (its K-weighting filter starts cold at that
/// block's start); the same input always gives the same figure.
pub fn loudness(l: &[f32], r: &[f32]) -> Option<f64> {
    let hop = SR as usize / 10;
    let meter = |l: &[f32], r: &[f32]| {
        let mut m = ebur128::EbuR128::new(2, SR as u32, ebur128::Mode::I).ok()?;
        m.add_frames_planar_f32(&[l, r]).ok()?;
        Some(m)
    };
    let split = l.len() / 2 / hop * hop;
    let v = if split >= 8 * hop {
        let from = split - 3 * hop;
        let (a, b) = rayon::join(
            || meter(&l[..split], &r[..split]),
            || meter(&l[from..], &r[from..]),
        );
        ebur128::EbuR128::loudness_global_multiple([a?, b?].iter()).ok()?
    } else {
        meter(l, r)?.loudness_global().ok()?
    };
    v.is_finite().then_some(v)
}

/// Look-ahead limiter: a gain curve that is never above `CEILING / |peak|`, ramped in over the
/// look-ahead window and released slowly.
fn limit(l: &mut [f32], r: &mut [f32]) {
    let n = l.len();
    if !l.iter().chain(r.iter()).any(|x| x.abs() > CEILING) {
        return;
    }
    let w = (0.0015 * SR) as usize;
    let need = |l: &[f32], r: &[f32], i: usize| {
        let p = l[i].abs().max(r[i].abs());
        if p > CEILING {
            CEILING / p
        } else {
            1.0
        }
    };
    // m[i] = min(need[i-w+1 ..= i]); gain[i] = mean(m[i ..i+w]) <= need[i].
    let mut m = vec![1.0f32; n];
    let mut dq: VecDeque<usize> = VecDeque::new();
    for (i, mi) in m.iter_mut().enumerate() {
        let ni = need(l, r, i);
        while dq.back().is_some_and(|&j| need(l, r, j) >= ni) {
            dq.pop_back();
        }
        dq.push_back(i);
        if dq.front().is_some_and(|&j| j + w <= i) {
            dq.pop_front();
        }
        *mi = need(l, r, dq[0]);
    }
    let rel = 1.0 - dmath::decay_coef(0.08, SR);
    let mut acc: f64 =
        m[..w.min(n)].iter().map(|&x| x as f64).sum::<f64>() + (w.saturating_sub(n)) as f64;
    let mut g_prev = 1.0f32;
    for i in 0..n {
        let mean = (acc / w as f64) as f32;
        let target = mean.min(m[i]);
        let g = target.min(g_prev + (1.0 - g_prev) * rel);
        l[i] *= g;
        r[i] *= g;
        g_prev = g;
        acc -= m[i] as f64;
        acc += if i + w < n { m[i + w] as f64 } else { 1.0 };
    }
    // Anything left above the ceiling by rounding is clipped softly.
    for x in l.iter_mut().chain(r.iter_mut()) {
        *x = x.clamp(-CEILING, CEILING);
    }
}

/// A 5 ms fade-in and a closing fade (10% of the track, 0.05–3 s; raised-cosine).
fn fades(l: &mut [f32], r: &mut [f32]) {
    let n = l.len();
    let fin = ((0.005 * SR) as usize).min(n / 2);
    for i in 0..fin {
        let g = i as f32 / fin as f32;
        l[i] *= g;
        r[i] *= g;
    }
    let secs = (n as f64 / SR * 0.1).clamp(0.05, 3.0);
    let fout = ((secs * SR) as usize).min(n);
    for k in 0..fout {
        let i = n - fout + k;
        let x = (k as f64 + 1.0) / fout as f64;
        let g = (0.5 + 0.5 * dmath::cos(std::f64::consts::PI * x)) as f32;
        l[i] *= g;
        r[i] *= g;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two-meter loudness gates the same blocks as one meter over the whole track: on
    /// material that changes level section by section, the two agree to a hundredth of a LU
    /// (the master's gain is quantised to 0.01 dB).
    #[test]
    fn split_loudness_matches_one_meter() {
        let n = 40 * SR as usize + 1234;
        let (mut l, mut r) = (vec![0f32; n], vec![0f32; n]);
        for i in 0..n {
            let t = i as f64 / SR;
            let level = [0.05, 0.3, 0.1, 0.6][(t / 7.0) as usize % 4];
            l[i] = (level * (std::f64::consts::TAU * 440.0 * t).sin()) as f32;
            r[i] = (level * 0.7 * (std::f64::consts::TAU * 97.0 * t).sin()) as f32;
        }
        let mut one = ebur128::EbuR128::new(2, SR as u32, ebur128::Mode::I).unwrap();
        one.add_frames_planar_f32(&[&l, &r]).unwrap();
        let single = one.loudness_global().unwrap();
        let split = loudness(&l, &r).unwrap();
        assert!(
            (split - single).abs() < 0.01,
            "split {split} vs one meter {single}"
        );
    }

    #[test]
    fn limiter_holds_the_ceiling_and_spares_quiet_parts() {
        let n = 44_100;
        let mut l: Vec<f32> = (0..n)
            .map(|i| {
                if (20_000..20_050).contains(&i) {
                    2.5
                } else {
                    0.3
                }
            })
            .collect();
        let mut r = l.clone();
        limit(&mut l, &mut r);
        assert!(l.iter().all(|x| x.abs() <= CEILING + 1e-6));
        // Far from the spike the signal is untouched.
        assert_eq!(l[1000], 0.3);
        assert!((l[40_000] - 0.3).abs() < 1e-3);
    }

    #[test]
    fn fades_reach_silence_at_both_ends() {
        let mut l = vec![0.5f32; 44_100];
        let mut r = l.clone();
        fades(&mut l, &mut r);
        assert_eq!(l[0], 0.0);
        assert!(l[44_099].abs() < 1e-6);
        assert!(l[22_050] == 0.5);
    }

    #[test]
    fn the_echo_repeats_on_the_beat_at_slow_tempos() {
        assert_eq!(echo_beats(60.0 / 128.0), 0.75);
        assert_eq!(echo_beats(60.0 / 90.0), 0.5);
        assert_eq!(echo_beats(60.0 / 80.0), 1.0);
        assert_eq!(echo_beats(60.0 / 65.0), 1.0);
    }

    #[test]
    fn duck_envelope_dips_at_kicks() {
        let env = duck_envelope(&[0.0, 0.5], 0.5, 44_100);
        let at = |t: f64| env[(t * SR) as usize];
        assert!(at(0.01) < 0.6);
        assert!(at(0.45) > 0.9);
        assert!(at(0.51) < 0.6);
        assert!(env.iter().all(|x| (0.0..=1.0).contains(x)));
    }
}
