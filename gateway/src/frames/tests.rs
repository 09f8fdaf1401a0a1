//! Frame codec tests: hand-made captures, round trips for every kind, and random input.

use super::*;
use proptest::prelude::*;

fn from_hex(s: &str) -> Vec<u8> {
    hex::decode(s.replace(' ', "")).unwrap()
}

#[test]
fn decodes_an_ibeacon_capture() {
    // flags, then Apple manufacturer data: 4c00 0215 UUID major=1 minor=2 tx=-59
    let adv = from_hex("020106 1aff4c000215e2c56db5dffb48d2b060d0f5a71096e0 0001 0002 c5");
    let frames = decode(&adv).unwrap();
    assert_eq!(frames.len(), 1);
    assert_eq!(
        frames[0].to_json(),
        json!({"kind": "ibeacon", "id": "ibeacon:E2C56DB5-DFFB-48D2-B060-D0F5A71096E0:1:2",
               "uuid": "E2C56DB5-DFFB-48D2-B060-D0F5A71096E0", "major": 1, "minor": 2, "tx_power": -59})
    );
    assert_eq!(frames[0].measured_power_1m(), Some(-59.0));
}

#[test]
fn decodes_eddystone_uid_with_tlm_and_line_beacon() {
    let adv = from_hex(concat!(
        "020106",
        "0303aafe",
        // UID: tx -18 (0 m), namespace, instance, RFU
        "1716aafe00ee",
        "edd1ebeac04e5defa017",
        "0bdb87539b67",
        "0000",
        // TLM v0: 3.0 V, 24.5 °C, 10 adverts, 1234.5 s
        "1116aafe2000",
        "0bb8",
        "1880",
        "0000000a",
        "00003039",
    ));
    let frames = decode(&adv).unwrap();
    assert_eq!(frames.len(), 2);
    assert_eq!(
        frames[0].to_json()["id"],
        "eddystone-uid:edd1ebeac04e5defa017:0bdb87539b67"
    );
    assert_eq!(frames[0].measured_power_1m(), Some(-59.0));
    assert_eq!(
        frames[1].to_json(),
        json!({"kind": "eddystone_tlm", "version": 0, "battery_mv": 3000, "temperature_c": 24.5,
               "adv_count": 10, "uptime_s": 1234.5})
    );
    // LINE Beacon: service data 6ffe, frame 02, hwid, tx 0x7F (not given), 7-byte message
    let adv = from_hex("020106 03036ffe 11166ffe02016a4b2c3d7f01020304050607");
    assert_eq!(decode(&adv).unwrap().len(), 1);
    let line = LineBeacon::new([0x01, 0x6a, 0x4b, 0x2c, 0x3d], 0x7F, &[1, 2, 3, 4, 5, 6, 7]);
    let frames = decode(&encode(&[Frame::Line(line)])).unwrap();
    assert_eq!(
        frames[0].to_json(),
        json!({"kind": "line_beacon", "id": "line:016a4b2c3d", "hwid": "016a4b2c3d",
               "tx_power": 127, "secure_message": "01020304050607"})
    );
    assert_eq!(frames[0].measured_power_1m(), None);
}

#[test]
fn decodes_eddystone_url_and_eid_and_altbeacon() {
    let url = EddystoneUrl::from_url(-20, "https://omo.example/s").unwrap();
    let eid = EddystoneEid {
        tx_power: -20,
        eid: [1, 2, 3, 4, 5, 6, 7, 8],
    };
    let alt = AltBeacon {
        mfg_id: 0x0118,
        id1: [0xab; 16],
        id2: 7,
        id3: 9,
        ref_rssi: -61,
        mfg_reserved: 0x42,
    };
    let frames = decode(&encode(&[
        Frame::Eddystone(Eddystone::Url(url)),
        Frame::Eddystone(Eddystone::Eid(eid)),
        Frame::AltBeacon(alt),
    ]))
    .unwrap();
    let json: Vec<Value> = frames.iter().map(Frame::to_json).collect();
    assert_eq!(
        json[0],
        json!({"kind": "eddystone_url", "url": "https://omo.example/s", "tx_power": -20})
    );
    assert_eq!(
        json[1],
        json!({"kind": "eddystone_eid", "id": "eddystone-eid:0102030405060708", "eid": "0102030405060708", "tx_power": -20})
    );
    assert_eq!(
        json[2],
        json!({"kind": "altbeacon", "id": format!("altbeacon:{}:7:9", "ab".repeat(16)), "id1": "ab".repeat(16),
               "id2": 7, "id3": 9, "mfg_id": 280, "ref_rssi": -61, "mfg_reserved": 66})
    );
}

