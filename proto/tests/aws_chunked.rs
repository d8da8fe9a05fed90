//! The `aws-chunked` decoder against the bodies AWS documents and SDKs send.
//!
//! - The AWS SigV4 streaming example (66,560 bytes of `a` as a 64 KiB chunk, a 1 KiB chunk and
//!   the final empty chunk, with the documented chunk signatures), and its signed-trailer
//!   variant (`x-amz-checksum-crc32c:sOO8/Q==` and the documented trailer signature).
//! - `STREAMING-UNSIGNED-PAYLOAD-TRAILER` bodies as botocore's `AwsChunkedWrapper` frames them.
//! - Each fed whole, split in two at every framing offset, and in uneven pieces: the same
//!   events must come out. Truncations, lying sizes, bad hex, missing CRLFs; random bytes never
//!   make it panic.

use edgemirror_proto::s3::aws_chunked::{
    AwsChunk, AwsChunkedDecoder, AwsChunkedError, AwsChunkedMode, MIN_AWS_CHUNK_BYTES,
};

/// An event with its bytes, so events from differently split inputs compare.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ev {
    Data(Vec<u8>),
    ChunkEnd(Option<[u8; 32]>),
    Trailer(String, String),
    TrailerSignature([u8; 32]),
}

#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    events: Vec<Ev>,
    /// `Ok(Some(n))`: `End` after n bytes; `Ok(None)`: the input ran out first.
    outcome: Result<Option<usize>, AwsChunkedError>,
}

/// Feeds `input` split at `cuts`, as reads from a socket would arrive; adjacent `Data` events
/// are merged.
fn feed(mut dec: AwsChunkedDecoder, input: &[u8], cuts: &[usize]) -> Decoded {
    let mut events: Vec<Ev> = Vec::new();
    let mut consumed = 0;
    let mut from = 0;
    for to in cuts.iter().copied().chain([input.len()]) {
        let mut piece = &input[from..to];
        from = to;
        loop {
            let (n, ev) = match dec.decode(piece) {
                Ok(r) => r,
                Err(e) => return Decoded { events, outcome: Err(e) },
            };
            assert!(n <= piece.len());
            consumed += n;
            match ev {
                AwsChunk::Data { start, end } => match events.last_mut() {
                    Some(Ev::Data(d)) => d.extend_from_slice(&piece[start..end]),
                    _ => events.push(Ev::Data(piece[start..end].to_vec())),
                },
                AwsChunk::ChunkEnd { signature } => events.push(Ev::ChunkEnd(signature)),
                AwsChunk::Trailer(t) => events.push(Ev::Trailer(
                    String::from_utf8(t.name().to_vec()).unwrap(),
                    String::from_utf8(t.value().to_vec()).unwrap(),
                )),
                AwsChunk::TrailerSignature { signature } => events.push(Ev::TrailerSignature(signature)),
                AwsChunk::Partial => {
                    assert_eq!(n, piece.len());
                    break;
                }
                AwsChunk::End => return Decoded { events, outcome: Ok(Some(consumed)) },
            }
            piece = &piece[n..];
        }
    }
    Decoded { events, outcome: Ok(None) }
}

