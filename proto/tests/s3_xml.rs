//! The S3 XML bodies against what S3 and its clients actually exchange.
//!
//! - Golden documents: the response examples of the AWS S3 API reference, written by
//!   `to_xml` byte for byte (after `aws_example_to_wire` strips the examples' indentation and
//!   picks one of the equivalent lexical forms they mix), and read back by `from_xml`.
//! - Request bodies as boto3, the AWS CLI and the Java/Go SDKs send them: with and without
//!   `xmlns`, with and without a declaration, quotes raw or escaped, checksums or not.
//! - Malformed and oversized bodies: each refused with a precise error, none panics.
//! - Round trips of every type through hostile strings, and the `encoding-type=url` form.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edgemirror_proto::s3::xml::*;

fn at(secs: u64, millis: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
}

/// The wire form of an AWS documentation example as `to_xml` writes it: indentation between
/// elements removed, `<X></X>` written `<X/>`, and `"` in text written `&quot;` (S3 itself
/// writes `&quot;`; the newer examples show a raw `"`, the older ones `&quot;`: the same text).
fn aws_example_to_wire(doc: &str) -> String {
    let mut out = String::new();
    let mut rest = doc.trim();
    while let Some(lt) = rest.find('<') {
        let text = &rest[..lt];
        if !text.trim().is_empty() {
            out.push_str(&text.replace('"', "&quot;"));
        }
        let gt = rest[lt..].find('>').expect("example is well-formed") + lt;
        out.push_str(&rest[lt..=gt]);
        rest = &rest[gt + 1..];
    }
    // <X></X> -> <X/>
    let mut folded = String::new();
    let mut s = out.as_str();
    while let Some(i) = s.find("></") {
        let open_start = s[..i].rfind('<').expect("tag start");
        let name = &s[open_start + 1..i];
        let close = format!("</{name}>");
        if !name.starts_with('/') && !name.contains(' ') && s[i + 1..].starts_with(&close) {
            folded.push_str(&s[..i]);
            folded.push_str("/>");
            s = &s[i + 1 + close.len()..];
        } else {
            folded.push_str(&s[..i + 1]);
            s = &s[i + 1..];
        }
    }
    folded.push_str(s);
    folded
}

/// Checks both directions against an AWS example: `to_xml(value)` is the example's wire form,
/// and the example as printed (indented, either quote form) parses to `value`.
fn golden<T>(value: &T, aws_example: &str)
where
    T: XmlDocument + serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    assert_eq!(to_xml(value), aws_example_to_wire(aws_example));
    assert_eq!(&from_xml::<T>(aws_example.as_bytes()).expect("the AWS example parses"), value);
    assert_eq!(&from_xml::<T>(to_xml(value).as_bytes()).expect("our output parses"), value);
}

#[test]
fn example_to_wire_helper() {
    assert_eq!(
        aws_example_to_wire(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<A x=\"1\">\n  <B></B>\n  <C>\"q\" r</C>\n</A>\n"
        ),
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><A x=\"1\"><B/><C>&quot;q&quot; r</C></A>"
    );
}

fn object(key: &str, last_modified: SystemTime, etag: &str, size: u64, storage_class: &str) -> ListedObject {
    ListedObject {
        key: key.into(),
        last_modified,
        etag: etag.into(),
        size,
        storage_class: storage_class.into(),
        owner: None,
    }
}

// ---------------------------------------------------------------------------------------------
// ListObjectsV2: the four examples of the API reference
// ---------------------------------------------------------------------------------------------

#[test]
fn list_objects_v2_example_listing_keys() {
    let value = ListObjectsV2Result {
        name: "bucket".into(),
        key_count: 205,
        max_keys: 1000,
        contents: vec![object(
            "my-image.jpg",
            at(1_255_369_830, 0),
            "\"fba9dede5f27731c9771645a39863328\"",
            434_234,
            "STANDARD",
        )],
        ..Default::default()
    };
    golden(
        &value,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
    <Name>bucket</Name>
    <Prefix/>
    <KeyCount>205</KeyCount>
    <MaxKeys>1000</MaxKeys>
    <IsTruncated>false</IsTruncated>
    <Contents>
        <Key>my-image.jpg</Key>
        <LastModified>2009-10-12T17:50:30.000Z</LastModified>
        <ETag>"fba9dede5f27731c9771645a39863328"</ETag>
        <Size>434234</Size>
        <StorageClass>STANDARD</StorageClass>
    </Contents>
</ListBucketResult>"#,
    );
}

#[test]
fn list_objects_v2_example_start_after() {
    let value = ListObjectsV2Result {
        name: "quotes".into(),
        prefix: "E".into(),
        start_after: Some("ExampleGuide.pdf".into()),
        key_count: 1,
        max_keys: 3,
        contents: vec![object(
            "ExampleObject.txt",
            at(1_379_441_273, 0),
            "\"599bab3ed2c697f1d26842727561fd94\"",
            857,
            "REDUCED_REDUNDANCY",
        )],
        ..Default::default()
    };
    golden(
        &value,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
    <Name>quotes</Name>
    <Prefix>E</Prefix>
    <StartAfter>ExampleGuide.pdf</StartAfter>
    <KeyCount>1</KeyCount>
    <MaxKeys>3</MaxKeys>
    <IsTruncated>false</IsTruncated>
    <Contents>
        <Key>ExampleObject.txt</Key>
        <LastModified>2013-09-17T18:07:53.000Z</LastModified>
        <ETag>&quot;599bab3ed2c697f1d26842727561fd94&quot;</ETag>
        <Size>857</Size>
        <StorageClass>REDUCED_REDUNDANCY</StorageClass>
    </Contents>
</ListBucketResult>"#,
    );
}

#[test]
fn list_objects_v2_example_prefix_and_delimiter() {
    let value = ListObjectsV2Result {
        name: "example-bucket".into(),
        prefix: "photos/2006/".into(),
        key_count: 3,
        max_keys: 1000,
        delimiter: Some("/".into()),
        contents: vec![object(
            "photos/2006/",
            at(1_462_060_289, 0),
            "\"d41d8cd98f00b204e9800998ecf8427e\"",
            0,
            "STANDARD",
        )],
        common_prefixes: vec![
            CommonPrefix { prefix: "photos/2006/February/".into() },
            CommonPrefix { prefix: "photos/2006/January/".into() },
        ],
        ..Default::default()
    };
    golden(
        &value,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>example-bucket</Name>
  <Prefix>photos/2006/</Prefix>
  <KeyCount>3</KeyCount>
  <MaxKeys>1000</MaxKeys>
  <Delimiter>/</Delimiter>
  <IsTruncated>false</IsTruncated>
  <Contents>
    <Key>photos/2006/</Key>
    <LastModified>2016-04-30T23:51:29.000Z</LastModified>
    <ETag>&quot;d41d8cd98f00b204e9800998ecf8427e&quot;</ETag>
    <Size>0</Size>
    <StorageClass>STANDARD</StorageClass>
  </Contents>

  <CommonPrefixes>
    <Prefix>photos/2006/February/</Prefix>
  </CommonPrefixes>
  <CommonPrefixes>
    <Prefix>photos/2006/January/</Prefix>
  </CommonPrefixes>
</ListBucketResult>"#,
    );
}

