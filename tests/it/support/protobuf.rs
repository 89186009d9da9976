//! Hand-made protobuf for attack files (a pprof no encoder would write): fields built from prost's
//! varint encoder.

/// `value` as a protobuf varint.
pub fn varint(value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    // A length delimiter is a varint; prost's is the public encoder of one. A Vec always has room.
    prost::encode_length_delimiter(value as usize, &mut out).expect("a Vec grows");
    out
}

/// A length-delimited field `number` holding `payload`.
pub fn field(number: u64, payload: &[u8]) -> Vec<u8> {
    [
        varint(number << 3 | 2),
        varint(payload.len() as u64),
        payload.to_vec(),
    ]
    .concat()
}

/// A varint field `number` of `value`.
pub fn number(number: u64, value: u64) -> Vec<u8> {
    [varint(number << 3), varint(value)].concat()
}
