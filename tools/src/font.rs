//! A 5×7 bitmap font for printable ASCII, drawn into RGB images at an integer scale.
//!
//! Used by `annotate` to write each detection's class and score beside its box. A const table in code keeps
//! the binary free of font files and of a text-rendering dependency; the glyphs follow the classic 5×7 LCD
//! character set (lower-case descenders folded into the cell).

use image::{Rgb, RgbImage};

/// Glyph cell width in font pixels.
pub const GLYPH_WIDTH_PX: u32 = 5;
/// Glyph cell height in font pixels.
pub const GLYPH_HEIGHT_PX: u32 = 7;
/// Horizontal advance from one character to the next, in font pixels (glyph plus one blank column).
pub const ADVANCE_PX: u32 = GLYPH_WIDTH_PX + 1;

/// One glyph: seven rows, bit 4 is the leftmost column.
pub type Glyph = [u8; GLYPH_HEIGHT_PX as usize];

/// Drawn for characters the table lacks: a hollow box, so a missing glyph shows instead of vanishing.
const MISSING: Glyph = g([
    "#####", "#...#", "#...#", "#...#", "#...#", "#...#", "#####",
]);

/// Rows written as `#` (ink) and `.` (blank), five per row; checked at compile time.
const fn g(rows: [&str; GLYPH_HEIGHT_PX as usize]) -> Glyph {
    let mut out = [0u8; GLYPH_HEIGHT_PX as usize];
    let mut r = 0;
    while r < rows.len() {
        let row = rows[r].as_bytes();
        assert!(
            row.len() == GLYPH_WIDTH_PX as usize,
            "glyph row is not 5 wide"
        );
        let mut c = 0;
        while c < row.len() {
            match row[c] {
                b'#' => out[r] |= 1 << (GLYPH_WIDTH_PX as usize - 1 - c),
                b'.' => {}
                _ => panic!("glyph rows use only '#' and '.'"),
            }
            c += 1;
        }
        r += 1;
    }
    out
}