#[test]
fn list_objects_v2_example_continuation_token() {
    let value = ListObjectsV2Result {
        name: "bucket".into(),
        next_continuation_token: Some("1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=".into()),
        key_count: 1000,
        max_keys: 1000,
        is_truncated: true,
        contents: vec![object(
            "happyface.jpg",
            at(1_416_598_805, 0),
            "\"70ee1738b6b21e2c8a43f3a5ab0eee71\"",
            11,
            "STANDARD",
        )],
        ..Default::default()
    };
    golden(
        &value,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>bucket</Name>
  <Prefix></Prefix>
  <NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>
  <KeyCount>1000</KeyCount>
  <MaxKeys>1000</MaxKeys>
  <IsTruncated>true</IsTruncated>
  <Contents>
    <Key>happyface.jpg</Key>
    <LastModified>2014-11-21T19:40:05.000Z</LastModified>
    <ETag>&quot;70ee1738b6b21e2c8a43f3a5ab0eee71&quot;</ETag>
    <Size>11</Size>
    <StorageClass>STANDARD</StorageClass>
  </Contents>
</ListBucketResult>"#,
    );

    // The follow-up page echoes the token it was given.
    let value = ListObjectsV2Result {
        name: "bucket".into(),
        continuation_token: Some("1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=".into()),
        key_count: 112,
        max_keys: 1000,
        contents: vec![object(
            "happyfacex.jpg",
            at(1_416_598_805, 0),
            "\"70ee1738b6b21e2c8a43f3a5ab0eee71\"",
            1111,
            "STANDARD",
        )],
        ..Default::default()
    };
    golden(
        &value,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>bucket</Name>
  <Prefix></Prefix>
  <ContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</ContinuationToken>
  <KeyCount>112</KeyCount>
  <MaxKeys>1000</MaxKeys>
  <IsTruncated>false</IsTruncated>
  <Contents>
    <Key>happyfacex.jpg</Key>
    <LastModified>2014-11-21T19:40:05.000Z</LastModified>
    <ETag>"70ee1738b6b21e2c8a43f3a5ab0eee71"</ETag>
    <Size>1111</Size>
    <StorageClass>STANDARD</StorageClass>
  </Contents>
</ListBucketResult>"#,
    );
}

#[test]
fn list_objects_v2_with_owner_and_everything_optional() {
    let mut obj = object("k", at(1, 0), "\"e\"", 1, "STANDARD");
    obj.owner = Some(Owner { id: "75aa57f09aa0c8ca".into(), display_name: Some("webfile".into()) });
    let value = ListObjectsV2Result {
        name: "b".into(),
        prefix: "p".into(),
        start_after: Some("s".into()),
        continuation_token: Some("c".into()),
        next_continuation_token: Some("n".into()),
        key_count: 1,
        max_keys: 1,
        delimiter: Some("/".into()),
        encoding_type: Some("url".into()),
        is_truncated: true,
        contents: vec![obj],
        common_prefixes: vec![],
    };
    let xml = to_xml(&value);
    assert_eq!(
        xml,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
<Name>b</Name><Prefix>p</Prefix><StartAfter>s</StartAfter><ContinuationToken>c</ContinuationToken>\
<NextContinuationToken>n</NextContinuationToken><KeyCount>1</KeyCount><MaxKeys>1</MaxKeys>\
<Delimiter>/</Delimiter><EncodingType>url</EncodingType><IsTruncated>true</IsTruncated>\
<Contents><Key>k</Key><LastModified>1970-01-01T00:00:01.000Z</LastModified><ETag>&quot;e&quot;</ETag>\
<Size>1</Size><StorageClass>STANDARD</StorageClass><Owner><ID>75aa57f09aa0c8ca</ID>\
<DisplayName>webfile</DisplayName></Owner></Contents></ListBucketResult>"
    );
    assert_eq!(from_xml::<ListObjectsV2Result>(xml.as_bytes()), Ok(value));
}

#[test]
fn list_objects_v2_parses_what_s3_sends_today() {
    // Newer elements (checksums, RestoreStatus) are ignored, and Owner without DisplayName.
    let body = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix></Prefix>
<KeyCount>1</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated><Contents><Key>x</Key>
<LastModified>2024-11-05T10:00:00.000Z</LastModified><ETag>&quot;e&quot;</ETag>
<ChecksumAlgorithm>CRC64NVME</ChecksumAlgorithm><ChecksumType>FULL_OBJECT</ChecksumType><Size>3</Size>
<Owner><ID>abc</ID></Owner><StorageClass>STANDARD</StorageClass></Contents></ListBucketResult>"#;
    let got: ListObjectsV2Result = from_xml(body.as_bytes()).unwrap();
    assert_eq!(got.contents[0].owner, Some(Owner { id: "abc".into(), display_name: None }));
    assert_eq!(got.contents[0].size, 3);
}

// ---------------------------------------------------------------------------------------------
// ListObjects (V1)
// ---------------------------------------------------------------------------------------------

#[test]
fn list_objects_v1_example() {
    let owner = |id: &str| Some(Owner { id: id.into(), display_name: Some("webfile".into()) });
    let mut nelson = object("Nelson", at(1_136_116_800, 0), "\"828ef3fdfa96f00ad9f27c383fc9ac7f\"", 5, "STANDARD");
    nelson.owner = owner("bcaf161ca5fb16fd081034f");
    let mut neo = object("Neo", at(1_136_116_800, 0), "\"828ef3fdfa96f00ad9f27c383fc9ac7f\"", 4, "STANDARD");
    neo.owner = owner("bcaf1ffd86a5fb16fd081034f");
    let value = ListObjectsV1Result {
        name: "quotes".into(),
        prefix: "N".into(),
        marker: "Ned".into(),
        max_keys: 40,
        contents: vec![nelson, neo],
        ..Default::default()
    };
    golden(
        &value,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>quotes</Name>
  <Prefix>N</Prefix>
  <Marker>Ned</Marker>
  <MaxKeys>40</MaxKeys>
  <IsTruncated>false</IsTruncated>
  <Contents>
    <Key>Nelson</Key>
    <LastModified>2006-01-01T12:00:00.000Z</LastModified>
    <ETag>&quot;828ef3fdfa96f00ad9f27c383fc9ac7f&quot;</ETag>
    <Size>5</Size>
    <StorageClass>STANDARD</StorageClass>
    <Owner>
      <ID>bcaf161ca5fb16fd081034f</ID>
      <DisplayName>webfile</DisplayName>
     </Owner>
  </Contents>
  <Contents>
    <Key>Neo</Key>
    <LastModified>2006-01-01T12:00:00.000Z</LastModified>
    <ETag>&quot;828ef3fdfa96f00ad9f27c383fc9ac7f&quot;</ETag>
    <Size>4</Size>
    <StorageClass>STANDARD</StorageClass>
     <Owner>
      <ID>bcaf1ffd86a5fb16fd081034f</ID>
      <DisplayName>webfile</DisplayName>
    </Owner>
 </Contents>
</ListBucketResult>"#,
    );
}

#[test]
fn list_objects_v1_empty_marker_and_next_marker() {
    let value = ListObjectsV1Result {
        name: "b".into(),
        max_keys: 2,
        delimiter: Some("/".into()),
        next_marker: Some("photos/".into()),
        is_truncated: true,
        common_prefixes: vec![CommonPrefix { prefix: "a/".into() }, CommonPrefix { prefix: "photos/".into() }],
        ..Default::default()
    };
    assert_eq!(
        to_xml(&value),
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
<Name>b</Name><Prefix/><Marker/><NextMarker>photos/</NextMarker><MaxKeys>2</MaxKeys><Delimiter>/</Delimiter>\
<IsTruncated>true</IsTruncated><CommonPrefixes><Prefix>a/</Prefix></CommonPrefixes>\
<CommonPrefixes><Prefix>photos/</Prefix></CommonPrefixes></ListBucketResult>"
    );
    assert_eq!(from_xml::<ListObjectsV1Result>(to_xml(&value).as_bytes()), Ok(value));
}

// ---------------------------------------------------------------------------------------------
// encoding-type=url and keys XML cannot carry
// ---------------------------------------------------------------------------------------------