#[test]
fn ignores_what_is_not_a_beacon() {
    // Apple "nearby" manufacturer data, an unknown service, a short Eddystone, encrypted TLM.
    let adv = from_hex("020106 0aff4c001005031c0e5a2b 05160d18 0102 0416aafe00 1116aafe2001000000000000000000000000");
    assert_eq!(decode(&adv).unwrap(), []);
}

#[test]
fn malformed_ad_is_an_error_with_the_byte() {
    let err = decode(&from_hex("020106 1aff4c0002")).unwrap_err();
    assert_eq!(err.offset(), 3);
}

fn any_frame() -> impl Strategy<Value = Frame> {
    let url = (
        any::<i8>(),
        0u8..4,
        proptest::collection::vec(prop_oneof![0u8..0x0E, 0x21u8..0x7F], 0..=17),
    )
        .prop_map(|(tx, scheme, bytes)| {
            let mut data = vec![0x10, tx as u8, scheme];
            data.extend(bytes);
            match Eddystone::decode(&data) {
                Some(e) => e,
                None => unreachable!("generated URL frames are valid"),
            }
        });
    prop_oneof![
        (any::<[u8; 16]>(), any::<u16>(), any::<u16>(), any::<i8>()).prop_map(
            |(uuid, major, minor, tx_power)| Frame::IBeacon(IBeacon {
                uuid,
                major,
                minor,
                tx_power
            })
        ),
        (any::<i8>(), any::<[u8; 10]>(), any::<[u8; 6]>()).prop_map(
            |(tx_power, namespace, instance)| {
                Frame::Eddystone(Eddystone::Uid(EddystoneUid {
                    tx_power,
                    namespace,
                    instance,
                }))
            }
        ),
        url.prop_map(Frame::Eddystone),
        (any::<u16>(), any::<i16>(), any::<u32>(), any::<u32>()).prop_map(|(b, t, a, u)| {
            Frame::Eddystone(Eddystone::Tlm(EddystoneTlm {
                battery_mv: b,
                temperature_raw: t,
                adv_count: a,
                uptime_ds: u,
            }))
        }),
        (any::<i8>(), any::<[u8; 8]>()).prop_map(|(tx_power, eid)| Frame::Eddystone(
            Eddystone::Eid(EddystoneEid { tx_power, eid })
        )),
        (
            any::<u16>(),
            any::<[u8; 16]>(),
            any::<u16>(),
            any::<u16>(),
            any::<i8>(),
            any::<u8>()
        )
            .prop_filter(
                "Apple's id with BEAC would still decode, but is not what this tests",
                |t| t.0 != ibeacon::APPLE
            )
            .prop_map(|(mfg_id, id1, id2, id3, ref_rssi, mfg_reserved)| {
                Frame::AltBeacon(AltBeacon {
                    mfg_id,
                    id1,
                    id2,
                    id3,
                    ref_rssi,
                    mfg_reserved,
                })
            }),
        (
            any::<[u8; 5]>(),
            any::<i8>(),
            proptest::collection::vec(any::<u8>(), 0..=13)
        )
            .prop_map(|(hwid, tx, msg)| Frame::Line(LineBeacon::new(hwid, tx, &msg))),
    ]
}

proptest! {
    #[test]
    fn every_kind_round_trips(frame in any_frame()) {
        prop_assert_eq!(decode(&encode(&[frame])).unwrap(), vec![frame]);
    }

    #[test]
    fn several_frames_in_one_advert_round_trip(frames in proptest::collection::vec(any_frame(), 1..5)) {
        prop_assert_eq!(decode(&encode(&frames)).unwrap(), frames);
    }

    #[test]
    fn url_text_round_trips(host in "[a-z0-9-]{1,8}", tld in prop::sample::select(vec![".com", ".org/", ".info", ".jp", ""]), path in "[a-z/]{0,4}") {
        let url = format!("https://{host}{tld}{path}");
        if let Ok(u) = EddystoneUrl::from_url(0, &url) {
            prop_assert_eq!(u.url(), url);
        }
    }

    #[test]
    fn never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        if let Ok(frames) = decode(&bytes) {
            for f in frames {
                let _ = f.to_json();
                let _ = f.measured_power_1m();
            }
        }
    }

    #[test]
    fn never_panics_on_mangled_beacons(frame in any_frame(), pos in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
        let mut adv = encode(&[frame]);
        let i = pos.index(adv.len());
        adv[i] = byte;
        let _ = decode(&adv);
        let n = cut.index(adv.len() + 1);
        let _ = decode(&adv[..n]);
    }
}
