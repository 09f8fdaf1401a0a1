//! QR check-in: each store, and each of its zones, has a QR code for a poster; the brand's app
//! scans it and reports a check-in (`POST /v1/app/checkins`), which is a visit observation with
//! source `qr` — certain on its own, so it opens a visit at once. The code in the QR's URL
//! (`{delivery.link_base}/q/{code}`) is a keyed hash of the place: stable, and not a list of the
//! retailer's stores to anyone scanning the public posters.

use omo_device_config::StoreId;

use crate::registry::Registry;

/// A place a QR code stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub store: StoreId,
    pub zone: Option<String>,
}

/// The code of a store's (or a zone's) QR: 16 hex digits keyed with the server secret.
pub fn code(secret: &[u8; 32], store: &StoreId, zone: Option<&str>) -> String {
    use hmac::{Hmac, Mac};
    let mut mac =
        <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes 32-byte keys");
    mac.update(b"qr\0");
    mac.update(store.as_str().as_bytes());
    mac.update(b"\0");
    mac.update(zone.unwrap_or_default().as_bytes());
    hex::encode(&mac.finalize().into_bytes()[..8])
}

/// The place a code stands for: every store and zone of the registry is tried (a scan is
/// rare next to the hashing it costs).
pub fn place(registry: &Registry, secret: &[u8; 32], wanted: &str) -> Option<Place> {
    if wanted.len() != 16 {
        return None;
    }
    for s in &registry.site().stores {
        if code(secret, &s.id, None) == wanted {
            return Some(Place {
                store: s.id.clone(),
                zone: None,
            });
        }
    }
    registry.zones().iter().find_map(|z| {
        (code(secret, z.store(), Some(z.id())) == wanted).then(|| Place {
            store: z.store().clone(),
            zone: Some(z.id().to_owned()),
        })
    })
}

/// A printable SVG of a QR code holding `url`.
pub fn svg(url: &str) -> Result<String, String> {
    let qr = qrcode::QrCode::with_error_correction_level(url.as_bytes(), qrcode::EcLevel::M)
        .map_err(|e| e.to_string())?;
    Ok(qr
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(256, 256)
        .quiet_zone(true)
        .build())
}

/// Pixels per QR module in a PNG poster, and the quiet zone around the code, in modules.
const PNG_SCALE: usize = 8;
const PNG_QUIET: usize = 4;

/// A printable PNG (8-bit grey, 8 pixels a module, with the 4-module quiet zone) of a QR code
/// holding `url`.
pub fn png(url: &str) -> Result<Vec<u8>, String> {
    let qr = qrcode::QrCode::with_error_correction_level(url.as_bytes(), qrcode::EcLevel::M)
        .map_err(|e| e.to_string())?;
    let width = qr.width();
    let side = (width + 2 * PNG_QUIET) * PNG_SCALE;
    let mut pixels = vec![255u8; side * side];
    for (i, color) in qr.to_colors().iter().enumerate() {
        if *color != qrcode::Color::Dark {
            continue;
        }
        let (x0, y0) = (
            (i % width + PNG_QUIET) * PNG_SCALE,
            (i / width + PNG_QUIET) * PNG_SCALE,
        );
        for y in y0..y0 + PNG_SCALE {
            pixels[y * side + x0..y * side + x0 + PNG_SCALE].fill(0);
        }
    }
    let side_px = u32::try_from(side).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, side_px, side_px);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
    writer
        .write_image_data(&pixels)
        .map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_distinct_and_drawn() {
        let s1 = StoreId::new("s1").unwrap();
        let s2 = StoreId::new("s2").unwrap();
        let k = [7; 32];
        assert_eq!(code(&k, &s1, None), code(&k, &s1, None));
        assert_eq!(code(&k, &s1, None).len(), 16);
        assert_ne!(code(&k, &s1, None), code(&k, &s2, None));
        assert_ne!(code(&k, &s1, None), code(&k, &s1, Some("z1")));
        assert_ne!(code(&k, &s1, None), code(&[8; 32], &s1, None));
        let url = "https://offers.example.com/q/0123456789abcdef";
        // The PNG decodes back to the code's modules: a dark finder corner at the quiet
        // zone's edge, white inside the quiet zone.
        let bytes = png(url).unwrap();
        let decoder = ::png::Decoder::new(std::io::Cursor::new(&bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut pixels = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut pixels).unwrap();
        let qr = qrcode::QrCode::with_error_correction_level(url.as_bytes(), qrcode::EcLevel::M)
            .unwrap();
        let side = (qr.width() + 2 * PNG_QUIET) * PNG_SCALE;
        assert_eq!((info.width as usize, info.height as usize), (side, side));
        let at = |x: usize, y: usize| pixels[y * side + x];
        let edge = PNG_QUIET * PNG_SCALE;
        assert_eq!(at(edge - 1, edge - 1), 255, "quiet zone");
        assert_eq!(at(edge, edge), 0, "finder pattern");
        for (i, c) in qr.to_colors().iter().enumerate() {
            let (x, y) = (i % qr.width(), i / qr.width());
            let px = at(edge + x * PNG_SCALE + 3, edge + y * PNG_SCALE + 3);
            assert_eq!(px == 0, *c == qrcode::Color::Dark, "module {x},{y}");
        }
        let svg = svg(url).unwrap();
        assert!(
            svg.starts_with("<?xml") && svg.contains("<svg") && svg.contains("<path"),
            "{svg}"
        );
    }
}