#[test]
fn encoding_type_url_listing() {
    let keys = ["a b.txt", "a+b.txt", "100%.csv", "한글/x.txt", "ctl\u{1}key", "run books/x.txt"];
    let mut v2 = ListObjectsV2Result {
        name: "b".into(),
        prefix: "p q".into(),
        start_after: Some("a&b".into()),
        continuation_token: Some("tok+/=".into()),
        delimiter: Some("/".into()),
        key_count: 7,
        max_keys: 1000,
        contents: keys.iter().map(|k| object(k, at(0, 0), "\"e\"", 0, "STANDARD")).collect(),
        common_prefixes: vec![CommonPrefix { prefix: "run books/".into() }],
        ..Default::default()
    };
    v2.encode_url();
    let got: Vec<&str> = v2.contents.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(got, ["a+b.txt", "a%2Bb.txt", "100%25.csv", "%ED%95%9C%EA%B8%80/x.txt", "ctl%01key", "run+books/x.txt"]);
    assert_eq!(v2.common_prefixes[0].prefix, "run+books/");
    assert_eq!(v2.prefix, "p+q");
    assert_eq!(v2.start_after.as_deref(), Some("a%26b"));
    assert_eq!(v2.delimiter.as_deref(), Some("/"));
    // Continuation tokens are opaque and not encoded.
    assert_eq!(v2.continuation_token.as_deref(), Some("tok+/="));
    assert_eq!(v2.encoding_type.as_deref(), Some("url"));
    let xml = to_xml(&v2);
    assert!(xml.contains("<Delimiter>/</Delimiter><EncodingType>url</EncodingType><IsTruncated>"), "{xml}");
    // With url encoding, no character reference is needed anywhere.
    assert!(!xml.contains("&#x"), "{xml}");

    let mut v1 = ListObjectsV1Result {
        name: "b".into(),
        prefix: "a b".into(),
        marker: "m n".into(),
        next_marker: Some("x y".into()),
        delimiter: Some(" ".into()),
        contents: vec![object("k l", at(0, 0), "\"e\"", 0, "STANDARD")],
        ..Default::default()
    };
    v1.encode_url();
    assert_eq!(
        (v1.prefix.as_str(), v1.marker.as_str(), v1.next_marker.as_deref(), v1.delimiter.as_deref()),
        ("a b", "m+n", Some("x+y"), Some("+")),
        "V1 leaves Prefix as the request gave it"
    );
    assert_eq!(v1.contents[0].key, "k+l");

    let mut uploads = ListMultipartUploadsResult {
        bucket: "b".into(),
        key_marker: "k m".into(),
        upload_id_marker: "u+1".into(),
        next_key_marker: Some("n k".into()),
        prefix: Some("p q".into()),
        uploads: vec![ListedUpload {
            key: "a b".into(),
            upload_id: "id+/".into(),
            initiator: None,
            owner: None,
            storage_class: "STANDARD".into(),
            initiated: at(0, 0),
        }],
        ..Default::default()
    };
    uploads.encode_url();
    assert_eq!(uploads.key_marker, "k+m");
    assert_eq!(uploads.upload_id_marker, "u+1", "upload ids are not keys");
    assert_eq!(uploads.next_key_marker.as_deref(), Some("n+k"));
    assert_eq!(uploads.prefix.as_deref(), Some("p+q"));
    assert_eq!(uploads.uploads[0].key, "a+b");
    assert_eq!(uploads.uploads[0].upload_id, "id+/");
}

#[test]
fn keys_with_markup_quotes_and_controls() {
    // Without encoding-type=url the key is escaped; what XML 1.0 cannot carry literally is a
    // character reference, as S3 writes it. Nothing is dropped or replaced.
    let key = "<a&b>\"c'd\te\nf\rg\u{1}h\u{1f}i\u{7f}j\u{fffe}k é 🎉 ";
    let value = ListObjectsV2Result {
        name: "b".into(),
        key_count: 1,
        max_keys: 1,
        contents: vec![object(key, at(0, 0), "\"e\"", 0, "STANDARD")],
        ..Default::default()
    };
    let xml = to_xml(&value);
    assert!(
        xml.contains("<Key>&lt;a&amp;b&gt;&quot;c&apos;d&#x9;e&#xA;f&#xD;g&#x1;h&#x1F;i\u{7f}j&#xFFFE;k é 🎉 </Key>"),
        "{xml}"
    );
    let back: ListObjectsV2Result = from_xml(xml.as_bytes()).unwrap();
    assert_eq!(back.contents[0].key, key);
}

// ---------------------------------------------------------------------------------------------
// ListBuckets, GetBucketLocation, CreateBucket
// ---------------------------------------------------------------------------------------------

#[test]
fn list_all_my_buckets_example() {
    let value = ListAllMyBucketsResult {
        owner: Owner { id: "bcaf1ffd86f461ca5fb16fd081034f".into(), display_name: Some("webfile".into()) },
        buckets: vec![
            ListedBucket { name: "quotes".into(), creation_date: at(1_138_985_109, 0) },
            ListedBucket { name: "samples".into(), creation_date: at(1_138_984_918, 0) },
        ],
        continuation_token: None,
    };
    golden(
        &value,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<ListAllMyBucketsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Owner>
    <ID>bcaf1ffd86f461ca5fb16fd081034f</ID>
    <DisplayName>webfile</DisplayName>
  </Owner>
  <Buckets>
    <Bucket>
      <Name>quotes</Name>
      <CreationDate>2006-02-03T16:45:09.000Z</CreationDate>
    </Bucket>
    <Bucket>
      <Name>samples</Name>
      <CreationDate>2006-02-03T16:41:58.000Z</CreationDate>
    </Bucket>
  </Buckets>
</ListAllMyBucketsResult>"#,
    );
    // No buckets: an empty <Buckets/>, which reads back as none.
    let empty = ListAllMyBucketsResult { owner: Owner { id: "o".into(), display_name: None }, ..Default::default() };
    assert_eq!(
        to_xml(&empty),
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListAllMyBucketsResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
<Owner><ID>o</ID></Owner><Buckets/></ListAllMyBucketsResult>"
    );
    assert_eq!(from_xml::<ListAllMyBucketsResult>(to_xml(&empty).as_bytes()), Ok(empty));
}

#[test]
fn location_constraint() {
    // us-east-1 is the empty element (the API reference's example), other regions the name.
    golden(
        &LocationConstraint::for_region("us-east-1"),
        r#"<?xml version="1.0" encoding="UTF-8"?>
<LocationConstraint xmlns="http://s3.amazonaws.com/doc/2006-03-01/"/>"#,
    );
    golden(
        &LocationConstraint::for_region("eu-west-1"),
        r#"<?xml version="1.0" encoding="UTF-8"?>
<LocationConstraint xmlns="http://s3.amazonaws.com/doc/2006-03-01/">eu-west-1</LocationConstraint>"#,
    );
}

#[test]
fn create_bucket_configuration_requests() {
    // boto3: create_bucket(Bucket=..., CreateBucketConfiguration={'LocationConstraint': 'eu-west-1'})
    let boto3 = b"<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
<LocationConstraint>eu-west-1</LocationConstraint></CreateBucketConfiguration>";
    assert_eq!(
        from_xml::<CreateBucketConfiguration>(boto3),
        Ok(CreateBucketConfiguration { location_constraint: Some("eu-west-1".into()) })
    );
    // The API reference's form, indented and with a declaration.
    let doc = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\n  <LocationConstraint>ap-northeast-1</LocationConstraint>\n</CreateBucketConfiguration>\n";
    assert_eq!(
        from_xml::<CreateBucketConfiguration>(doc).unwrap().location_constraint.as_deref(),
        Some("ap-northeast-1")
    );
    // Empty configuration, and newer elements we do not use.
    assert_eq!(
        from_xml::<CreateBucketConfiguration>(b"<CreateBucketConfiguration/>"),
        Ok(CreateBucketConfiguration { location_constraint: None })
    );
    let newer = b"<CreateBucketConfiguration><Location><Type>AvailabilityZone</Type></Location>\
<Bucket><Type>Directory</Type></Bucket></CreateBucketConfiguration>";
    assert_eq!(from_xml::<CreateBucketConfiguration>(newer), Ok(CreateBucketConfiguration::default()));
    // Its own, smaller size limit.
    let mut big = b"<CreateBucketConfiguration><LocationConstraint>".to_vec();
    big.resize(64 * 1024 + 1, b'a');
    assert_eq!(from_xml::<CreateBucketConfiguration>(&big), Err(XmlError::TooLarge { limit_bytes: 64 * 1024 }));
    let value = CreateBucketConfiguration { location_constraint: Some("eu-central-1".into()) };
    assert_eq!(from_xml::<CreateBucketConfiguration>(to_xml(&value).as_bytes()), Ok(value));
}