fn unhex(s: &str) -> [u8; 32] {
    std::array::from_fn(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
}

/// The offsets worth splitting at: everywhere near framing (where the state machine works)
/// and a sample inside the data.
fn split_points(body: &[u8]) -> Vec<usize> {
    let mut points: Vec<usize> = (0..=body.len()).step_by(997).collect();
    for (i, w) in body.windows(2).enumerate() {
        if w != b"aa" {
            points.extend(i.saturating_sub(3)..(i + 4).min(body.len() + 1));
        }
    }
    points.sort_unstable();
    points.dedup();
    points
}

/// Checks a valid body: fed whole, split at every framing offset, and in uneven pieces, it
/// gives `events` and ends exactly at its last byte; every proper prefix is still partial.
fn check_valid(dec: &AwsChunkedDecoder, body: &[u8], events: &[Ev]) {
    let expected = Decoded { events: events.to_vec(), outcome: Ok(Some(body.len())) };
    assert_eq!(feed(dec.clone(), body, &[]), expected);
    for k in split_points(body) {
        assert_eq!(feed(dec.clone(), body, &[k]), expected, "split at {k}");
        if k < body.len() {
            assert_eq!(feed(dec.clone(), &body[..k], &[]).outcome, Ok(None), "prefix {k}");
        }
    }
    for piece in [1usize, 7, 100, 4096, 65_537] {
        let cuts: Vec<usize> = (piece..body.len()).step_by(piece).collect();
        assert_eq!(feed(dec.clone(), body, &cuts), expected, "pieces of {piece}");
    }
}

// ---------------------------------------------------------------------------------------------
// AWS documentation: "Signature Calculations for the Authorization Header: Transferring
// Payload in Multiple Chunks", Example: PUT Object (and its trailing-headers variant)
// ---------------------------------------------------------------------------------------------

const CHUNK_1: &str = "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648";
const CHUNK_2: &str = "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497";
const CHUNK_FINAL: &str = "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9";

fn aws_example_body(signatures: [&str; 3], trailer: &str) -> Vec<u8> {
    let mut body = format!("10000;chunk-signature={}\r\n", signatures[0]).into_bytes();
    body.resize(body.len() + 65_536, b'a');
    body.extend_from_slice(format!("\r\n400;chunk-signature={}\r\n", signatures[1]).as_bytes());
    body.resize(body.len() + 1024, b'a');
    body.extend_from_slice(format!("\r\n0;chunk-signature={}\r\n{trailer}\r\n", signatures[2]).as_bytes());
    body
}

#[test]
fn aws_example_signed_chunks() {
    let body = aws_example_body([CHUNK_1, CHUNK_2, CHUNK_FINAL], "");
    // The example's headers: Content-Length: 66824, x-amz-decoded-content-length: 66560.
    assert_eq!(body.len(), 66_824);
    let mode = AwsChunkedMode::from_content_sha256(b"STREAMING-AWS4-HMAC-SHA256-PAYLOAD").unwrap();
    let dec = AwsChunkedDecoder::new(mode).with_decoded_length(66_560);
    let events = [
        Ev::Data(vec![b'a'; 65_536]),
        Ev::ChunkEnd(Some(unhex(CHUNK_1))),
        Ev::Data(vec![b'a'; 1024]),
        Ev::ChunkEnd(Some(unhex(CHUNK_2))),
        Ev::ChunkEnd(Some(unhex(CHUNK_FINAL))),
    ];
    check_valid(&dec, &body, &events);

    let mut d = dec.clone();
    let mut rest = &body[..];
    while !d.is_done() {
        let (n, _) = d.decode(rest).unwrap();
        rest = &rest[n..];
    }
    assert_eq!(d.decoded_bytes(), 66_560);
}

#[test]
fn aws_example_signed_trailer() {
    // The trailing-headers example: same payload, chunk signatures over the -TRAILER seed
    // (106e2a8a...), then the CRC32C of the 66560 bytes and the trailer signature.
    let body = aws_example_body(
        [
            "b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2",
            "1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7",
            "2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992",
        ],
        "x-amz-checksum-crc32c:sOO8/Q==\r\n\
x-amz-trailer-signature:d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435\r\n",
    );
    let mode = AwsChunkedMode::from_content_sha256(b"STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER").unwrap();
    let dec = AwsChunkedDecoder::new(mode).with_decoded_length(66_560);
    let events = [
        Ev::Data(vec![b'a'; 65_536]),
        Ev::ChunkEnd(Some(unhex("b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2"))),
        Ev::Data(vec![b'a'; 1024]),
        Ev::ChunkEnd(Some(unhex("1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7"))),
        Ev::ChunkEnd(Some(unhex("2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992"))),
        Ev::Trailer("x-amz-checksum-crc32c".into(), "sOO8/Q==".into()),
        Ev::TrailerSignature(unhex("d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435")),
    ];
    check_valid(&dec, &body, &events);

    // The same body announced as signed chunks without trailer is refused at the trailer.
    assert_eq!(
        feed(AwsChunkedDecoder::new(AwsChunkedMode::SignedChunks), &body, &[]).outcome,
        Err(AwsChunkedError::BadTrailer)
    );
}

#[test]
fn aws_example_lying_sizes_and_broken_framing() {
    use AwsChunkedError::*;
    let good = aws_example_body([CHUNK_1, CHUNK_2, CHUNK_FINAL], "");
    let dec = AwsChunkedDecoder::new(AwsChunkedMode::SignedChunks);
    let run = |body: &[u8], dec: AwsChunkedDecoder| {
        let whole = feed(dec.clone(), body, &[]).outcome;
        for k in split_points(body) {
            assert_eq!(feed(dec.clone(), body, &[k]).outcome, whole, "split at {k}");
        }
        whole
    };
    let replace = |from: &str, to: &str| {
        let s = String::from_utf8(good.clone()).unwrap();
        assert!(s.contains(from));
        s.replacen(from, to, 1).into_bytes()
    };

    // x-amz-decoded-content-length that lies either way.
    assert_eq!(run(&good, dec.clone().with_decoded_length(66_561)), Err(ShorterThanDeclared));
    assert_eq!(run(&good, dec.clone().with_decoded_length(66_559)), Err(LongerThanDeclared));
    assert_eq!(run(&good, dec.clone().with_decoded_length(65_535)), Err(LongerThanDeclared));
    // A chunk-size larger or smaller than the data that follows.
    // One byte more: the data swallows the CR, and the LF is not the CR that must follow.
    assert_eq!(run(&replace("400;", "401;"), dec.clone()), Err(BadChunkTerminator));
    // Far more than the body holds: the decoder waits for data that never comes (the node's
    // Content-Length or connection close ends it: IncompleteBody).
    assert_eq!(run(&replace("400;", "ffff0;"), dec.clone()), Ok(None));
    assert_eq!(run(&replace("400;", "3ff;"), dec.clone()), Err(BadChunkTerminator));
    assert_eq!(run(&replace("10000;", "ffff;"), dec.clone()), Err(BadChunkTerminator));
    // Bad hex, in the size and in the signature.
    assert_eq!(run(&replace("400;", "40g;"), dec.clone()), Err(BadChunkSize));
    assert_eq!(run(&replace(CHUNK_2, &CHUNK_2.replace('c', "x")), dec.clone()), Err(BadChunkSignature));
    // Missing or partial CRLFs.
    assert_eq!(run(&replace("\r\n400;", "400;"), dec.clone()), Err(BadChunkTerminator));
    assert_eq!(run(&replace("\r\n400;", "\n400;"), dec.clone()), Err(BadChunkTerminator));
    assert_eq!(run(&replace(&format!("{CHUNK_1}\r\n"), &format!("{CHUNK_1}\n")), dec.clone()), Err(BareLf));
    assert_eq!(run(&good[..good.len() - 1], dec.clone()), Ok(None));
    let mut no_final_crlf = good[..good.len() - 2].to_vec();
    no_final_crlf.extend_from_slice(b"XX");
    assert_eq!(run(&no_final_crlf, dec.clone()), Err(BadTrailer));
    // A 1 KiB chunk in the middle is below S3's minimum.
    let mut small_first = replace("10000;", "400;");
    small_first.drain(86..86 + 64_512);
    assert_eq!(run(&small_first, dec.clone()), Err(ChunkTooSmall));
    assert_eq!(run(&small_first, dec.clone().with_min_chunk_bytes(0)), Ok(Some(small_first.len())));
    // An oversized line: a padded size, then an unending signature extension.
    assert_eq!(run(&replace("400;", "00000000000000400;"), dec.clone()), Err(ChunkLineTooLong));
    assert_eq!(
        run(&replace(&format!("{CHUNK_2}\r\n"), &format!("{CHUNK_2}{CHUNK_2}\r\n")), dec),
        Err(BadChunkSignature)
    );
}

// ---------------------------------------------------------------------------------------------
// boto3 / AWS CLI: STREAMING-UNSIGNED-PAYLOAD-TRAILER
// ---------------------------------------------------------------------------------------------

/// A body the way botocore's `AwsChunkedWrapper` writes it: `hex(len)\r\n<data>\r\n` per read
/// of `chunk_size` bytes, then `0\r\n<checksum header>:<base64>\r\n\r\n`.
fn botocore_body(payload: &[u8], chunk_size: usize, trailer: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for chunk in payload.chunks(chunk_size) {
        body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        body.extend_from_slice(chunk);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("0\r\n{trailer}\r\n\r\n").as_bytes());
    body
}

#[test]
fn boto3_put_object_small() {
    // s3.put_object(Bucket=..., Key=..., Body=b"hello world") with the default CRC32 checksum:
    // x-amz-content-sha256: STREAMING-UNSIGNED-PAYLOAD-TRAILER, x-amz-trailer:
    // x-amz-checksum-crc32, x-amz-decoded-content-length: 11.
    let body = botocore_body(b"hello world", 1024 * 1024, "x-amz-checksum-crc32:DUoRhQ==");
    assert_eq!(body, b"b\r\nhello world\r\n0\r\nx-amz-checksum-crc32:DUoRhQ==\r\n\r\n");
    let mode = AwsChunkedMode::from_content_sha256(b"STREAMING-UNSIGNED-PAYLOAD-TRAILER").unwrap();
    let dec = AwsChunkedDecoder::new(mode).with_decoded_length(11);
    let events = [
        Ev::Data(b"hello world".to_vec()),
        Ev::ChunkEnd(None),
        Ev::ChunkEnd(None),
        Ev::Trailer("x-amz-checksum-crc32".into(), "DUoRhQ==".into()),
    ];
    check_valid(&dec, &body, &events);
    // Byte by byte too.
    let every: Vec<usize> = (1..body.len()).collect();
    assert_eq!(feed(dec, &body, &every).events, events);
}

#[test]
fn boto3_put_object_multi_chunk() {
    // 70,000 bytes of `a`; CRC32 computed independently (zlib.crc32 -> EiniBA==).
    let payload = vec![b'a'; 70_000];
    for chunk_size in [65_536, 8192, 70_000] {
        let body = botocore_body(&payload, chunk_size, "x-amz-checksum-crc32:EiniBA==");
        let dec = AwsChunkedDecoder::new(AwsChunkedMode::UnsignedTrailer).with_decoded_length(70_000);
        let mut events = Vec::new();
        for chunk in payload.chunks(chunk_size) {
            events.push(Ev::Data(chunk.to_vec()));
            events.push(Ev::ChunkEnd(None));
        }
        events.push(Ev::ChunkEnd(None));
        events.push(Ev::Trailer("x-amz-checksum-crc32".into(), "EiniBA==".into()));
        check_valid(&dec, &body, &events);
    }
    // boto3 with 1 KiB reads would break S3's minimum chunk size.
    let body = botocore_body(&payload, 1024, "x-amz-checksum-crc32:EiniBA==");
    const { assert!(1024 < MIN_AWS_CHUNK_BYTES) };
    assert_eq!(
        feed(AwsChunkedDecoder::new(AwsChunkedMode::UnsignedTrailer), &body, &[]).outcome,
        Err(AwsChunkedError::ChunkTooSmall)
    );
}

#[test]
fn boto3_empty_object_and_no_checksum() {
    let dec = AwsChunkedDecoder::new(AwsChunkedMode::UnsignedTrailer).with_decoded_length(0);
    let body = botocore_body(b"", 1024, "x-amz-checksum-crc32:AAAAAA==");
    assert_eq!(body, b"0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n");
    check_valid(&dec, &body, &[Ev::ChunkEnd(None), Ev::Trailer("x-amz-checksum-crc32".into(), "AAAAAA==".into())]);
    // Trailer section may be empty: the handler checks it got the x-amz-trailer it was promised.
    check_valid(&dec, b"0\r\n\r\n", &[Ev::ChunkEnd(None)]);
}

// ---------------------------------------------------------------------------------------------
// Never panics
// ---------------------------------------------------------------------------------------------

struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[test]
fn random_bytes_and_mutations_never_panic() {
    let modes = [AwsChunkedMode::SignedChunks, AwsChunkedMode::UnsignedTrailer, AwsChunkedMode::SignedTrailer];
    let alphabet = b"0123456789abcdefABCDEFg;:=-\r\n \tchunk-signaturex-amz-trailer\xff\x00";
    let mut rng = Lcg(42);
    for _ in 0..3000 {
        let len = rng.next() as usize % 200;
        let from_alphabet = rng.next() & 1 == 0;
        let bytes: Vec<u8> = (0..len)
            .map(|_| if from_alphabet { alphabet[rng.next() as usize % alphabet.len()] } else { rng.next() as u8 })
            .collect();
        for mode in modes {
            let dec =
                AwsChunkedDecoder::new(mode).with_min_chunk_bytes(rng.next() % 16).with_decoded_length(rng.next() % 64);
            let whole = feed(dec.clone(), &bytes, &[]);
            let cut = rng.next() as usize % (len + 1);
            assert_eq!(feed(dec, &bytes, &[cut]), whole);
        }
    }
    // Mutations of small valid bodies, in every mode.
    let sig = "ab".repeat(32);
    let seeds = [
        format!("5;chunk-signature={sig}\r\nhello\r\n0;chunk-signature={sig}\r\n\r\n"),
        "5\r\nhello\r\n0\r\nx-amz-checksum-crc32:NhCmhg==\r\n\r\n".to_owned(),
        format!("3;chunk-signature={sig}\r\nabc\r\n0;chunk-signature={sig}\r\nx-amz-checksum-crc32c:Nks/tw==\r\nx-amz-trailer-signature:{sig}\r\n\r\n"),
    ];
    for seed in &seeds {
        for _ in 0..2000 {
            let mut m = seed.clone().into_bytes();
            for _ in 0..1 + rng.next() % 3 {
                let i = rng.next() as usize % m.len();
                match rng.next() % 3 {
                    0 => m[i] = alphabet[rng.next() as usize % alphabet.len()],
                    1 => {
                        m.remove(i);
                    }
                    _ => m.insert(i, alphabet[rng.next() as usize % alphabet.len()]),
                }
            }
            for mode in modes {
                let dec = AwsChunkedDecoder::new(mode).with_min_chunk_bytes(0);
                let whole = feed(dec.clone(), &m, &[]);
                if let Ok(Some(end)) = whole.outcome {
                    assert!(end <= m.len());
                }
                let every: Vec<usize> = (1..m.len()).collect();
                assert_eq!(feed(dec, &m, &every), whole, "{:?}", String::from_utf8_lossy(&m));
            }
        }
    }
}
