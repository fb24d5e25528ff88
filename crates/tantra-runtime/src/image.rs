//! Images in: PNG and JPEG decoding (the `image` crate with only those two codecs compiled in)
//! and the two preprocessings the vision models specify, each turning pixels into the f32
//! inputs their configs describe.
//!
//! Decoding is bounded: an image is untrusted input, so its declared dimensions are capped
//! before any pixel buffer is allocated. Resizing uses bilinear interpolation (the `image`
//! crate's `Triangle` filter), the same for every run, so a given file always gives the same
//! model input.

use std::io::Cursor;
use std::path::Path;

use image::imageops::FilterType;
use image::{DynamicImage, GrayImage, ImageReader, Limits, RgbImage};

use super::error::{Result, RuntimeError};

/// The largest width or height accepted.
pub const MAX_IMAGE_SIDE: u32 = 16_384;
/// The most bytes a decoder may allocate.
const MAX_IMAGE_ALLOC: u64 = 512 * 1024 * 1024;

/// Decodes a PNG or JPEG file (the format is detected from the bytes).
///
/// # Errors
/// [`RuntimeError::Io`] when the file cannot be read, [`RuntimeError::Image`] when it is not
/// a PNG or JPEG or is too large.
pub fn load_image(path: &Path) -> Result<DynamicImage> {
    let bytes = std::fs::read(path).map_err(|source| RuntimeError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode_image(&bytes).map_err(|reason| RuntimeError::Image {
        path: path.to_path_buf(),
        reason,
    })
}

/// Decodes PNG or JPEG bytes; the error says why in words.
///
/// # Errors
/// An unknown format, a broken file, or dimensions over [`MAX_IMAGE_SIDE`].
pub fn decode_image(bytes: &[u8]) -> Result<DynamicImage, String> {
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    match reader.format() {
        Some(image::ImageFormat::Png) | Some(image::ImageFormat::Jpeg) => {}
        _ => return Err("not a PNG or JPEG image".into()),
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_IMAGE_ALLOC);
    reader.limits(limits);
    reader.decode().map_err(|e| e.to_string())
}

/// The image as RGB resized to `size x size`, channel-major (`[3, size, size]`), each value
/// `(v / 255 - mean[c]) / std[c]`.
pub fn rgb_input(image: &DynamicImage, size: u32, mean: &[f64], std: &[f64]) -> Vec<f32> {
    let rgb: RgbImage = image.to_rgb8();
    let resized = if rgb.dimensions() == (size, size) {
        rgb
    } else {
        image::imageops::resize(&rgb, size, size, FilterType::Triangle)
    };
    let plane = (size as usize) * (size as usize);
    let mut out = vec![0.0f32; 3 * plane];
    for (i, px) in resized.pixels().enumerate() {
        for c in 0..3 {
            let m = mean.get(c).copied().unwrap_or(0.0);
            let s = std.get(c).copied().unwrap_or(1.0);
            out[c * plane + i] = ((f64::from(px[c]) / 255.0 - m) / s) as f32;
        }
    }
    out
}

/// The image as grayscale, `height` rows high with the aspect ratio kept (width rounded, at
/// least one column, at most [`MAX_IMAGE_SIDE`]), padded on the right with white to a multiple of `multiple` columns.
/// Returns the raw pixels (row-major) and the padded width.
pub fn gray_line(image: &DynamicImage, height: u32, multiple: u32) -> (GrayImage, u32) {
    let gray = image.to_luma8();
    let (w, h) = gray.dimensions();
    let new_w = if h == 0 {
        1
    } else {
        ((f64::from(w) * f64::from(height) / f64::from(h)).round() as u32).clamp(1, MAX_IMAGE_SIDE)
    };
    let resized = if (w, h) == (new_w, height) {
        gray
    } else {
        image::imageops::resize(&gray, new_w, height, FilterType::Triangle)
    };
    let multiple = multiple.max(1);
    let padded_w = new_w.div_ceil(multiple) * multiple;
    let mut padded = GrayImage::from_pixel(padded_w, height, image::Luma([255]));
    image::imageops::replace(&mut padded, &resized, 0, 0);
    (padded, padded_w)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_bytes(img: &DynamicImage) -> Vec<u8> {
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn decodes_png_and_jpeg_refuses_others() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_fn(5, 3, |x, y| {
            image::Rgb([x as u8 * 40, y as u8 * 80, 7])
        }));
        let back = decode_image(&png_bytes(&img)).unwrap();
        assert_eq!(back.to_rgb8(), img.to_rgb8());
        let mut jpg = Vec::new();
        img.write_to(&mut Cursor::new(&mut jpg), image::ImageFormat::Jpeg)
            .unwrap();
        assert_eq!(decode_image(&jpg).unwrap().width(), 5);
        assert!(decode_image(b"GIF89a....").is_err());
        assert!(decode_image(b"").is_err());
        let mut broken = png_bytes(&img);
        broken.truncate(30);
        assert!(decode_image(&broken).is_err());
    }

    #[test]
    fn rgb_input_is_channel_major_and_normalized() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(2, 2, image::Rgb([255, 0, 51])));
        let x = rgb_input(&img, 2, &[0.5, 0.5, 0.0], &[0.5, 0.5, 1.0]);
        assert_eq!(x.len(), 12);
        assert!(x[..4].iter().all(|v| (v - 1.0).abs() < 1e-6));
        assert!(x[4..8].iter().all(|v| (v + 1.0).abs() < 1e-6));
        assert!(x[8..].iter().all(|v| (v - 0.2).abs() < 1e-6));
        // Resized to the configured side.
        assert_eq!(rgb_input(&img, 4, &[0.0; 3], &[1.0; 3]).len(), 48);
    }

    #[test]
    fn gray_line_keeps_aspect_and_pads_white() {
        let img = DynamicImage::ImageLuma8(GrayImage::from_pixel(30, 10, image::Luma([0])));
        let (g, w) = gray_line(&img, 20, 8);
        // 30 x 10 -> 60 x 20, padded to 64.
        assert_eq!((w, g.height()), (64, 20));
        assert_eq!(g.get_pixel(59, 5)[0], 0);
        assert_eq!(g.get_pixel(60, 5)[0], 255);
    }
}