// ---------------------------------------------------------------------------------------------
// DeleteObjects
// ---------------------------------------------------------------------------------------------

fn keys(d: &Delete) -> Vec<&str> {
    d.objects.iter().map(|o| o.key.as_str()).collect()
}

#[test]
fn delete_request_as_boto3_sends_it() {
    // botocore's rest-xml serializer: ElementTree, declaration with single quotes, xmlns on
    // the root, shape order (Objects then Quiet), quotes in text left raw.
    let body = b"<?xml version='1.0' encoding='utf-8'?>\n<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
<Object><Key>photos/2006/a.jpg</Key></Object><Object><Key>b \"q\".txt</Key><VersionId>3/L4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY+MTRCxf3vjVBH40Nr8X8gdRQBpUMLUo</VersionId></Object>\
<Quiet>true</Quiet></Delete>";
    let d: Delete = from_xml(body).unwrap();
    assert!(d.quiet);
    assert_eq!(keys(&d), ["photos/2006/a.jpg", "b \"q\".txt"]);
    assert_eq!(d.objects[0].version_id, None);
    assert_eq!(
        d.objects[1].version_id.as_deref(),
        Some("3/L4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY+MTRCxf3vjVBH40Nr8X8gdRQBpUMLUo")
    );
}

#[test]
fn delete_request_other_clients() {
    // Java SDK v2: double-quoted declaration, escaped quotes, Quiet false.
    let java = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
<Object><Key>it&apos;s &quot;x&quot; &amp; y</Key></Object><Quiet>false</Quiet></Delete>";
    let d: Delete = from_xml(java).unwrap();
    assert_eq!((keys(&d), d.quiet), (vec!["it's \"x\" & y"], false));

    // No namespace, no declaration, no Quiet (mc, older tools): Quiet defaults to false.
    let plain = b"<Delete><Object><Key>a</Key></Object><Object><Key>b</Key></Object></Delete>";
    let d: Delete = from_xml(plain).unwrap();
    assert_eq!((keys(&d), d.quiet), (vec!["a", "b"], false));

    // The API reference's example: indented, Quiet before the objects.
    let doc = br#"<?xml version="1.0" encoding="UTF-8"?>
<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
    <Quiet>true</Quiet>
    <Object>
         <Key>sample1.txt</Key>
    </Object>
    <Object>
         <Key>sample2.txt</Key>
         <VersionId>OYcLXagmS.WaD..oyH4KRguB95_YhLs7</VersionId>
    </Object>
</Delete>"#;
    let d: Delete = from_xml(doc).unwrap();
    assert!(d.quiet);
    assert_eq!(keys(&d), ["sample1.txt", "sample2.txt"]);
    assert_eq!(d.objects[1].version_id.as_deref(), Some("OYcLXagmS.WaD..oyH4KRguB95_YhLs7"));

    // A prefixed namespace; Quiet as xs:boolean 1 with whitespace around it.
    let prefixed = b"<s3:Delete xmlns:s3=\"http://s3.amazonaws.com/doc/2006-03-01/\"><s3:Object><s3:Key>k</s3:Key>\
</s3:Object><s3:Quiet>\n 1 \n</s3:Quiet></s3:Delete>";
    let d: Delete = from_xml(prefixed).unwrap();
    assert_eq!((keys(&d), d.quiet), (vec!["k"], true));

    // A conditional delete's ETag is surfaced, not dropped.
    let cond = b"<Delete><Object><Key>k</Key><ETag>\"abc\"</ETag></Object></Delete>";
    assert_eq!(from_xml::<Delete>(cond).unwrap().objects[0].etag.as_deref(), Some("\"abc\""));
}

#[test]
fn delete_keys_keep_every_character() {
    // quick-xml's deserializer would trim these; from_xml must not.
    let cases: &[(&[u8], &str)] = &[
        (b"<Key> leading and trailing </Key>", " leading and trailing "),
        (b"<Key> </Key>", " "),
        (b"<Key>\n\tindented\n</Key>", "\n\tindented\n"),
        (b"<Key>a\r\nb</Key>", "a\nb"), // XML line-end normalisation, as S3's parser does
        (b"<Key>a&#13;b&#xD;</Key>", "a\rb\r"), // the documented way to send a CR
        (b"<Key><![CDATA[ <raw> & ]]></Key>", " <raw> & "),
        (b"<Key>a<!-- c -->b</Key>", "ab"),
        (b"<Key>&#x1F389;&#233;</Key>", "🎉é"),
        (b"<Key>&#x1;</Key>", "\u{1}"), // S3 refuses this; we let such keys be deleted
        (b"<Key>&lt;&gt;&amp;&quot;&apos;</Key>", "<>&\"'"),
    ];
    for (key_xml, key) in cases {
        let mut body = b"<Delete><Object>".to_vec();
        body.extend_from_slice(key_xml);
        body.extend_from_slice(b"</Object></Delete>");
        let d: Delete = from_xml(&body).unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(&body)));
        assert_eq!(keys(&d), [*key], "{}", String::from_utf8_lossy(&body));
        // And it round-trips through our own writer.
        assert_eq!(from_xml::<Delete>(to_xml(&d).as_bytes()).as_ref(), Ok(&d));
    }
}

#[test]
fn delete_object_count_limits() {
    let body = |n: usize| {
        let mut s = String::from("<Delete>");
        for i in 0..n {
            s.push_str(&format!("<Object><Key>k{i}</Key></Object>"));
        }
        s.push_str("<Quiet>true</Quiet></Delete>");
        s
    };
    assert_eq!(from_xml::<Delete>(body(MAX_DELETE_OBJECTS).as_bytes()).map(|d| d.objects.len()), Ok(1000));
    assert_eq!(
        from_xml::<Delete>(body(MAX_DELETE_OBJECTS + 1).as_bytes()),
        Err(XmlError::TooManyItems { element: "Object", limit: 1000 })
    );
    assert_eq!(from_xml::<Delete>(body(0).as_bytes()), Err(XmlError::MissingItems { element: "Object" }));
    assert_eq!(from_xml::<Delete>(b"<Delete/>"), Err(XmlError::MissingItems { element: "Object" }));
    // Both are MalformedXML to the client.
    assert_eq!(XmlError::TooManyItems { element: "Object", limit: 1000 }.s3_code(), "MalformedXML");
}

#[test]
fn delete_result_example() {
    let value = DeleteResult {
        deleted: vec![DeletedObject { key: "sample1.txt".into(), ..Default::default() }],
        errors: vec![DeleteError {
            key: "sample2.txt".into(),
            version_id: None,
            code: "AccessDenied".into(),
            message: "Access Denied".into(),
        }],
    };
    golden(
        &value,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Deleted>
    <Key>sample1.txt</Key>
  </Deleted>
  <Error>
    <Key>sample2.txt</Key>
    <Code>AccessDenied</Code>
    <Message>Access Denied</Message>
  </Error>
</DeleteResult>"#,
    );
    // Versioned: a delete marker was created.
    let value = DeleteResult {
        deleted: vec![DeletedObject {
            key: "SampleDocument.txt".into(),
            version_id: None,
            delete_marker: Some(true),
            delete_marker_version_id: Some("NeQt5xeFTfgPJD8B4CGWnkSLtluMr11s".into()),
        }],
        errors: vec![],
    };
    golden(
        &value,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Deleted>
    <Key>SampleDocument.txt</Key>
    <DeleteMarker>true</DeleteMarker>
    <DeleteMarkerVersionId>NeQt5xeFTfgPJD8B4CGWnkSLtluMr11s</DeleteMarkerVersionId>
  </Deleted>
</DeleteResult>"#,
    );
    // Quiet mode with no errors: an empty result.
    assert_eq!(
        to_xml(&DeleteResult::default()),
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><DeleteResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"/>"
    );
}

