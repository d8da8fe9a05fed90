//! The AWS documentation's S3 Signature Version 4 examples, reproduced through the public API of
//! `edgemirror_proto::s3::sigv4`, and the refusals around them.
//!
//! Sources: "Examples: Signature Calculations" in
//! <https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html> (GET object
//! with Range, PUT object, GET bucket lifecycle, GET bucket listing),
//! <https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html> (presigned
//! GET), <https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-streaming.html> (chunked PUT)
//! and <https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-streaming-trailers.html> (chunked
//! PUT with a signed trailer). All use the documentation's example key pair, region us-east-1
//! and the time 20130524T000000Z.
//!
//! Each example is checked twice: step by step (canonical request text as printed in the
//! documentation, then the signature) and end to end through `parse_auth` + `verify`, which
//! stream the canonical request into SHA-256 instead of building it.

use std::time::{Duration, SystemTime};

use edgemirror_proto::s3::sigv4::{
    canonical_request, parse_auth, parse_authorization, sha256_hex, signature, signing_key, string_to_sign, to_hex,
    verify, AmzDate, Auth, AuthForm, CanonicalRequest, ChunkSigner, Malformed, PayloadHash, Request, SigV4Error,
    SignedHeaders, Verified, EMPTY_SHA256_HEX,
};

const ACCESS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const REGION: &str = "us-east-1";
const AMZ_DATE: &str = "20130524T000000Z";
const SCOPE: &str = "20130524/us-east-1/s3/aws4_request";
const HOST: &str = "examplebucket.s3.amazonaws.com";

/// The documentation's request time.
fn signed_at() -> SystemTime {
    AmzDate::parse(AMZ_DATE).expect("valid date").to_system_time()
}

fn key() -> [u8; 32] {
    signing_key(SECRET, "20130524", REGION, "s3")
}

fn authorization(signed_headers: &str, signature_hex: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{SCOPE}, SignedHeaders={signed_headers}, Signature={signature_hex}"
    )
}

/// One header-signed example of the documentation.
struct HeaderExample<'a> {
    method: &'a str,
    path: &'a str,
    query: &'a str,
    /// Request headers as sent (Authorization added by `request_headers`).
    headers: &'a [(&'a str, &'a str)],
    signed_headers: &'a str,
    payload_hash: &'a str,
    canonical_request: &'a str,
    /// Hex SHA-256 of the canonical request, the last line of the documentation's string to sign.
    canonical_request_hash: &'a str,
    signature: &'a str,
}

impl HeaderExample<'_> {
    fn request_headers(&self, authorization_value: &str) -> Vec<(String, String)> {
        let mut headers: Vec<(String, String)> =
            self.headers.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect();
        headers.push(("Authorization".to_owned(), authorization_value.to_owned()));
        headers
    }

    /// Step by step: canonical request, string to sign, signature.
    fn check_steps(&self) {
        let signed = SignedHeaders::parse(self.signed_headers.into()).expect("signed headers");
        let canonical = canonical_request(&CanonicalRequest {
            method: self.method,
            path: self.path.as_bytes(),
            query: self.query.as_bytes(),
            headers: self.headers,
            signed_headers: &signed,
            payload_hash: self.payload_hash,
            form: AuthForm::Header,
        })
        .expect("canonical request");
        assert_eq!(String::from_utf8_lossy(&canonical), self.canonical_request);
        assert_eq!(sha256_hex(&canonical), self.canonical_request_hash);
        let to_sign = string_to_sign(AMZ_DATE, SCOPE, &canonical);
        assert_eq!(to_sign, format!("AWS4-HMAC-SHA256\n{AMZ_DATE}\n{SCOPE}\n{}", self.canonical_request_hash));
        assert_eq!(to_hex(&signature(&key(), &to_sign)), self.signature);
    }

    /// End to end: parse_auth + verify at `now`.
    fn verify_at(&self, signature_hex: &str, secret: &str, now: SystemTime) -> Result<Verified, SigV4Error> {
        let authorization_value = authorization(self.signed_headers, signature_hex);
        let headers = self.request_headers(&authorization_value);
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let auth = parse_auth(Some(authorization_value.as_bytes()), self.query.as_bytes())?.expect("signed request");
        assert_eq!(auth.credential().access_key(), ACCESS_KEY);
        let request = Request {
            method: self.method,
            path: self.path.as_bytes(),
            query: self.query.as_bytes(),
            headers: &headers,
        };
        verify(&auth, &request, secret, REGION, now)
    }
}

const GET_OBJECT: HeaderExample<'static> = HeaderExample {
    method: "GET",
    path: "/test.txt",
    query: "",
    headers: &[
        ("Host", HOST),
        ("Range", "bytes=0-9"),
        ("x-amz-content-sha256", EMPTY_SHA256_HEX),
        ("x-amz-date", AMZ_DATE),
    ],
    signed_headers: "host;range;x-amz-content-sha256;x-amz-date",
    payload_hash: EMPTY_SHA256_HEX,
    canonical_request: "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n\
        x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
        x-amz-date:20130524T000000Z\n\nhost;range;x-amz-content-sha256;x-amz-date\n\
        e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    canonical_request_hash: "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972",
    signature: "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
};

