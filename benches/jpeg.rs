//! JPEG decoders on real frames: the `image` crate's decode (what folder sources used), zune-jpeg called
//! directly (what MJPEG capture uses), and, with `--features turbojpeg`, libjpeg-turbo at full size and
//! DCT-scaled to 1/2; beside them the glance's shrink of a decoded frame (`resize_rgb_bilinear` to the shipped
//! glance's 576×340) and the 1/2 decode followed by the shrink of that.
//!
//! `cargo bench --bench jpeg [--features turbojpeg] -- DIR...` (default: the frames that ship in
//! `benches/gtsdb-test` and `tools/samples`). Every file of each folder is read into memory first; each round
//! runs every decoder over all frames, the decoders interleaved so that a busy machine slows them alike; the
//! table gives the median over rounds of ms per frame. Prints the CPU it ran on.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

use saccade_runtime::capture::convert::mjpeg_to_rgb;
use saccade_runtime::imageops::resize_rgb_bilinear;

/// The shipped glance net's input.
const GLANCE_W: usize = 576;
const GLANCE_H: usize = 340;
const ROUNDS: usize = 7;

fn cpu() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let vnni = info.contains("avx512_vnni");
    format!(
        "{model}, {} threads, avx512_vnni {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if vnni { "yes" } else { "no" }
    )
}

type Decoder<'a> = Box<dyn FnMut(&[u8]) -> (u32, u32) + 'a>;

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut dirs: Vec<PathBuf> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .map(PathBuf::from)
        .collect();
    if dirs.is_empty() {
        dirs = vec![root.join("benches/gtsdb-test"), root.join("tools/samples")];
    }
    let mut frames: Vec<Vec<u8>> = Vec::new();
    for dir in &dirs {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                    e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg")
                })
            })
            .collect();
        files.sort();
        frames.extend(files.iter().map(|p| std::fs::read(p).unwrap()));
    }
    assert!(!frames.is_empty(), "no JPEG files in {dirs:?}");
    let first = image::load_from_memory(&frames[0]).unwrap();
    let (fw, fh) = (first.width() as usize, first.height() as usize);
    println!(
        "{} JPEG frames (first {fw}×{fh}, {:.0} KB mean) from {} folder(s); {ROUNDS} rounds; CPU: {}",
        frames.len(),
        frames.iter().map(|f| f.len()).sum::<usize>() as f64 / frames.len() as f64 / 1e3,
        dirs.len(),
        cpu()
    );

    let decoded_full = {
        let mut rgb = Vec::new();
        mjpeg_to_rgb(&frames[0], &mut rgb).unwrap();
        rgb
    };
    let mut small = vec![0u8; GLANCE_W * GLANCE_H * 3];
    let mut zune_out = Vec::new();
    let mut rows: Vec<(&str, Decoder)> = vec![
        (
            "image crate (load_from_memory → RGB8)",
            Box::new(|jpeg: &[u8]| {
                let img = image::load_from_memory_with_format(jpeg, image::ImageFormat::Jpeg)
                    .unwrap()
                    .into_rgb8();
                black_box(img.dimensions())
            }),
        ),
        (
            "zune-jpeg direct (into a reused buffer)",
            Box::new(move |jpeg: &[u8]| black_box(mjpeg_to_rgb(jpeg, &mut zune_out).unwrap())),
        ),
        (
            "shrink of a decoded frame to 576×340 (bilinear)",
            Box::new(|_: &[u8]| {
                let (w, h) = (fw, fh);
                resize_rgb_bilinear(&decoded_full, w, h, &mut small, GLANCE_W, GLANCE_H).unwrap();
                black_box((GLANCE_W as u32, GLANCE_H as u32))
            }),
        ),
    ];
    #[cfg(feature = "turbojpeg")]
    {
        use saccade_runtime::capture::turbo::turbo_to_rgb;
        let mut full = saccade_runtime::capture::turbo::Decompressor::new().unwrap();
        let mut full_out = Vec::new();
        rows.push((
            "libjpeg-turbo full size",
            Box::new(move |jpeg: &[u8]| {
                black_box(turbo_to_rgb(&mut full, jpeg, 1, &mut full_out).unwrap())
            }),
        ));
        let mut half = saccade_runtime::capture::turbo::Decompressor::new().unwrap();
        let mut half_out = Vec::new();
        rows.push((
            "libjpeg-turbo DCT-scaled 1/2",
            Box::new(move |jpeg: &[u8]| {
                black_box(turbo_to_rgb(&mut half, jpeg, 2, &mut half_out).unwrap())
            }),
        ));
        let mut half2 = saccade_runtime::capture::turbo::Decompressor::new().unwrap();
        let (mut half2_out, mut small2) = (Vec::new(), vec![0u8; GLANCE_W * GLANCE_H * 3]);
        rows.push((
            "libjpeg-turbo 1/2 + shrink to 576×340",
            Box::new(move |jpeg: &[u8]| {
                let (w, h) = turbo_to_rgb(&mut half2, jpeg, 2, &mut half2_out).unwrap();
                resize_rgb_bilinear(
                    &half2_out,
                    w as usize,
                    h as usize,
                    &mut small2,
                    GLANCE_W,
                    GLANCE_H,
                )
                .unwrap();
                black_box((w, h))
            }),
        ));
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); rows.len()];
    for _ in 0..ROUNDS {
        for (i, (_, decode)) in rows.iter_mut().enumerate() {
            let started = Instant::now();
            for jpeg in &frames {
                decode(jpeg);
            }
            times[i].push(started.elapsed().as_secs_f64() * 1e3 / frames.len() as f64);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let reference = median(&mut times[0].clone());
    println!("| decoder | ms per frame (median) | min | vs image crate |");
    println!("|---|---:|---:|---:|");
    for ((name, _), t) in rows.iter().zip(times.iter_mut()) {
        let m = median(t);
        println!("| {name} | {m:.2} | {:.2} | {:.2}× |", t[0], m / reference);
    }
}