// ---------------------------------------------------------------------------------------------
// Multipart
// ---------------------------------------------------------------------------------------------

#[test]
fn initiate_multipart_upload_example() {
    golden(
        &InitiateMultipartUploadResult {
            bucket: "example-bucket".into(),
            key: "example-object".into(),
            upload_id: "VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA".into(),
        },
        r#"<?xml version="1.0" encoding="UTF-8"?>
<InitiateMultipartUploadResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>example-bucket</Bucket>
  <Key>example-object</Key>
  <UploadId>VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA</UploadId>
</InitiateMultipartUploadResult>"#,
    );
}

fn part(n: u32, etag: &str) -> CompletedPart {
    CompletedPart { part_number: n, etag: etag.into(), ..Default::default() }
}

#[test]
fn complete_multipart_upload_requests() {
    // The API reference's example.
    let doc = br#"<CompleteMultipartUpload>
  <Part>
    <PartNumber>1</PartNumber>
    <ETag>"a54357aff0632cce46d942af68356b38"</ETag>
  </Part>
  <Part>
    <PartNumber>2</PartNumber>
    <ETag>"0c78aef83f66abc1fa1e8477f296d394"</ETag>
  </Part>
  <Part>
    <PartNumber>3</PartNumber>
    <ETag>"acbd18db4cc2f85cedef654fccc4a4d8"</ETag>
  </Part>
</CompleteMultipartUpload>"#;
    let c: CompleteMultipartUpload = from_xml(doc).unwrap();
    assert_eq!(
        c.parts,
        [
            part(1, "\"a54357aff0632cce46d942af68356b38\""),
            part(2, "\"0c78aef83f66abc1fa1e8477f296d394\""),
            part(3, "\"acbd18db4cc2f85cedef654fccc4a4d8\""),
        ]
    );
    assert!(c.is_ascending());
    assert_eq!(c.parts[0].etag_unquoted(), "a54357aff0632cce46d942af68356b38");

    // boto3 (upload_file / complete_multipart_upload): shape order ETag, PartNumber, xmlns.
    let boto3 = b"<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
<Part><ETag>\"d8e8fca2dc0f896fd7cb4cb0031ba249\"</ETag><PartNumber>1</PartNumber></Part>\
<Part><ETag>\"ea2b2676c28c0db26d39331a336c6b92\"</ETag><PartNumber>2</PartNumber></Part>\
</CompleteMultipartUpload>";
    let c: CompleteMultipartUpload = from_xml(boto3).unwrap();
    assert_eq!(c.parts.len(), 2);
    assert_eq!(c.parts[1], part(2, "\"ea2b2676c28c0db26d39331a336c6b92\""));
    assert_eq!(c.parts[1].checksum_crc32, None);

    // Current boto3/AWS CLI with flexible checksums: a checksum per part.
    let with_checksums = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
<Part><ETag>&quot;d8e8fca2dc0f896fd7cb4cb0031ba249&quot;</ETag><ChecksumCRC32>i9aeUg==</ChecksumCRC32><PartNumber>1</PartNumber></Part>\
<Part><ETag>&quot;ea2b2676c28c0db26d39331a336c6b92&quot;</ETag><ChecksumCRC32C>yZRlqg==</ChecksumCRC32C>\
<ChecksumCRC64NVME>AAAAAAAAAAA=</ChecksumCRC64NVME><ChecksumSHA1>2jmj7l5rSw0yVb/vlWAYkK/YBwk=</ChecksumSHA1>\
<ChecksumSHA256>47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=</ChecksumSHA256><PartNumber>2</PartNumber></Part>\
</CompleteMultipartUpload>";
    let c: CompleteMultipartUpload = from_xml(with_checksums).unwrap();
    assert_eq!(c.parts[0].checksum_crc32.as_deref(), Some("i9aeUg=="));
    assert_eq!(c.parts[0].etag_unquoted(), "d8e8fca2dc0f896fd7cb4cb0031ba249");
    let p = &c.parts[1];
    assert_eq!(
        (
            p.checksum_crc32c.as_deref(),
            p.checksum_crc64nvme.as_deref(),
            p.checksum_sha1.as_deref(),
            p.checksum_sha256.as_deref()
        ),
        (
            Some("yZRlqg=="),
            Some("AAAAAAAAAAA="),
            Some("2jmj7l5rSw0yVb/vlWAYkK/YBwk="),
            Some("47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=")
        )
    );
    // Our writer puts PartNumber first, like the API reference, and reads back the same.
    let xml = to_xml(&c);
    assert!(xml.contains("<Part><PartNumber>1</PartNumber><ETag>&quot;d8e8"), "{xml}");
    assert_eq!(from_xml::<CompleteMultipartUpload>(xml.as_bytes()), Ok(c));

    // Unquoted ETags exist in the wild; out-of-order parts parse (the handler refuses them).
    let odd = b"<CompleteMultipartUpload><Part><PartNumber> 2 </PartNumber><ETag>abc</ETag></Part>\
<Part><PartNumber>1</PartNumber><ETag>def</ETag></Part></CompleteMultipartUpload>";
    let c: CompleteMultipartUpload = from_xml(odd).unwrap();
    assert_eq!((c.parts[0].part_number, c.parts[0].etag_unquoted()), (2, "abc"));
    assert!(!c.is_ascending());
}

#[test]
fn complete_multipart_upload_limits() {
    let body = |n: u32| {
        let mut s = String::from("<CompleteMultipartUpload>");
        for i in 1..=n {
            s.push_str(&format!(
                "<Part><ETag>\"0123456789abcdef0123456789abcdef\"</ETag><ChecksumSHA256>47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=</ChecksumSHA256><PartNumber>{i}</PartNumber></Part>"
            ));
        }
        s.push_str("</CompleteMultipartUpload>");
        s
    };
    let max = body(MAX_COMPLETE_PARTS as u32);
    assert!(max.len() < MAX_XML_BODY_BYTES, "10,000 parts with SHA-256 checksums fit: {}", max.len());
    let c: CompleteMultipartUpload = from_xml(max.as_bytes()).unwrap();
    assert_eq!(c.parts.len(), 10_000);
    assert!(c.is_ascending());
    assert_eq!(
        from_xml::<CompleteMultipartUpload>(body(MAX_COMPLETE_PARTS as u32 + 1).as_bytes()),
        Err(XmlError::TooManyItems { element: "Part", limit: 10_000 })
    );
    assert_eq!(
        from_xml::<CompleteMultipartUpload>(b"<CompleteMultipartUpload></CompleteMultipartUpload>"),
        Err(XmlError::MissingItems { element: "Part" })
    );
}

#[test]
fn complete_multipart_upload_result_example() {
    golden(
        &CompleteMultipartUploadResult {
            location: "http://Example-Bucket.s3.Region.amazonaws.com/Example-Object".into(),
            bucket: "Example-Bucket".into(),
            key: "Example-Object".into(),
            etag: "\"3858f62230ac3c915f300c664312c11f-9\"".into(),
            ..Default::default()
        },
        r#"<?xml version="1.0" encoding="UTF-8"?>
<CompleteMultipartUploadResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Location>http://Example-Bucket.s3.Region.amazonaws.com/Example-Object</Location>
  <Bucket>Example-Bucket</Bucket>
  <Key>Example-Object</Key>
  <ETag>"3858f62230ac3c915f300c664312c11f-9"</ETag>
</CompleteMultipartUploadResult>"#,
    );
    let with_checksum = CompleteMultipartUploadResult {
        location: "l".into(),
        bucket: "b".into(),
        key: "k".into(),
        etag: "\"e-2\"".into(),
        checksum_crc32: Some("i9aeUg==-2".into()),
        checksum_type: Some("COMPOSITE".into()),
        ..Default::default()
    };
    let xml = to_xml(&with_checksum);
    assert!(
        xml.ends_with("<ETag>&quot;e-2&quot;</ETag><ChecksumCRC32>i9aeUg==-2</ChecksumCRC32><ChecksumType>COMPOSITE</ChecksumType></CompleteMultipartUploadResult>"),
        "{xml}"
    );
    assert_eq!(from_xml::<CompleteMultipartUploadResult>(xml.as_bytes()), Ok(with_checksum));
}