/// Printable ASCII, `' '` (0x20) to `'~'` (0x7E), in code order.
#[rustfmt::skip]
const GLYPHS: [(char, Glyph); 95] = [
    (' ', g([".....", ".....", ".....", ".....", ".....", ".....", "....."])),
    ('!', g(["..#..", "..#..", "..#..", "..#..", "..#..", ".....", "..#.."])),
    ('"', g([".#.#.", ".#.#.", ".#.#.", ".....", ".....", ".....", "....."])),
    ('#', g([".#.#.", ".#.#.", "#####", ".#.#.", "#####", ".#.#.", ".#.#."])),
    ('$', g(["..#..", ".####", "#.#..", ".###.", "..#.#", "####.", "..#.."])),
    ('%', g(["##...", "##..#", "...#.", "..#..", ".#...", "#..##", "...##"])),
    ('&', g([".##..", "#..#.", "#.#..", ".#...", "#.#.#", "#..#.", ".##.#"])),
    ('\'', g(["..#..", "..#..", ".#...", ".....", ".....", ".....", "....."])),
    ('(', g(["...#.", "..#..", ".#...", ".#...", ".#...", "..#..", "...#."])),
    (')', g([".#...", "..#..", "...#.", "...#.", "...#.", "..#..", ".#..."])),
    ('*', g([".....", "..#..", "#.#.#", ".###.", "#.#.#", "..#..", "....."])),
    ('+', g([".....", "..#..", "..#..", "#####", "..#..", "..#..", "....."])),
    (',', g([".....", ".....", ".....", ".....", ".##..", "..#..", ".#..."])),
    ('-', g([".....", ".....", ".....", "#####", ".....", ".....", "....."])),
    ('.', g([".....", ".....", ".....", ".....", ".....", ".##..", ".##.."])),
    ('/', g([".....", "....#", "...#.", "..#..", ".#...", "#....", "....."])),
    ('0', g([".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."])),
    ('1', g(["..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."])),
    ('2', g([".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"])),
    ('3', g(["#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."])),
    ('4', g(["...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."])),
    ('5', g(["#####", "#....", "####.", "....#", "....#", "#...#", ".###."])),
    ('6', g(["..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."])),
    ('7', g(["#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."])),
    ('8', g([".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."])),
    ('9', g([".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."])),
    (':', g([".....", ".##..", ".##..", ".....", ".##..", ".##..", "....."])),
    (';', g([".....", ".##..", ".##..", ".....", ".##..", "..#..", ".#..."])),
    ('<', g(["...#.", "..#..", ".#...", "#....", ".#...", "..#..", "...#."])),
    ('=', g([".....", ".....", "#####", ".....", "#####", ".....", "....."])),
    ('>', g([".#...", "..#..", "...#.", "....#", "...#.", "..#..", ".#..."])),
    ('?', g([".###.", "#...#", "....#", "...#.", "..#..", ".....", "..#.."])),
    ('@', g([".###.", "#...#", "....#", ".##.#", "#.#.#", "#.#.#", ".###."])),
    ('A', g([".###.", "#...#", "#...#", "#...#", "#####", "#...#", "#...#"])),
    ('B', g(["####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."])),
    ('C', g([".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."])),
    ('D', g(["###..", "#..#.", "#...#", "#...#", "#...#", "#..#.", "###.."])),
    ('E', g(["#####", "#....", "#....", "####.", "#....", "#....", "#####"])),
    ('F', g(["#####", "#....", "#....", "####.", "#....", "#....", "#...."])),
    ('G', g([".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####"])),
    ('H', g(["#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"])),
    ('I', g([".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."])),
    ('J', g(["..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."])),
    ('K', g(["#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"])),
    ('L', g(["#....", "#....", "#....", "#....", "#....", "#....", "#####"])),
    ('M', g(["#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"])),
    ('N', g(["#...#", "#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#"])),
    ('O', g([".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."])),
    ('P', g(["####.", "#...#", "#...#", "####.", "#....", "#....", "#...."])),
    ('Q', g([".###.", "#...#", "#...#", "#...#", "#.#.#", "#..#.", ".##.#"])),
    ('R', g(["####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"])),
    ('S', g([".####", "#....", "#....", ".###.", "....#", "....#", "####."])),
    ('T', g(["#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."])),
    ('U', g(["#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."])),
    ('V', g(["#...#", "#...#", "#...#", "#...#", "#...#", ".#.#.", "..#.."])),
    ('W', g(["#...#", "#...#", "#...#", "#.#.#", "#.#.#", "#.#.#", ".#.#."])),
    ('X', g(["#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"])),
    ('Y', g(["#...#", "#...#", "#...#", ".#.#.", "..#..", "..#..", "..#.."])),
    ('Z', g(["#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"])),
    ('[', g([".###.", ".#...", ".#...", ".#...", ".#...", ".#...", ".###."])),
    ('\\', g([".....", "#....", ".#...", "..#..", "...#.", "....#", "....."])),
    (']', g([".###.", "...#.", "...#.", "...#.", "...#.", "...#.", ".###."])),
    ('^', g(["..#..", ".#.#.", "#...#", ".....", ".....", ".....", "....."])),
    ('_', g([".....", ".....", ".....", ".....", ".....", ".....", "#####"])),
    ('`', g([".#...", "..#..", "...#.", ".....", ".....", ".....", "....."])),
    ('a', g([".....", ".....", ".###.", "....#", ".####", "#...#", ".####"])),
    ('b', g(["#....", "#....", "#.##.", "##..#", "#...#", "#...#", "####."])),
    ('c', g([".....", ".....", ".###.", "#....", "#....", "#...#", ".###."])),
    ('d', g(["....#", "....#", ".##.#", "#..##", "#...#", "#...#", ".####"])),
    ('e', g([".....", ".....", ".###.", "#...#", "#####", "#....", ".###."])),
    ('f', g(["..##.", ".#..#", ".#...", "###..", ".#...", ".#...", ".#..."])),
    ('g', g([".....", ".....", ".####", "#...#", ".####", "....#", ".###."])),
    ('h', g(["#....", "#....", "#.##.", "##..#", "#...#", "#...#", "#...#"])),
    ('i', g(["..#..", ".....", ".##..", "..#..", "..#..", "..#..", ".###."])),
    ('j', g(["...#.", ".....", "..##.", "...#.", "...#.", "#..#.", ".##.."])),
    ('k', g(["#....", "#....", "#..#.", "#.#..", "##...", "#.#..", "#..#."])),
    ('l', g([".##..", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."])),
    ('m', g([".....", ".....", "##.#.", "#.#.#", "#.#.#", "#...#", "#...#"])),
    ('n', g([".....", ".....", "#.##.", "##..#", "#...#", "#...#", "#...#"])),
    ('o', g([".....", ".....", ".###.", "#...#", "#...#", "#...#", ".###."])),
    ('p', g([".....", ".....", "####.", "#...#", "####.", "#....", "#...."])),
    ('q', g([".....", ".....", ".##.#", "#..##", ".####", "....#", "....#"])),
    ('r', g([".....", ".....", "#.##.", "##..#", "#....", "#....", "#...."])),
    ('s', g([".....", ".....", ".###.", "#....", ".###.", "....#", "####."])),
    ('t', g([".#...", ".#...", "###..", ".#...", ".#...", ".#..#", "..##."])),
    ('u', g([".....", ".....", "#...#", "#...#", "#...#", "#..##", ".##.#"])),
    ('v', g([".....", ".....", "#...#", "#...#", "#...#", ".#.#.", "..#.."])),
    ('w', g([".....", ".....", "#...#", "#...#", "#.#.#", "#.#.#", ".#.#."])),
    ('x', g([".....", ".....", "#...#", ".#.#.", "..#..", ".#.#.", "#...#"])),
    ('y', g([".....", ".....", "#...#", "#...#", ".####", "....#", ".###."])),
    ('z', g([".....", ".....", "#####", "...#.", "..#..", ".#...", "#####"])),
    ('{', g(["...#.", "..#..", "..#..", ".#...", "..#..", "..#..", "...#."])),
    ('|', g(["..#..", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."])),
    ('}', g([".#...", "..#..", "..#..", "...#.", "..#..", "..#..", ".#..."])),
    ('~', g([".....", ".....", ".#...", "#.#.#", "...#.", ".....", "....."])),
];

/// The glyph of `c`, `None` outside printable ASCII.
pub fn glyph(c: char) -> Option<&'static Glyph> {
    let index = (c as u32).checked_sub(' ' as u32)? as usize;
    GLYPHS.get(index).map(|(_, glyph)| glyph)
}

/// Width and height in image pixels of `text` drawn at `scale` (no trailing blank column).
pub fn text_size_px(text: &str, scale: u32) -> (u32, u32) {
    let n = text.chars().count() as u32;
    let width = if n == 0 { 0 } else { n * ADVANCE_PX - 1 };
    (width * scale, GLYPH_HEIGHT_PX * scale)
}

/// Draw `text` with its top-left corner at (`x_px`, `y_px`), each font pixel a `scale`×`scale` square.
/// Pixels outside the image are skipped, so any position is safe.
pub fn draw_text(
    img: &mut RgbImage,
    x_px: i64,
    y_px: i64,
    text: &str,
    scale: u32,
    colour: Rgb<u8>,
) {
    let scale = i64::from(scale.max(1));
    let advance = i64::from(ADVANCE_PX) * scale;
    for (i, c) in text.chars().enumerate() {
        let glyph = glyph(c).unwrap_or(&MISSING);
        let x_char = x_px.saturating_add((i as i64).saturating_mul(advance));
        for (row, bits) in (0i64..).zip(glyph) {
            let y = y_px.saturating_add(row * scale);
            for col in 0..GLYPH_WIDTH_PX {
                if bits & (1 << (GLYPH_WIDTH_PX - 1 - col)) != 0 {
                    let x = x_char.saturating_add(i64::from(col) * scale);
                    fill_rect(img, x, y, scale, scale, colour);
                }
            }
        }
    }
}

/// Fill the `width`×`height` rectangle at (`x_px`, `y_px`), clipped to the image.
pub fn fill_rect(
    img: &mut RgbImage,
    x_px: i64,
    y_px: i64,
    width: i64,
    height: i64,
    colour: Rgb<u8>,
) {
    let (w, h) = img.dimensions();
    let x0 = x_px.clamp(0, i64::from(w));
    let y0 = y_px.clamp(0, i64::from(h));
    let x1 = x_px.saturating_add(width).clamp(0, i64::from(w));
    let y1 = y_px.saturating_add(height).clamp(0, i64::from(h));
    for y in y0..y1 {
        for x in x0..x1 {
            img.put_pixel(x as u32, y as u32, colour);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn glyph_table_is_in_ascii_order() {
        for (i, (c, _)) in GLYPHS.iter().enumerate() {
            assert_eq!(*c as u32, 0x20 + i as u32, "entry {i} is {c:?}");
            assert_eq!(glyph(*c), Some(&GLYPHS[i].1));
        }
        assert_eq!(glyph('\u{7f}'), None);
        assert_eq!(glyph('\n'), None);
        assert_eq!(glyph('é'), None);
    }

    #[test]
    fn every_character_of_every_class_name_and_score_has_a_glyph() {
        for class_id in 0..=saccade_models::NUM_CLASSES {
            let name = saccade_models::class_name(class_id);
            for c in name.chars() {
                assert!(
                    glyph(c).is_some(),
                    "class {class_id} {name:?}: no glyph for {c:?}"
                );
            }
        }
        for c in "0123456789. ".chars() {
            assert!(glyph(c).is_some(), "no glyph for {c:?}");
        }
    }

    #[test]
    fn glyphs_are_distinct_and_only_space_is_blank() {
        for (i, (a, ga)) in GLYPHS.iter().enumerate() {
            assert_eq!(*ga == [0; 7], *a == ' ', "{a:?}");
            for (b, gb) in &GLYPHS[i + 1..] {
                assert_ne!(ga, gb, "{a:?} and {b:?} look the same");
            }
        }
    }

    #[test]
    fn text_size_counts_advance_without_trailing_gap() {
        assert_eq!(text_size_px("", 2), (0, 14));
        assert_eq!(text_size_px("a", 1), (5, 7));
        assert_eq!(text_size_px("ab", 2), (22, 14));
    }

    #[test]
    fn drawn_text_stays_inside_its_measured_box() {
        let mut img = RgbImage::new(64, 32);
        let white = Rgb([255, 255, 255]);
        draw_text(&mut img, 3, 5, "W0-8", 2, white);
        let (tw, th) = text_size_px("W0-8", 2);
        let mut inked = 0;
        for (x, y, p) in img.enumerate_pixels() {
            if *p == white {
                inked += 1;
                assert!(
                    (3..3 + tw).contains(&x) && (5..5 + th).contains(&y),
                    "ink at {x},{y}"
                );
            }
        }
        assert!(inked > 0);
    }

    #[test]
    fn text_partly_or_wholly_outside_the_image_is_clipped_without_panic() {
        let mut img = RgbImage::new(10, 10);
        let white = Rgb([255, 255, 255]);
        for (x, y) in [
            (-7, -3),
            (6, 6),
            (-1000, 5),
            (5, 1000),
            (i64::MIN, i64::MAX),
            (i64::MAX, 0),
        ] {
            draw_text(&mut img, x, y, "speed limit 70", 3, white);
            fill_rect(&mut img, x, y, i64::MAX, i64::MAX, white);
        }
        // Row 1 of 'A' is "#...#": at scale 2 from (-3, -3) its right column lands on x 5..7, y 0.
        let mut img = RgbImage::new(10, 10);
        draw_text(&mut img, -3, -3, "A", 2, white);
        assert_eq!(*img.get_pixel(5, 0), white);
        assert_eq!(*img.get_pixel(0, 0), Rgb([0, 0, 0]));
    }
}
