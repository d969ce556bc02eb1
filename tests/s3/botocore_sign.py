#!/usr/bin/env python3
"""botocore as the oracle of f2d2n's S3 SigV4 signer (tests/s3_sigv4_test.cpp).

    python3 tests/s3/botocore_sign.py cases.json

cases.json is a JSON array of requests, each an object:
    method, scheme ("http" or "https"), host (as in the Host header: with ":port" when not the
    scheme's default), path (raw, unencoded, beginning with '/'), query ([[name, value], ...], raw),
    headers ([[name, value], ...]), unsigned_payload (true: UNSIGNED-PAYLOAD), body_hex (the body's
    bytes in hex, when the payload is signed), access_key, secret, token ("" for none), region,
    time ("YYYYMMDDTHHMMSSZ").

Each is signed by botocore's own S3 signer (botocore.auth.S3SigV4Auth on a
botocore.awsrequest.AWSRequest), and one JSON object per line comes out, in order:
    {"canonical_request": ..., "string_to_sign": ..., "authorization": ...}
after a first line {"botocore": "<version>"}.

How botocore is driven, and why:
- The path is percent-encoded by botocore.utils.percent_encode(path, safe='/~'), what botocore's
  REST serializer does to an S3 key (its greedy {Key+} label); S3SigV4Auth then signs the URL's
  path as it is (S3 paths are not normalised).
- S3SigV4Auth ignores an X-Amz-Content-SHA256 set before signing: it deletes it and sets the hash
  of the body it reads (or UNSIGNED-PAYLOAD). So the body's bytes travel here, and the payload is
  made unsigned the way botocore's clients do it: the client configuration's
  s3={'payload_signing_enabled': False}.
- The time is frozen by replacing the clock botocore.auth reads: datetime.datetime.utcnow() in
  botocore before 1.32 (Debian 12's 1.29), get_current_datetime() after.
- The canonical request and string to sign are recorded as S3SigV4Auth's own methods return them
  (a subclass that only records); the Authorization header is the one it sets.
Exit status: 0; 2 for a malformed input file; 3 when botocore cannot be imported.
"""
import datetime
import json
import sys
import types

try:
    import botocore
    import botocore.auth
    import botocore.awsrequest
    import botocore.config
    import botocore.credentials
    import botocore.utils
except ImportError as e:
    print(f"botocore_sign.py: cannot import botocore ({e}); install Debian's python3-botocore "
          "(scripts/deps.sh)", file=sys.stderr)
    sys.exit(3)


class RecordingS3SigV4Auth(botocore.auth.S3SigV4Auth):
    """botocore's S3 signer, unchanged, remembering what it computed."""

    def canonical_request(self, request):
        self.recorded_canonical_request = super().canonical_request(request)
        return self.recorded_canonical_request

    def string_to_sign(self, request, canonical_request):
        self.recorded_string_to_sign = super().string_to_sign(request, canonical_request)
        return self.recorded_string_to_sign


def freeze_clock(when):
    """Makes botocore.auth read `when` (naive, UTC) as the current time."""
    if hasattr(botocore.auth, "get_current_datetime"):
        botocore.auth.get_current_datetime = lambda *args, **kwargs: when

    class FrozenDatetime(datetime.datetime):
        @classmethod
        def utcnow(cls):
            return when

        @classmethod
        def now(cls, tz=None):
            return when if tz is None else when.replace(tzinfo=datetime.timezone.utc).astimezone(tz)

    shim = types.ModuleType("datetime")
    shim.__dict__.update(datetime.__dict__)
    shim.datetime = FrozenDatetime
    botocore.auth.datetime = shim


def sign(case):
    when = datetime.datetime.strptime(case["time"], "%Y%m%dT%H%M%SZ")
    freeze_clock(when)
    url = f'{case["scheme"]}://{case["host"]}{botocore.utils.percent_encode(case["path"], safe="/~")}'
    body = b"" if case["unsigned_payload"] else bytes.fromhex(case["body_hex"])
    request = botocore.awsrequest.AWSRequest(method=case["method"], url=url, data=body,
                                             params=[(n, v) for n, v in case["query"]])
    for name, value in case["headers"]:
        request.headers[name] = value  # HTTPHeaders: a name given twice is kept twice
    request.context["client_config"] = botocore.config.Config(
        s3={"payload_signing_enabled": not case["unsigned_payload"]})
    credentials = botocore.credentials.Credentials(case["access_key"], case["secret"], case["token"] or None)
    signer = RecordingS3SigV4Auth(credentials, "s3", case["region"])
    signer.add_auth(request)
    return {
        "canonical_request": signer.recorded_canonical_request,
        "string_to_sign": signer.recorded_string_to_sign,
        "authorization": request.headers["Authorization"],
    }


def main():
    if len(sys.argv) != 2:
        print("usage: botocore_sign.py cases.json", file=sys.stderr)
        return 2
    try:
        with open(sys.argv[1], encoding="utf-8") as f:
            cases = json.load(f)
    except (OSError, ValueError) as e:
        print(f"botocore_sign.py: cannot read {sys.argv[1]}: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"botocore": botocore.__version__}))
    for case in cases:
        print(json.dumps(sign(case)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