#[test]
fn list_parts_example() {
    let value = ListPartsResult {
        bucket: "example-bucket".into(),
        key: "example-object".into(),
        upload_id: "XXBsb2FkIElEIGZvciBlbHZpbmcncyVcdS1tb3ZpZS5tMnRzEEEwbG9hZA".into(),
        initiator: Some(Owner {
            id: "arn:aws:iam::111122223333:user/some-user-11116a31-17b5-4fb7-9df5-b288870f11xx".into(),
            display_name: Some("umat-user-11116a31-17b5-4fb7-9df5-b288870f11xx".into()),
        }),
        owner: Some(Owner {
            id: "75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a".into(),
            display_name: Some("someName".into()),
        }),
        storage_class: "STANDARD".into(),
        part_number_marker: 1,
        next_part_number_marker: Some(3),
        max_parts: 2,
        is_truncated: true,
        parts: vec![
            ListedPart {
                part_number: 2,
                last_modified: at(1_289_422_114, 0),
                etag: "\"7778aef83f66abc1fa1e8477f296d394\"".into(),
                size: 10_485_760,
                checksum_crc32: None,
                checksum_crc32c: None,
                checksum_crc64nvme: None,
                checksum_sha1: None,
                checksum_sha256: None,
            },
            ListedPart {
                part_number: 3,
                last_modified: at(1_289_422_113, 0),
                etag: "\"aaaa18db4cc2f85cedef654fccc4a4x8\"".into(),
                size: 10_485_760,
                checksum_crc32: None,
                checksum_crc32c: None,
                checksum_crc64nvme: None,
                checksum_sha1: None,
                checksum_sha256: None,
            },
        ],
    };
    golden(
        &value,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<ListPartsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>example-bucket</Bucket>
  <Key>example-object</Key>
  <UploadId>XXBsb2FkIElEIGZvciBlbHZpbmcncyVcdS1tb3ZpZS5tMnRzEEEwbG9hZA</UploadId>
  <Initiator>
      <ID>arn:aws:iam::111122223333:user/some-user-11116a31-17b5-4fb7-9df5-b288870f11xx</ID>
      <DisplayName>umat-user-11116a31-17b5-4fb7-9df5-b288870f11xx</DisplayName>
  </Initiator>
  <Owner>
    <ID>75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a</ID>
    <DisplayName>someName</DisplayName>
  </Owner>
  <StorageClass>STANDARD</StorageClass>
  <PartNumberMarker>1</PartNumberMarker>
  <NextPartNumberMarker>3</NextPartNumberMarker>
  <MaxParts>2</MaxParts>
  <IsTruncated>true</IsTruncated>
  <Part>
    <PartNumber>2</PartNumber>
    <LastModified>2010-11-10T20:48:34.000Z</LastModified>
    <ETag>"7778aef83f66abc1fa1e8477f296d394"</ETag>
    <Size>10485760</Size>
  </Part>
  <Part>
    <PartNumber>3</PartNumber>
    <LastModified>2010-11-10T20:48:33.000Z</LastModified>
    <ETag>"aaaa18db4cc2f85cedef654fccc4a4x8"</ETag>
    <Size>10485760</Size>
  </Part>
</ListPartsResult>"#,
    );
}

#[test]
fn list_multipart_uploads_example() {
    let value = ListMultipartUploadsResult {
        bucket: "bucket".into(),
        next_key_marker: Some("my-movie.m2ts".into()),
        next_upload_id_marker: Some("YW55IGlkZWEgd2h5IGVsdmluZydzIHVwbG9hZCBmYWlsZWQ".into()),
        max_uploads: 3,
        is_truncated: true,
        uploads: vec![ListedUpload {
            key: "my-divisor".into(),
            upload_id: "XMgbGlrZSBlbHZpbmcncyBub3QgaGF2aW5nIG11Y2ggbHVjaw".into(),
            initiator: Some(Owner {
                id: "arn:aws:iam::111122223333:user/user1-11111a31-17b5-4fb7-9df5-b111111f13de".into(),
                display_name: Some("user1-11111a31-17b5-4fb7-9df5-b111111f13de".into()),
            }),
            owner: Some(Owner {
                id: "75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a".into(),
                display_name: Some("OwnerDisplayName".into()),
            }),
            storage_class: "REDUCED_REDUNDANCY".into(),
            initiated: at(1_289_422_113, 0),
        }],
        ..Default::default()
    };
    golden(
        &value,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>bucket</Bucket>
  <KeyMarker></KeyMarker>
  <UploadIdMarker></UploadIdMarker>
  <NextKeyMarker>my-movie.m2ts</NextKeyMarker>
  <NextUploadIdMarker>YW55IGlkZWEgd2h5IGVsdmluZydzIHVwbG9hZCBmYWlsZWQ</NextUploadIdMarker>
  <MaxUploads>3</MaxUploads>
  <IsTruncated>true</IsTruncated>
  <Upload>
    <Key>my-divisor</Key>
    <UploadId>XMgbGlrZSBlbHZpbmcncyBub3QgaGF2aW5nIG11Y2ggbHVjaw</UploadId>
    <Initiator>
      <ID>arn:aws:iam::111122223333:user/user1-11111a31-17b5-4fb7-9df5-b111111f13de</ID>
      <DisplayName>user1-11111a31-17b5-4fb7-9df5-b111111f13de</DisplayName>
    </Initiator>
    <Owner>
      <ID>75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a</ID>
      <DisplayName>OwnerDisplayName</DisplayName>
    </Owner>
    <StorageClass>REDUCED_REDUNDANCY</StorageClass>
    <Initiated>2010-11-10T20:48:33.000Z</Initiated>
  </Upload>
</ListMultipartUploadsResult>"#,
    );
    // With prefix and delimiter: S3 writes them after the markers.
    let value = ListMultipartUploadsResult {
        bucket: "example-bucket".into(),
        delimiter: Some("/".into()),
        prefix: Some("photos/2006/".into()),
        max_uploads: 1000,
        common_prefixes: vec![
            CommonPrefix { prefix: "photos/2006/February/".into() },
            CommonPrefix { prefix: "photos/2006/January/".into() },
        ],
        ..Default::default()
    };
    golden(
        &value,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>example-bucket</Bucket>
  <KeyMarker/>
  <UploadIdMarker/>
  <Delimiter>/</Delimiter>
  <Prefix>photos/2006/</Prefix>
  <MaxUploads>1000</MaxUploads>
  <IsTruncated>false</IsTruncated>
  <CommonPrefixes>
    <Prefix>photos/2006/February/</Prefix>
  </CommonPrefixes>
  <CommonPrefixes>
    <Prefix>photos/2006/January/</Prefix>
  </CommonPrefixes>
</ListMultipartUploadsResult>"#,
    );
}