const PUT_OBJECT_BODY: &[u8] = b"Welcome to Amazon S3.";
const PUT_OBJECT_HASH: &str = "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072";

const PUT_OBJECT: HeaderExample<'static> = HeaderExample {
    method: "PUT",
    // Sent raw: '$' is re-encoded as %24 in the canonical URI.
    path: "/test$file.text",
    query: "",
    headers: &[
        ("Host", HOST),
        ("Date", "Fri, 24 May 2013 00:00:00 GMT"),
        // The documentation's request has a trailing space here; the canonical form drops it.
        ("x-amz-date", "20130524T000000Z "),
        ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
        ("x-amz-content-sha256", PUT_OBJECT_HASH),
    ],
    signed_headers: "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class",
    payload_hash: PUT_OBJECT_HASH,
    canonical_request: "PUT\n/test%24file.text\n\ndate:Fri, 24 May 2013 00:00:00 GMT\n\
        host:examplebucket.s3.amazonaws.com\n\
        x-amz-content-sha256:44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072\n\
        x-amz-date:20130524T000000Z\nx-amz-storage-class:REDUCED_REDUNDANCY\n\n\
        date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class\n\
        44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072",
    canonical_request_hash: "9e0e90d9c76de8fa5b200d8c849cd5b8dc7a3be3951ddb7f6a76b4158342019d",
    signature: "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd",
};

const GET_LIFECYCLE: HeaderExample<'static> = HeaderExample {
    method: "GET",
    path: "/",
    query: "lifecycle",
    headers: &[("Host", HOST), ("x-amz-date", AMZ_DATE), ("x-amz-content-sha256", EMPTY_SHA256_HEX)],
    signed_headers: "host;x-amz-content-sha256;x-amz-date",
    payload_hash: EMPTY_SHA256_HEX,
    canonical_request: "GET\n/\nlifecycle=\nhost:examplebucket.s3.amazonaws.com\n\
        x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
        x-amz-date:20130524T000000Z\n\nhost;x-amz-content-sha256;x-amz-date\n\
        e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    canonical_request_hash: "9766c798316ff2757b517bc739a67f6213b4ab36dd5da2f94eaebf79c77395ca",
    signature: "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543",
};

const LIST_OBJECTS: HeaderExample<'static> = HeaderExample {
    method: "GET",
    path: "/",
    query: "max-keys=2&prefix=J",
    headers: &[("Host", HOST), ("x-amz-date", AMZ_DATE), ("x-amz-content-sha256", EMPTY_SHA256_HEX)],
    signed_headers: "host;x-amz-content-sha256;x-amz-date",
    payload_hash: EMPTY_SHA256_HEX,
    canonical_request: "GET\n/\nmax-keys=2&prefix=J\nhost:examplebucket.s3.amazonaws.com\n\
        x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
        x-amz-date:20130524T000000Z\n\nhost;x-amz-content-sha256;x-amz-date\n\
        e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    canonical_request_hash: "df57d21db20da04d7fa30298dd4488ba3a2b47ca3a489c74750e0f1e7df1b9b7",
    signature: "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
};

