#!/usr/bin/env python3
"""Writes the hostile-input corpus next to this script. Run it again after changing it; the
files are committed so the tests do not depend on Python.

Each file is hostile in one way; README.md lists what keytrail must make of it."""
import gzip, io, json, os

here = os.path.dirname(os.path.abspath(__file__))

def event(i, key="AKIACORPUS000000000A", time="2024-11-30T10:00:00Z"):
    return {
        "eventVersion": "1.08",
        "userIdentity": {"type": "IAMUser", "principalId": "AIDACORPUS", "arn": "arn:aws:iam::111122223333:user/corpus",
                         "accountId": "111122223333", "accessKeyId": key, "userName": "corpus"},
        "eventTime": time, "eventSource": "s3.amazonaws.com", "eventName": "ListBuckets",
        "awsRegion": "us-east-1", "sourceIPAddress": "203.0.113.10", "userAgent": "aws-cli/2.15.0",
        "requestParameters": None, "responseElements": None,
        "requestID": f"req-{i}", "eventID": f"corpus-{i:04d}", "readOnly": True,
        "eventType": "AwsApiCall", "managementEvent": True, "recipientAccountId": "111122223333",
    }

def write(name, data):
    with open(os.path.join(here, name), "wb") as f:
        f.write(data)

def gz(data, name=None):
    buf = io.BytesIO()
    with gzip.GzipFile(filename=name or "", mode="wb", fileobj=buf, mtime=0) as g:
        g.write(data)
    return buf.getvalue()

good = json.dumps({"Records": [event(1), event(2)]}).encode()
write("good.json.gz", gz(good))                                   # 2 events, read
whole = gz(json.dumps({"Records": [event(i) for i in range(10, 60)]}).encode())
write("truncated.json.gz", whole[: len(whole) // 2])              # fails: corrupt gzip
write("empty.json.gz", b"")                                       # fails: empty
write("not-json.json", b"this is not json at all\n")             # fails: not JSON
write("records-not-array.json", b'{"Records": {"eventName": "x"}}')  # fails: Records not an array
write("cut-mid-array.json", good[: len(good) - 40])              # fails: not JSON (truncated)
write("binary.json", bytes(range(256)))                            # fails: not JSON
# 4 records: 2 good, 1 wrong type, 1 with a userIdentity that is a string
mixed = [event(100), {"eventTime": 17, "eventName": "X"},
         dict(event(101), userIdentity="root"), event(102)]
write("wrong-types.json", json.dumps({"Records": mixed}).encode())  # read: 2 written, 2 skipped
# JSON lines with one broken line and one line that is a Records document
lines = [json.dumps(event(200)), "{broken", json.dumps({"Records": [event(201), event(202)]})]
write("lines.jsonl", ("\n".join(lines) + "\n").encode())          # read: 3 written, 1 skipped
# Two gzip members, the first with a file name in its header
write("multi-member.json.gz", gz(b'{"Records": [' + json.dumps(event(300)).encode() + b",", "part1.json")
      + gz(json.dumps(event(301)).encode() + b"]}"))              # read: 2 written
# aws cloudtrail lookup-events output
lookup = {"Events": [{"EventId": "x", "EventName": "ListBuckets",
                      "CloudTrailEvent": json.dumps(event(400))}], "NextToken": "abc"}
write("lookup-events.json", json.dumps(lookup, indent=2).encode())  # read: 1 written
# A digest file by name (skipped unread) and one recognised by content (skipped after reading)
digest = {"awsAccountId": "111122223333", "digestStartTime": "2024-11-30T09:00:00Z",
          "digestEndTime": "2024-11-30T10:00:00Z", "digestPublicKeyFingerprint": "00",
          "digestSignatureAlgorithm": "SHA256withRSA", "logFiles": []}
write("111122223333_CloudTrail-Digest_us-east-1_trail_us-east-1_20241130T100000Z.json.gz",
      gz(json.dumps(digest).encode()))
write("digest-by-content.json", json.dumps(digest).encode())
# A BOM, odd values CloudTrail's anonymised captures have: invalid IPs, invented regions
odd = dict(event(500), sourceIPAddress="06.237.252.245", awsRegion="ap-central-2r")
write("bom-odd-values.json", b"\xef\xbb\xbf" + json.dumps([odd]).encode())  # read: 1 written
# A session token where CloudTrail should not have put one
token = "IQoJb3JpZ2luX2VjEOH//////////wEaCXVzLWVhc3QtMSJIMEYCIQDzpomGZAmkp4RIzBo4RqVJGEmUNjyA7lHyt1aKfFh8IwIhANX6aS3XpNU319gOolVjEBkN"
leak = dict(event(600), eventName="GetSessionToken", eventSource="sts.amazonaws.com",
            responseElements={"credentials": {"accessKeyId": "ASIACORPUS000000000B", "sessionToken": token,
                                              "secretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                                              "expiration": "Nov 30, 2024, 10:00:00 PM"}},
            userAgent="curl/8 X-Amz-Security-Token=" + token)
write("secrets.json", json.dumps({"Records": [leak]}).encode())   # read: 1 written, secrets redacted
# Deep nesting (issue 13): parsers that recurse once per level overflowed the stack and aborted
# the whole process. Each too-deep record is refused alone; a document that is itself too deep
# (not inside any array of records) fails its object. Gzipped: deep nesting compresses well.
deep_arrays = b"[" * 200_000 + b"]" * 200_000
write("deep-records.json.gz", gz(b'{"Records": [' + json.dumps(event(700)).encode() + b", " + deep_arrays
                                 + b", " + json.dumps(event(701)).encode() + b"]}"))  # read: 2 written, 1 too deep
deep_objects = b'{"a": ' * 100_000 + b"1" + b"}" * 100_000
nested = json.dumps(dict(event(711), requestParameters="DEEP")).encode().replace(b'"DEEP"', deep_objects)
write("deep-field.json.gz", gz(b'{"Records": [' + json.dumps(event(710)).encode() + b", " + nested
                               + b", " + json.dumps(event(712)).encode() + b"]}"))  # read: 2 written, 1 too deep
single = json.dumps(dict(event(720), requestParameters="DEEP")).encode().replace(b'"DEEP"', deep_arrays)
write("deep-document.json.gz", gz(single))                       # fails: the document itself too deep
lines = [json.dumps(event(730)).encode(), nested.replace(b"corpus-0711", b"corpus-0731"), json.dumps(event(732)).encode()]
write("deep-lines.jsonl.gz", gz(b"\n".join(lines) + b"\n"))      # read: 2 written, 1 too deep
inner = json.dumps(dict(event(741), requestParameters="DEEP")).replace('"DEEP"', "[" * 5000 + "]" * 5000)
lookup = {"Events": [{"EventId": "a", "CloudTrailEvent": json.dumps(event(740))},
                     {"EventId": "b", "CloudTrailEvent": inner}]}
write("deep-lookup.json.gz", gz(json.dumps(lookup).encode()))    # read: 1 written, 1 too deep