#[test]
fn copy_results_example() {
    golden(
        &CopyObjectResult {
            last_modified: at(1_255_369_830, 0),
            etag: "\"9b2cf535f27731c974343645a3985328\"".into(),
            checksum_crc32: None,
            checksum_crc32c: None,
            checksum_crc64nvme: None,
            checksum_sha1: None,
            checksum_sha256: None,
        },
        r#"<?xml version="1.0" encoding="UTF-8"?>
<CopyObjectResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
   <LastModified>2009-10-12T17:50:30.000Z</LastModified>
   <ETag>"9b2cf535f27731c974343645a3985328"</ETag>
</CopyObjectResult>"#,
    );
    golden(
        &CopyPartResult {
            last_modified: at(1_255_369_830, 0),
            etag: "\"b20b8dbc4d5a9d3e6d6ad3ba4e5a1e07\"".into(),
            checksum_crc32: Some("i9aeUg==".into()),
            checksum_crc32c: None,
            checksum_crc64nvme: None,
            checksum_sha1: None,
            checksum_sha256: None,
        },
        r#"<?xml version="1.0" encoding="UTF-8"?>
<CopyPartResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
   <LastModified>2009-10-12T17:50:30.000Z</LastModified>
   <ETag>"b20b8dbc4d5a9d3e6d6ad3ba4e5a1e07"</ETag>
   <ChecksumCRC32>i9aeUg==</ChecksumCRC32>
</CopyPartResult>"#,
    );
}

// ---------------------------------------------------------------------------------------------
// Refusals
// ---------------------------------------------------------------------------------------------

fn refuse(body: &[u8]) -> XmlError {
    match from_xml::<Delete>(body) {
        Ok(d) => panic!("accepted {:?} as {d:?}", String::from_utf8_lossy(body)),
        Err(e) => e,
    }
}

#[test]
fn malformed_bodies_are_refused_precisely() {
    use XmlError::*;
    let syntax = |body: &[u8]| assert!(matches!(refuse(body), Syntax { .. }), "{:?}", String::from_utf8_lossy(body));
    let schema = |body: &[u8]| assert!(matches!(refuse(body), Schema { .. }), "{:?}", String::from_utf8_lossy(body));

    assert_eq!(refuse(b""), MissingRoot);
    assert_eq!(refuse(b"  \n"), MissingRoot);
    assert_eq!(refuse(b"<?xml version=\"1.0\"?><!-- nothing -->"), MissingRoot);
    assert_eq!(
        refuse(b"<Delet><Object><Key>a</Key></Object></Delet>"),
        WrongRoot { expected: "Delete", found: "Delet".into() }
    );
    assert_eq!(
        refuse(b"<CompleteMultipartUpload/>"),
        WrongRoot { expected: "Delete", found: "CompleteMultipartUpload".into() }
    );
    assert_eq!(refuse(b"<!DOCTYPE d [<!ENTITY x \"y\">]><Delete><Object><Key>&x;</Key></Object></Delete>"), DocType);
    assert_eq!(refuse(b"<Delete><Object><Key>\xff</Key></Object></Delete>"), NotUtf8 { valid_up_to: 21 });
    let deep = format!("<Delete>{}{}</Delete>", "<a>".repeat(20), "</a>".repeat(20));
    assert_eq!(refuse(deep.as_bytes()), TooDeep { limit: MAX_XML_DEPTH });

    syntax(b"<");
    syntax(b"<Delete>");
    syntax(b"<Delete><Object><Key>a</Key></Object>");
    syntax(b"<Delete><Object><Key>a</Object></Key></Delete>");
    syntax(b"<Delete><Object><Key>a</Key></Object></Delete></Delete>");
    syntax(b"<Delete><Object><Key>a</Key></Object></Delete><Delete/>");
    syntax(b"junk<Delete><Object><Key>a</Key></Object></Delete>");
    syntax(b"<Delete><Object><Key>a</Key></Object></Delete>junk");
    syntax(b"<Delete><Object><Key>&bogus;</Key></Object></Delete>");
    syntax(b"<Delete><Object><Key>&#0;</Key></Object></Delete>");
    syntax(b"<Delete><Object><Key>&#xD800;</Key></Object></Delete>");
    syntax(b"<Delete><Object><Key>a & b</Key></Object></Delete>");
    syntax(b"<Delete a=\"1\" a=\"2\"><Object><Key>a</Key></Object></Delete>");
    syntax(b"<Delete a=1><Object><Key>a</Key></Object></Delete>");
    syntax(b"<Delete><Object><Key>a</Key></Object><!-- a -- b --></Delete>");
    syntax(b"<Delete><1Object><Key>a</Key></1Object></Delete>");

    schema(b"<Delete><Object><VersionId>v</VersionId></Object></Delete>");
    schema(b"<Delete><Object><Key>a</Key><Key>b</Key></Object></Delete>");
    schema(b"<Delete><Object><Key>a</Key></Object><Quiet>yes</Quiet></Delete>");
    schema(b"<Delete><Object><Key>a</Key></Object><Quiet>True</Quiet></Delete>");
    schema(b"<Delete><Object><Key>a</Key></Object>text<Quiet>true</Quiet></Delete>");
    schema(b"<Delete><Object><Key><b>bold</b></Key></Object></Delete>");
    // Objects must be contiguous (no S3 client interleaves them).
    schema(b"<Delete><Object><Key>a</Key></Object><Quiet>true</Quiet><Object><Key>b</Key></Object></Delete>");

    let bad_part = |p: &str| {
        let body = format!("<CompleteMultipartUpload><Part><PartNumber>{p}</PartNumber><ETag>e</ETag></Part></CompleteMultipartUpload>");
        assert!(matches!(from_xml::<CompleteMultipartUpload>(body.as_bytes()), Err(Schema { .. })), "PartNumber {p:?}");
    };
    for p in ["", "abc", "-1", "1.5", "4294967296", "0x10", "1 2"] {
        bad_part(p);
    }
    assert!(matches!(
        from_xml::<CompleteMultipartUpload>(
            b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber></Part></CompleteMultipartUpload>"
        ),
        Err(Schema { .. })
    ));
}