const HEADER_EXAMPLES: [&HeaderExample<'static>; 4] = [&GET_OBJECT, &PUT_OBJECT, &GET_LIFECYCLE, &LIST_OBJECTS];

#[test]
fn signing_key_of_the_documentation() {
    // The derived key is not printed in the S3 pages; this is the general SigV4 example of the
    // same secret for 20130524/us-east-1/s3, as every SDK's test suite computes it.
    assert_eq!(to_hex(&key()), "dbb893acc010964918f1fd433add87c70e8b0db6be30c1fbeafefa5ec6ba8378");
}

#[test]
fn header_examples_step_by_step() {
    for example in HEADER_EXAMPLES {
        example.check_steps();
    }
}

#[test]
fn header_examples_verify() {
    for example in HEADER_EXAMPLES {
        let verified = example.verify_at(example.signature, SECRET, signed_at()).expect(example.path);
        assert!(verified.chunk_signer.is_none());
    }
}

#[test]
fn put_object_body_is_checked_against_its_hash() {
    assert_eq!(sha256_hex(PUT_OBJECT_BODY), PUT_OBJECT_HASH);
    let verified = PUT_OBJECT.verify_at(PUT_OBJECT.signature, SECRET, signed_at()).expect("verifies");
    assert!(matches!(verified.payload, PayloadHash::Sha256(_)));
    let mut hasher = verified.payload_hasher().expect("hex payload hash");
    for piece in PUT_OBJECT_BODY.chunks(4) {
        hasher.update(piece);
    }
    assert_eq!(hasher.finish(), Ok(()));
    let mut hasher = verified.payload_hasher().expect("hex payload hash");
    hasher.update(b"Welcome to Amazon S3!");
    assert_eq!(hasher.finish(), Err(SigV4Error::ContentSha256Mismatch));
}

#[test]
fn get_object_verifies_with_date_header_instead_of_x_amz_date() {
    // Same request signed with the Date header as the time source: the string to sign carries
    // the ISO form of Date, so the signature is the one of x-amz-date 20130524T000000Z when
    // x-amz-date is neither sent nor signed.
    let headers =
        [("Host", HOST), ("Date", "Fri, 24 May 2013 00:00:00 GMT"), ("x-amz-content-sha256", EMPTY_SHA256_HEX)];
    let signed = SignedHeaders::parse("date;host;x-amz-content-sha256".into()).expect("signed headers");
    let canonical = canonical_request(&CanonicalRequest {
        method: "GET",
        path: b"/test.txt",
        query: b"",
        headers: &headers,
        signed_headers: &signed,
        payload_hash: EMPTY_SHA256_HEX,
        form: AuthForm::Header,
    })
    .expect("canonical");
    let sig = to_hex(&signature(&key(), &string_to_sign(AMZ_DATE, SCOPE, &canonical)));
    let value = authorization("date;host;x-amz-content-sha256", &sig);
    let auth = parse_auth(Some(value.as_bytes()), b"").expect("parses").expect("signed");
    let request = Request { method: "GET", path: b"/test.txt", query: b"", headers: &headers };
    assert!(verify(&auth, &request, SECRET, REGION, signed_at()).is_ok());
}

// --- Presigned URL ---------------------------------------------------------------------------

const PRESIGNED_SIGNATURE: &str = "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404";

fn presigned_query(signature_hex: &str) -> String {
    format!(
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
         &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature={signature_hex}"
    )
}

fn verify_presigned(query: &str, now: SystemTime) -> Result<Verified, SigV4Error> {
    let headers = [("Host", HOST)];
    let auth = parse_auth(None, query.as_bytes())?.expect("presigned");
    assert_eq!(auth.form(), AuthForm::Query);
    let request = Request { method: "GET", path: b"/test.txt", query: query.as_bytes(), headers: &headers };
    verify(&auth, &request, SECRET, REGION, now)
}

#[test]
fn presigned_example_step_by_step() {
    let query = presigned_query(PRESIGNED_SIGNATURE);
    let signed = SignedHeaders::parse("host".into()).expect("signed headers");
    let canonical = canonical_request(&CanonicalRequest {
        method: "GET",
        path: b"/test.txt",
        query: query.as_bytes(),
        headers: &[("Host", HOST)],
        signed_headers: &signed,
        payload_hash: "UNSIGNED-PAYLOAD",
        form: AuthForm::Query,
    })
    .expect("canonical");
    assert_eq!(
        String::from_utf8_lossy(&canonical),
        "GET\n/test.txt\nX-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2F\
         us-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\n\
         host:examplebucket.s3.amazonaws.com\n\nhost\nUNSIGNED-PAYLOAD"
    );
    assert_eq!(sha256_hex(&canonical), "3bfa292879f6447bbcda7001decf97f4a54dc650c8942174ae0a9121cf58ad04");
    let to_sign = string_to_sign(AMZ_DATE, SCOPE, &canonical);
    assert_eq!(to_hex(&signature(&key(), &to_sign)), PRESIGNED_SIGNATURE);
}

#[test]
fn presigned_example_verifies_until_it_expires() {
    let query = presigned_query(PRESIGNED_SIGNATURE);
    let verified = verify_presigned(&query, signed_at() + Duration::from_secs(3600)).expect("verifies");
    assert_eq!(verified.payload, PayloadHash::Unsigned);
    // X-Amz-Expires=86400: the last valid second, then expired.
    assert!(verify_presigned(&query, signed_at() + Duration::from_secs(86_400)).is_ok());
    assert_eq!(
        verify_presigned(&query, signed_at() + Duration::from_secs(86_401)).unwrap_err(),
        SigV4Error::RequestExpired
    );
    assert_eq!(SigV4Error::RequestExpired.s3_code(), "AccessDenied");
    // Signed in the future: tolerated within the clock skew, refused beyond it.
    assert!(verify_presigned(&query, signed_at() - Duration::from_secs(14 * 60)).is_ok());
    assert_eq!(
        verify_presigned(&query, signed_at() - Duration::from_secs(16 * 60)).unwrap_err(),
        SigV4Error::RequestNotYetValid
    );
}

#[test]
fn presigned_example_refusals() {
    let now = signed_at() + Duration::from_secs(60);
    let mut flipped = PRESIGNED_SIGNATURE.to_owned();
    flipped.replace_range(63.., "5");
    assert_eq!(verify_presigned(&presigned_query(&flipped), now).unwrap_err(), SigV4Error::SignatureDoesNotMatch);
    // Any other query parameter is signed too.
    let query = format!("{}&response-content-type=text%2Fplain", presigned_query(PRESIGNED_SIGNATURE));
    assert_eq!(verify_presigned(&query, now).unwrap_err(), SigV4Error::SignatureDoesNotMatch);
    // A longer lifetime than signed.
    let query = presigned_query(PRESIGNED_SIGNATURE).replace("X-Amz-Expires=86400", "X-Amz-Expires=86401");
    assert_eq!(verify_presigned(&query, now).unwrap_err(), SigV4Error::SignatureDoesNotMatch);
    // Wrong region in the scope: S3's AuthorizationQueryParametersError.
    let query = presigned_query(PRESIGNED_SIGNATURE).replace("us-east-1", "eu-west-1");
    let err = verify_presigned(&query, now).unwrap_err();
    assert_eq!(err, SigV4Error::QueryMalformed(Malformed::WrongRegion));
    assert_eq!((err.s3_code(), err.http_status()), ("AuthorizationQueryParametersError", 400));
    // An unsigned x-amz-* header sent along.
    let headers = [("Host", HOST), ("x-amz-acl", "public-read")];
    let query = presigned_query(PRESIGNED_SIGNATURE);
    let auth = parse_auth(None, query.as_bytes()).expect("parses").expect("presigned");
    let request = Request { method: "GET", path: b"/test.txt", query: query.as_bytes(), headers: &headers };
    assert_eq!(verify(&auth, &request, SECRET, REGION, now).unwrap_err(), SigV4Error::HeadersNotSigned);
}

// --- Chunked upload (STREAMING-AWS4-HMAC-SHA256-PAYLOAD) -----------------------------------

/// The chunked examples' request; `trailer` selects the signed-trailer variant.
fn chunked_headers(trailer: bool) -> Vec<(&'static str, &'static str)> {
    let mut headers = vec![
        ("Host", "s3.amazonaws.com"),
        ("x-amz-date", AMZ_DATE),
        ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
        ("Content-Encoding", "aws-chunked"),
        ("x-amz-decoded-content-length", "66560"),
        ("Content-Length", "66824"),
    ];
    if trailer {
        headers.push(("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"));
        headers.push(("x-amz-trailer", "x-amz-checksum-crc32c"));
    } else {
        headers.push(("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"));
    }
    headers
}

const CHUNKED_SIGNED_HEADERS: &str =
    "content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class";
const CHUNKED_SEED: &str = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9";
const CHUNK_SIGNATURES: [&str; 3] = [
    "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
    "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
    "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
];

const TRAILER_SIGNED_HEADERS: &str =
    "content-encoding;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class;x-amz-trailer";
const TRAILER_SEED: &str = "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e";
const TRAILER_CHUNK_SIGNATURES: [&str; 3] = [
    "b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2",
    "1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7",
    "2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992",
];
const TRAILER_SIGNATURE: &str = "d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435";

/// 65536 bytes of 'a', then 1024, then the final empty chunk.
fn chunk_data() -> [Vec<u8>; 3] {
    [vec![b'a'; 65_536], vec![b'a'; 1024], Vec::new()]
}

fn verify_chunked(trailer: bool, seed: &str) -> Result<Verified, SigV4Error> {
    let signed_headers = if trailer { TRAILER_SIGNED_HEADERS } else { CHUNKED_SIGNED_HEADERS };
    let value = authorization(signed_headers, seed);
    let headers = chunked_headers(trailer);
    let auth = parse_auth(Some(value.as_bytes()), b"")?.expect("signed");
    let request = Request { method: "PUT", path: b"/examplebucket/chunkObject.txt", query: b"", headers: &headers };
    verify(&auth, &request, SECRET, REGION, signed_at())
}

#[test]
fn chunked_example_seed_step_by_step() {
    let headers = chunked_headers(false);
    let signed = SignedHeaders::parse(CHUNKED_SIGNED_HEADERS.into()).expect("signed headers");
    let canonical = canonical_request(&CanonicalRequest {
        method: "PUT",
        path: b"/examplebucket/chunkObject.txt",
        query: b"",
        headers: &headers,
        signed_headers: &signed,
        payload_hash: "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        form: AuthForm::Header,
    })
    .expect("canonical");
    assert_eq!(
        String::from_utf8_lossy(&canonical),
        "PUT\n/examplebucket/chunkObject.txt\n\ncontent-encoding:aws-chunked\ncontent-length:66824\n\
         host:s3.amazonaws.com\nx-amz-content-sha256:STREAMING-AWS4-HMAC-SHA256-PAYLOAD\n\
         x-amz-date:20130524T000000Z\nx-amz-decoded-content-length:66560\n\
         x-amz-storage-class:REDUCED_REDUNDANCY\n\n\
         content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;\
         x-amz-storage-class\nSTREAMING-AWS4-HMAC-SHA256-PAYLOAD"
    );
    assert_eq!(sha256_hex(&canonical), "cee3fed04b70f867d036f722359b0b1f2f0e5dc0efadbc082b76c4c60e316455");
    assert_eq!(to_hex(&signature(&key(), &string_to_sign(AMZ_DATE, SCOPE, &canonical))), CHUNKED_SEED);
    // The first chunk's string to sign, as the documentation prints it.
    assert_eq!(sha256_hex(&chunk_data()[0]), "bf718b6f653bebc184e1479f1935b8da974d701b893afcf49e701f3e2f9f9c5a");
    let first = format!(
        "AWS4-HMAC-SHA256-PAYLOAD\n{AMZ_DATE}\n{SCOPE}\n{CHUNKED_SEED}\n{EMPTY_SHA256_HEX}\n\
         bf718b6f653bebc184e1479f1935b8da974d701b893afcf49e701f3e2f9f9c5a"
    );
    assert_eq!(to_hex(&signature(&key(), &first)), CHUNK_SIGNATURES[0]);
}

#[test]
fn chunked_example_verifies_chunk_by_chunk() {
    let verified = verify_chunked(false, CHUNKED_SEED).expect("seed verifies");
    assert_eq!(verified.payload, PayloadHash::StreamingSigned);
    let mut signer = verified.chunk_signer.expect("signed chunks");
    for (data, sig) in chunk_data().iter().zip(CHUNK_SIGNATURES) {
        assert!(!signer.is_complete());
        signer.verify_chunk(data, sig.as_bytes()).expect(sig);
    }
    assert!(signer.is_complete());
    assert_eq!(to_hex(&signer.previous_signature()), CHUNK_SIGNATURES[2]);
}

#[test]
fn chunked_example_verifies_when_streamed_in_pieces() {
    // The node feeds a chunk as it arrives from the socket; any split gives the same result.
    for piece_len in [1, 7, 1000, 4096, 65_535, 65_536, 100_000] {
        let mut signer = verify_chunked(false, CHUNKED_SEED).expect("seed").chunk_signer.expect("signer");
        for (data, sig) in chunk_data().iter().zip(CHUNK_SIGNATURES) {
            for piece in data.chunks(piece_len) {
                signer.update(piece);
            }
            signer.finish_chunk(sig.as_bytes()).expect(sig);
        }
        assert!(signer.is_complete(), "piece_len {piece_len}");
    }
}

#[test]
fn chunked_example_refusals() {
    let data = chunk_data();
    // Out of sequence: the second chunk's signature on the first chunk.
    let mut signer = verify_chunked(false, CHUNKED_SEED).expect("seed").chunk_signer.expect("signer");
    assert_eq!(
        signer.verify_chunk(&data[0], CHUNK_SIGNATURES[1].as_bytes()),
        Err(SigV4Error::ChunkSignatureDoesNotMatch)
    );
    // A failed signer stays failed, even for the right signature.
    assert_eq!(signer.verify_chunk(&data[0], CHUNK_SIGNATURES[0].as_bytes()), Err(SigV4Error::ChunkOutOfSequence));

    // Chunks swapped: the 1 KiB chunk with the first chunk's signature.
    let mut signer = verify_chunked(false, CHUNKED_SEED).expect("seed").chunk_signer.expect("signer");
    assert!(signer.verify_chunk(&data[1], CHUNK_SIGNATURES[0].as_bytes()).is_err());

    // One byte changed.
    let mut signer = verify_chunked(false, CHUNKED_SEED).expect("seed").chunk_signer.expect("signer");
    let mut tampered = data[0].clone();
    tampered[100] = b'b';
    assert_eq!(
        signer.verify_chunk(&tampered, CHUNK_SIGNATURES[0].as_bytes()),
        Err(SigV4Error::ChunkSignatureDoesNotMatch)
    );

    // A chunk skipped: the final chunk right after the first.
    let mut signer = verify_chunked(false, CHUNKED_SEED).expect("seed").chunk_signer.expect("signer");
    signer.verify_chunk(&data[0], CHUNK_SIGNATURES[0].as_bytes()).expect("first");
    assert!(signer.verify_chunk(&data[2], CHUNK_SIGNATURES[2].as_bytes()).is_err());

    // Data after the final chunk.
    let mut signer = verify_chunked(false, CHUNKED_SEED).expect("seed").chunk_signer.expect("signer");
    for (d, sig) in data.iter().zip(CHUNK_SIGNATURES) {
        signer.verify_chunk(d, sig.as_bytes()).expect(sig);
    }
    assert_eq!(signer.verify_chunk(b"more", CHUNK_SIGNATURES[0].as_bytes()), Err(SigV4Error::ChunkOutOfSequence));
    assert!(!signer.is_complete());

    // Not hex.
    let mut signer = verify_chunked(false, CHUNKED_SEED).expect("seed").chunk_signer.expect("signer");
    assert_eq!(signer.verify_chunk(&data[0], b"zz"), Err(SigV4Error::ChunkSignatureDoesNotMatch));

    // The seed itself: one hex digit flipped.
    let mut seed = CHUNKED_SEED.to_owned();
    seed.replace_range(..1, "5");
    assert_eq!(verify_chunked(false, &seed).unwrap_err(), SigV4Error::SignatureDoesNotMatch);
}

#[test]
fn trailer_example_verifies() {
    let verified = verify_chunked(true, TRAILER_SEED).expect("seed verifies");
    assert_eq!(verified.payload, PayloadHash::StreamingSignedTrailer);
    let mut signer = verified.chunk_signer.expect("signed chunks");
    for (data, sig) in chunk_data().iter().zip(TRAILER_CHUNK_SIGNATURES) {
        signer.verify_chunk(data, sig.as_bytes()).expect(sig);
    }
    assert!(signer.is_final_chunk_seen());
    assert!(!signer.is_complete(), "the trailer is still owed");
    // The trailer as received, its signature field included (skipped when hashing).
    let trailers = [("x-amz-checksum-crc32c", "sOO8/Q=="), ("x-amz-trailer-signature", TRAILER_SIGNATURE)];
    signer.verify_trailer(&trailers, TRAILER_SIGNATURE.as_bytes()).expect("trailer");
    assert!(signer.is_complete());
}

#[test]
fn trailer_example_refusals() {
    let run_to_trailer = || -> ChunkSigner {
        let mut signer = verify_chunked(true, TRAILER_SEED).expect("seed").chunk_signer.expect("signer");
        for (data, sig) in chunk_data().iter().zip(TRAILER_CHUNK_SIGNATURES) {
            signer.verify_chunk(data, sig.as_bytes()).expect(sig);
        }
        signer
    };
    // Another checksum value.
    let mut signer = run_to_trailer();
    let err = signer.verify_trailer(&[("x-amz-checksum-crc32c", "sOO8/A==")], TRAILER_SIGNATURE.as_bytes());
    assert_eq!(err, Err(SigV4Error::ChunkSignatureDoesNotMatch));
    assert!(!signer.is_complete());
    // The trailer again after it verified.
    let mut signer = run_to_trailer();
    let trailers = [("x-amz-checksum-crc32c", "sOO8/Q==")];
    signer.verify_trailer(&trailers, TRAILER_SIGNATURE.as_bytes()).expect("trailer");
    assert_eq!(signer.verify_trailer(&trailers, TRAILER_SIGNATURE.as_bytes()), Err(SigV4Error::ChunkOutOfSequence));
    // A trailer before the final chunk.
    let mut signer = verify_chunked(true, TRAILER_SEED).expect("seed").chunk_signer.expect("signer");
    assert_eq!(signer.verify_trailer(&trailers, TRAILER_SIGNATURE.as_bytes()), Err(SigV4Error::ChunkOutOfSequence));
}

// --- Refusals around the header examples -----------------------------------------------------

#[test]
fn flipped_signature_digit_is_refused() {
    for example in HEADER_EXAMPLES {
        for at in [0, 31, 63] {
            let mut flipped = example.signature.to_owned();
            let digit = if &flipped[at..=at] == "0" { "1" } else { "0" };
            flipped.replace_range(at..=at, digit);
            let err = example.verify_at(&flipped, SECRET, signed_at()).unwrap_err();
            assert_eq!(err, SigV4Error::SignatureDoesNotMatch);
            assert_eq!((err.s3_code(), err.http_status()), ("SignatureDoesNotMatch", 403));
        }
    }
}

#[test]
fn wrong_secret_is_refused() {
    let err = GET_OBJECT.verify_at(GET_OBJECT.signature, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEz", signed_at());
    assert_eq!(err.unwrap_err(), SigV4Error::SignatureDoesNotMatch);
}

#[test]
fn clock_skew_of_14_minutes_passes_and_16_is_refused() {
    for minutes in [14, 15] {
        let skew = Duration::from_secs(minutes * 60);
        assert!(GET_OBJECT.verify_at(GET_OBJECT.signature, SECRET, signed_at() + skew).is_ok());
        assert!(GET_OBJECT.verify_at(GET_OBJECT.signature, SECRET, signed_at() - skew).is_ok());
    }
    let skew = Duration::from_secs(16 * 60);
    for now in [signed_at() + skew, signed_at() - skew] {
        let err = GET_OBJECT.verify_at(GET_OBJECT.signature, SECRET, now).unwrap_err();
        assert_eq!(err, SigV4Error::RequestTimeTooSkewed);
        assert_eq!((err.s3_code(), err.http_status()), ("RequestTimeTooSkewed", 403));
    }
}

#[test]
fn wrong_region_is_authorization_header_malformed() {
    let value = authorization(GET_OBJECT.signed_headers, GET_OBJECT.signature);
    let headers = GET_OBJECT.request_headers(&value);
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let auth = parse_auth(Some(value.as_bytes()), b"").expect("parses").expect("signed");
    let request = Request { method: "GET", path: b"/test.txt", query: b"", headers: &headers };
    let err = verify(&auth, &request, SECRET, "eu-west-1", signed_at()).unwrap_err();
    assert_eq!(err, SigV4Error::HeaderMalformed(Malformed::WrongRegion));
    assert_eq!((err.s3_code(), err.http_status()), ("AuthorizationHeaderMalformed", 400));
}

/// An edit of the request's header list, for the tampering cases.
type HeaderEdit<'a> = &'a dyn Fn(&mut Vec<(String, String)>);

#[test]
fn tampered_request_parts_are_refused() {
    let value = authorization(GET_OBJECT.signed_headers, GET_OBJECT.signature);
    let base: Vec<(String, String)> = GET_OBJECT.request_headers(&value);
    let run = |method: &str, path: &[u8], query: &[u8], edit: HeaderEdit<'_>| {
        let mut headers = base.clone();
        edit(&mut headers);
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let auth = parse_auth(Some(value.as_bytes()), query).expect("parses").expect("signed");
        verify(&auth, &Request { method, path, query, headers: &headers }, SECRET, REGION, signed_at())
    };
    assert!(run("GET", b"/test.txt", b"", &|_| {}).is_ok());
    // Same path, other spellings: the canonical form is the same, so they verify.
    assert!(run("GET", b"/test%2Etxt", b"", &|_| {}).is_ok());
    assert!(run("GET", b"/%74est.txt", b"", &|_| {}).is_ok());
    // Header names in any case, values with extra whitespace.
    assert!(run("GET", b"/test.txt", b"", &|h| h[1] = ("RANGE".into(), "  bytes=0-9 ".into())).is_ok());
    let refused = SigV4Error::SignatureDoesNotMatch;
    assert_eq!(run("HEAD", b"/test.txt", b"", &|_| {}).unwrap_err(), refused);
    assert_eq!(run("GET", b"/test.txt2", b"", &|_| {}).unwrap_err(), refused);
    assert_eq!(run("GET", b"/Test.txt", b"", &|_| {}).unwrap_err(), refused);
    assert_eq!(run("GET", b"/test.txt", b"x=1", &|_| {}).unwrap_err(), refused);
    assert_eq!(run("GET", b"/test.txt", b"", &|h| h[1].1 = "bytes=0-99".into()).unwrap_err(), refused);
    assert_eq!(
        run("GET", b"/test.txt", b"", &|h| h.push(("Range".into(), "bytes=10-19".into()))).unwrap_err(),
        refused
    );
    assert_eq!(
        run("GET", b"/test.txt", b"", &|h| h[0].1 = "otherbucket.s3.amazonaws.com".into()).unwrap_err(),
        refused
    );
    // A signed header left out.
    assert_eq!(run("GET", b"/test.txt", b"", &|h| drop(h.remove(1))).unwrap_err(), refused);
    // Unsigned headers may be added, unless they are x-amz-*.
    assert!(run("GET", b"/test.txt", b"", &|h| h.push(("User-Agent".into(), "curl".into()))).is_ok());
    assert_eq!(
        run("GET", b"/test.txt", b"", &|h| h.push(("x-amz-meta-color".into(), "red".into()))).unwrap_err(),
        SigV4Error::HeadersNotSigned
    );
    // The time source and the payload hash.
    assert_eq!(run("GET", b"/test.txt", b"", &|h| drop(h.remove(3))).unwrap_err(), SigV4Error::MissingDate);
    assert_eq!(
        run("GET", b"/test.txt", b"", &|h| h[3].1 = "20130524T000001Z".into()).unwrap_err(),
        SigV4Error::SignatureDoesNotMatch
    );
    assert_eq!(
        run("GET", b"/test.txt", b"", &|h| h[3].1 = "20130525T000000Z".into()).unwrap_err(),
        SigV4Error::HeaderMalformed(Malformed::DateMismatch)
    );
    assert_eq!(run("GET", b"/test.txt", b"", &|h| drop(h.remove(2))).unwrap_err(), SigV4Error::MissingContentSha256);
    assert_eq!(
        run("GET", b"/test.txt", b"", &|h| h[2].1 = "UNSIGNED-PAYLOAD".into()).unwrap_err(),
        SigV4Error::SignatureDoesNotMatch
    );
    assert_eq!(
        run("GET", b"/test.txt", b"", &|h| h[2].1 = "not-a-hash".into()).unwrap_err(),
        SigV4Error::InvalidContentSha256
    );
    // Bad percent-encoding in the path.
    assert_eq!(run("GET", b"/test%zz", b"", &|_| {}).unwrap_err(), SigV4Error::InvalidUriEncoding);
}

#[test]
fn malformed_authorization_values() {
    let sig = GET_OBJECT.signature;
    let cred = format!("Credential={ACCESS_KEY}/{SCOPE}");
    let sh = "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date";
    let header = SigV4Error::HeaderMalformed;
    let cases: Vec<(String, SigV4Error)> = vec![
        (format!("AWS4-HMAC-SHA256 {sh}, Signature={sig}"), header(Malformed::MissingCredential)),
        (format!("AWS4-HMAC-SHA256 {cred}, Signature={sig}"), header(Malformed::MissingSignedHeaders)),
        (format!("AWS4-HMAC-SHA256 {cred}, {sh}"), header(Malformed::MissingSignature)),
        ("AWS4-HMAC-SHA256".to_owned(), header(Malformed::MissingCredential)),
        ("AWS4-HMAC-SHA256   ".to_owned(), header(Malformed::MissingCredential)),
        (format!("AWS4-HMAC-SHA256 {cred}, {cred}, {sh}, Signature={sig}"), header(Malformed::Duplicate)),
        (format!("AWS4-HMAC-SHA256 {cred}, {sh}, Signature={sig}, Signature={sig}"), header(Malformed::Duplicate)),
        (format!("AWS4-HMAC-SHA256 {cred}, {sh}, Signature={sig}, Extra=1"), header(Malformed::UnknownComponent)),
        (format!("AWS4-HMAC-SHA256 {cred}, {sh}, signature={sig}"), header(Malformed::UnknownComponent)),
        (format!("AWS4-HMAC-SHA256 {cred}, {sh}, Signature={sig},"), header(Malformed::BadSyntax)),
        (format!("AWS4-HMAC-SHA256 {cred},, {sh}, Signature={sig}"), header(Malformed::BadSyntax)),
        // ';' instead of ',': one long Credential component, so the others are missing.
        (format!("AWS4-HMAC-SHA256 {cred}; {sh}; Signature={sig}"), header(Malformed::MissingSignedHeaders)),
        (format!("AWS4-HMAC-SHA256 {cred} x, {sh}, Signature={sig}"), header(Malformed::BadCredential)),
        (format!("AWS4-HMAC-SHA256 {cred}, {sh}, Signature={}", &sig[1..]), header(Malformed::BadSignature)),
        (format!("AWS4-HMAC-SHA256 {cred}, {sh}, Signature={}g", &sig[1..]), header(Malformed::BadSignature)),
        (format!("AWS4-HMAC-SHA256 {cred}, {sh}, Signature={sig}0"), header(Malformed::BadSignature)),
        (format!("AWS4-HMAC-SHA256 {cred}, {sh}, Signature="), header(Malformed::BadSignature)),
        (
            format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=range;x-amz-date, Signature={sig}"),
            header(Malformed::SignedHeadersWithoutHost),
        ),
        (
            format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=range;host, Signature={sig}"),
            header(Malformed::BadSignedHeaders),
        ),
        (
            format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=host;Range, Signature={sig}"),
            header(Malformed::BadSignedHeaders),
        ),
        (
            format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=host;host, Signature={sig}"),
            header(Malformed::BadSignedHeaders),
        ),
        (
            format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=host;;range, Signature={sig}"),
            header(Malformed::BadSignedHeaders),
        ),
        (format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=, Signature={sig}"), header(Malformed::BadSignedHeaders)),
        (
            format!("AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/20130524/us-east-1/s3, {sh}, Signature={sig}"),
            header(Malformed::BadCredential),
        ),
        (
            format!("AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{SCOPE}/x, {sh}, Signature={sig}"),
            header(Malformed::BadCredential),
        ),
        (format!("AWS4-HMAC-SHA256 Credential=/{SCOPE}, {sh}, Signature={sig}"), header(Malformed::BadCredential)),
        (
            format!("AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/20130524//s3/aws4_request, {sh}, Signature={sig}"),
            header(Malformed::BadCredential),
        ),
        (
            format!(
                "AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/2013052/us-east-1/s3/aws4_request, {sh}, Signature={sig}"
            ),
            header(Malformed::BadCredentialDate),
        ),
        (
            format!(
                "AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/20130524/us-east-1/ec2/aws4_request, {sh}, Signature={sig}"
            ),
            header(Malformed::WrongService),
        ),
        (
            format!(
                "AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/20130524/us-east-1/s3/aws4_requests, {sh}, Signature={sig}"
            ),
            header(Malformed::WrongTerminator),
        ),
        (format!("AWS {ACCESS_KEY}:frJIUN8DYpKDtOLCwo//yllqDzg="), SigV4Error::UnsupportedAuthorizationType),
        (format!("AWS4-HMAC-SHA512 {cred}, {sh}, Signature={sig}"), SigV4Error::UnsupportedAuthorizationType),
        (format!("AWS4-ECDSA-P256-SHA256 {cred}, {sh}, Signature={sig}"), SigV4Error::UnsupportedAuthorizationType),
        (format!("aws4-hmac-sha256 {cred}, {sh}, Signature={sig}"), SigV4Error::UnsupportedAuthorizationType),
        ("Bearer abc".to_owned(), SigV4Error::UnsupportedAuthorizationType),
        (String::new(), SigV4Error::UnsupportedAuthorizationType),
    ];
    for (value, expected) in cases {
        assert_eq!(parse_authorization(value.as_bytes()).unwrap_err(), expected, "{value}");
    }
    assert_eq!(SigV4Error::UnsupportedAuthorizationType.s3_code(), "InvalidArgument");
}

#[test]
fn authorization_spacing_and_order_are_tolerated() {
    let sig = GET_OBJECT.signature;
    let cred = format!("Credential={ACCESS_KEY}/{SCOPE}");
    let sh = "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date";
    for value in [
        format!("AWS4-HMAC-SHA256 {cred},{sh},Signature={sig}"),
        format!("AWS4-HMAC-SHA256 {cred}, {sh}, Signature={sig}"),
        format!("AWS4-HMAC-SHA256   {cred} ,   {sh},Signature={sig}  "),
        format!("AWS4-HMAC-SHA256 Signature={sig}, {cred}, {sh}"),
    ] {
        let parsed = parse_authorization(value.as_bytes()).unwrap_or_else(|e| panic!("{value}: {e}"));
        assert_eq!(parsed.credential.access_key(), ACCESS_KEY);
        assert_eq!(parsed.credential.scope(), SCOPE);
        assert_eq!(parsed.credential.region(), REGION);
        assert_eq!(to_hex(&parsed.signature), sig);
    }
}

#[test]
fn both_auth_forms_at_once_are_refused() {
    let value = authorization(GET_OBJECT.signed_headers, GET_OBJECT.signature);
    let query = presigned_query(PRESIGNED_SIGNATURE);
    let err = parse_auth(Some(value.as_bytes()), query.as_bytes()).unwrap_err();
    assert_eq!(err, SigV4Error::MultipleAuthMechanisms);
    assert_eq!(err.s3_code(), "InvalidArgument");
    assert!(matches!(parse_auth(None, b"prefix=a&max-keys=2"), Ok(None)));
    assert!(matches!(parse_auth(Some(value.as_bytes()), b"x=1"), Ok(Some(Auth::Header(_)))));
}