#[test]
fn size_limit_is_checked_before_parsing() {
    let limit = MAX_XML_BODY_BYTES;
    // Exactly at the limit is parsed (and here fails for its content, not its size).
    let mut at_limit = b"<Delete><Object><Key>".to_vec();
    at_limit.resize(limit - b"</Key></Object></Delete>".len(), b'k');
    at_limit.extend_from_slice(b"</Key></Object></Delete>");
    assert_eq!(at_limit.len(), limit);
    assert_eq!(from_xml::<Delete>(&at_limit).map(|d| d.objects[0].key.len()), Ok(limit - 45));
    // One byte more is refused whatever it contains, even garbage.
    let mut over = at_limit.clone();
    over.push(b' ');
    assert_eq!(from_xml::<Delete>(&over), Err(XmlError::TooLarge { limit_bytes: limit }));
    assert_eq!(from_xml::<Delete>(&vec![0xff; limit + 1]), Err(XmlError::TooLarge { limit_bytes: limit }));
    assert_eq!(XmlError::TooLarge { limit_bytes: limit }.s3_code(), "MaxMessageLengthExceeded");
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

fn try_all_request_types(body: &[u8]) {
    let _ = from_xml::<Delete>(body);
    let _ = from_xml::<CompleteMultipartUpload>(body);
    let _ = from_xml::<CreateBucketConfiguration>(body);
    let _ = from_xml::<ListObjectsV2Result>(body);
    let _ = from_xml::<ListAllMyBucketsResult>(body);
    let _ = from_xml::<LocationConstraint>(body);
}

#[test]
fn garbage_and_mutations_never_panic() {
    let seeds: [&[u8]; 4] = [
        b"<?xml version='1.0' encoding='utf-8'?>\n<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Object><Key>a &amp; b</Key><VersionId>v</VersionId></Object><Quiet>true</Quiet></Delete>",
        b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>&quot;e&quot;</ETag><ChecksumCRC32>x==</ChecksumCRC32></Part></CompleteMultipartUpload>",
        b"<CreateBucketConfiguration><LocationConstraint><![CDATA[eu]]></LocationConstraint></CreateBucketConfiguration>",
        b"<ListAllMyBucketsResult><Owner><ID>o</ID></Owner><Buckets><Bucket><Name>n</Name><CreationDate>2006-02-03T16:45:09.000Z</CreationDate></Bucket></Buckets></ListAllMyBucketsResult>",
    ];
    let alphabet: &[u8] = b"<>/&;#x0123456789abcdefABCDEF\"'=?! \t\r\n[]-CDATAObjectKeyDeletePart\xff\xc3\x80";
    let mut rng = Lcg(7);
    for seed in seeds {
        try_all_request_types(seed);
        for k in 0..=seed.len() {
            try_all_request_types(&seed[..k]);
        }
        for _ in 0..1500 {
            let mut m = seed.to_vec();
            for _ in 0..1 + rng.next() % 4 {
                let i = rng.next() as usize % m.len();
                match rng.next() % 3 {
                    0 => m[i] = alphabet[rng.next() as usize % alphabet.len()],
                    1 => {
                        m.remove(i);
                    }
                    _ => m.insert(i, alphabet[rng.next() as usize % alphabet.len()]),
                }
            }
            try_all_request_types(&m);
        }
    }
    for _ in 0..2000 {
        let len = rng.next() as usize % 64;
        let bytes: Vec<u8> = (0..len).map(|_| alphabet[rng.next() as usize % alphabet.len()]).collect();
        try_all_request_types(&bytes);
        let raw: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        try_all_request_types(&raw);
    }
}

#[test]
fn round_trip_every_type_with_hostile_strings() {
    let hostile = ["", " ", "a b", "<&>\"'", "\t\n\r", "\u{1}\u{8}\u{b}\u{1f}", "é🎉", " x ", "]]>", "&amp;"];
    for s in hostile {
        let owner = Some(Owner { id: s.into(), display_name: Some(s.into()) });
        let t = at(1_700_000_000, 123);
        let v2 = ListObjectsV2Result {
            name: s.into(),
            prefix: s.into(),
            start_after: Some(s.into()),
            continuation_token: Some(s.into()),
            next_continuation_token: Some(s.into()),
            key_count: 2,
            max_keys: u32::MAX,
            delimiter: Some(s.into()),
            encoding_type: None,
            is_truncated: true,
            contents: vec![ListedObject { owner: owner.clone(), ..object(s, t, s, u64::MAX, s) }],
            common_prefixes: vec![CommonPrefix { prefix: s.into() }],
        };
        assert_eq!(from_xml::<ListObjectsV2Result>(to_xml(&v2).as_bytes()).as_ref(), Ok(&v2), "{s:?}");
        let v1 = ListObjectsV1Result {
            name: s.into(),
            prefix: s.into(),
            marker: s.into(),
            next_marker: Some(s.into()),
            max_keys: 0,
            delimiter: Some(s.into()),
            encoding_type: None,
            is_truncated: false,
            contents: vec![object(s, t, s, 0, s)],
            common_prefixes: vec![CommonPrefix { prefix: s.into() }],
        };
        assert_eq!(from_xml::<ListObjectsV1Result>(to_xml(&v1).as_bytes()).as_ref(), Ok(&v1), "{s:?}");
        let buckets = ListAllMyBucketsResult {
            owner: Owner { id: s.into(), display_name: None },
            buckets: vec![ListedBucket { name: s.into(), creation_date: t }],
            continuation_token: Some(s.into()),
        };
        assert_eq!(from_xml::<ListAllMyBucketsResult>(to_xml(&buckets).as_bytes()).as_ref(), Ok(&buckets));
        let delete = Delete {
            objects: vec![ObjectIdentifier { key: s.into(), version_id: Some(s.into()), etag: Some(s.into()) }],
            quiet: true,
        };
        assert_eq!(from_xml::<Delete>(to_xml(&delete).as_bytes()).as_ref(), Ok(&delete), "{s:?}");
        let result = DeleteResult {
            deleted: vec![DeletedObject {
                key: s.into(),
                version_id: Some(s.into()),
                delete_marker: Some(false),
                delete_marker_version_id: Some(s.into()),
            }],
            errors: vec![DeleteError { key: s.into(), version_id: None, code: s.into(), message: s.into() }],
        };
        assert_eq!(from_xml::<DeleteResult>(to_xml(&result).as_bytes()).as_ref(), Ok(&result));
        let init = InitiateMultipartUploadResult { bucket: s.into(), key: s.into(), upload_id: s.into() };
        assert_eq!(from_xml::<InitiateMultipartUploadResult>(to_xml(&init).as_bytes()).as_ref(), Ok(&init));
        let complete = CompleteMultipartUpload {
            parts: vec![CompletedPart {
                part_number: 10_000,
                etag: s.into(),
                checksum_crc32: Some(s.into()),
                checksum_crc32c: Some(s.into()),
                checksum_crc64nvme: Some(s.into()),
                checksum_sha1: Some(s.into()),
                checksum_sha256: Some(s.into()),
            }],
        };
        assert_eq!(from_xml::<CompleteMultipartUpload>(to_xml(&complete).as_bytes()).as_ref(), Ok(&complete));
        let done = CompleteMultipartUploadResult {
            location: s.into(),
            bucket: s.into(),
            key: s.into(),
            etag: s.into(),
            checksum_sha256: Some(s.into()),
            checksum_type: Some(s.into()),
            ..Default::default()
        };
        assert_eq!(from_xml::<CompleteMultipartUploadResult>(to_xml(&done).as_bytes()).as_ref(), Ok(&done));
        let parts = ListPartsResult {
            bucket: s.into(),
            key: s.into(),
            upload_id: s.into(),
            initiator: owner.clone(),
            owner: owner.clone(),
            storage_class: s.into(),
            part_number_marker: 0,
            next_part_number_marker: None,
            max_parts: 1000,
            is_truncated: false,
            parts: vec![ListedPart {
                part_number: 1,
                last_modified: t,
                etag: s.into(),
                size: 5,
                checksum_crc32: Some(s.into()),
                checksum_crc32c: None,
                checksum_crc64nvme: None,
                checksum_sha1: None,
                checksum_sha256: None,
            }],
        };
        assert_eq!(from_xml::<ListPartsResult>(to_xml(&parts).as_bytes()).as_ref(), Ok(&parts));
        let uploads = ListMultipartUploadsResult {
            bucket: s.into(),
            key_marker: s.into(),
            upload_id_marker: s.into(),
            next_key_marker: Some(s.into()),
            next_upload_id_marker: Some(s.into()),
            delimiter: Some(s.into()),
            prefix: Some(s.into()),
            encoding_type: None,
            max_uploads: 7,
            is_truncated: true,
            uploads: vec![ListedUpload {
                key: s.into(),
                upload_id: s.into(),
                initiator: owner.clone(),
                owner: None,
                storage_class: s.into(),
                initiated: t,
            }],
            common_prefixes: vec![CommonPrefix { prefix: s.into() }],
        };
        assert_eq!(from_xml::<ListMultipartUploadsResult>(to_xml(&uploads).as_bytes()).as_ref(), Ok(&uploads));
        let copy = CopyObjectResult {
            last_modified: t,
            etag: s.into(),
            checksum_crc32: None,
            checksum_crc32c: Some(s.into()),
            checksum_crc64nvme: None,
            checksum_sha1: None,
            checksum_sha256: None,
        };
        assert_eq!(from_xml::<CopyObjectResult>(to_xml(&copy).as_bytes()).as_ref(), Ok(&copy));
        let copy_part = CopyPartResult {
            last_modified: t,
            etag: s.into(),
            checksum_crc32: None,
            checksum_crc32c: None,
            checksum_crc64nvme: Some(s.into()),
            checksum_sha1: None,
            checksum_sha256: None,
        };
        assert_eq!(from_xml::<CopyPartResult>(to_xml(&copy_part).as_bytes()).as_ref(), Ok(&copy_part));
        let location = LocationConstraint { region: s.into() };
        assert_eq!(from_xml::<LocationConstraint>(to_xml(&location).as_bytes()).as_ref(), Ok(&location));
        let config = CreateBucketConfiguration { location_constraint: Some(s.into()) };
        assert_eq!(from_xml::<CreateBucketConfiguration>(to_xml(&config).as_bytes()).as_ref(), Ok(&config));
    }
}
