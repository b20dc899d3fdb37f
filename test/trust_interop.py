#!/usr/bin/python3
"""trust_interop.py — fedmq's envelopes (proto/SPEC.md §7) against an
independent implementation: Python's cryptography (OpenSSL) and msgpack.

usage: trust_interop.py TRUST_TOOL WORKDIR

C signs and seals, Python verifies and opens; Python signs and seals, C
verifies and opens; Python's changes (another device, another round, a
flipped byte) are refused by C with the SPEC §10 reason. Exit 0 when all
agree."""
import hashlib
import os
import subprocess
import sys

import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature, encode_dss_signature)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

TOOL, WORK = sys.argv[1], sys.argv[2]
INFO = b"fedmq-seal-v1 aes-256-gcm"
failures = 0


def check(ok, what):
    global failures
    print(("  ok   " if ok else "  FAIL ") + what)
    if not ok:
        failures += 1


def path(name):
    return os.path.join(WORK, name)


def tool(*args):
    return subprocess.run([TOOL, *args], capture_output=True, text=True)


def write(name, data):
    with open(path(name), "wb") as f:
        f.write(data)


def read(name):
    with open(path(name), "rb") as f:
        return f.read()


def point(pub):
    return pub.public_bytes(serialization.Encoding.X962,
                            serialization.PublicFormat.UncompressedPoint)


def kid(pub):
    return hashlib.sha256(point(pub)).hexdigest()[:16]


def aad(fleet, dev, r):
    return (b"fedmq-seal-v1\0" + fleet.encode() + b"\0" + dev.encode() +
            b"\0" + r.to_bytes(8, "big"))


def derive(priv, peer_pub, epk, recipient_point):
    z = priv.exchange(ec.ECDH(), peer_pub)
    return HKDF(hashes.SHA256(), 32, epk + recipient_point, INFO).derive(z)


def seal(recipient_pub, fleet, dev, r, msg, kid_=None):
    e = ec.generate_private_key(ec.SECP256R1())
    epk = point(e.public_key())
    k = derive(e, recipient_pub, epk, point(recipient_pub))
    iv = os.urandom(12)
    ct = AESGCM(k).encrypt(iv, msg, aad(fleet, dev, r))
    return msgpack.packb({"v": 1, "t": "sealed",
                          "kid": kid_ or kid(recipient_pub), "r": r,
                          "epk": epk, "iv": iv, "ct": ct}, use_bin_type=True)


def reason(res):
    return res.stderr.split(":")[1].strip() if res.returncode == 1 else None


# An update and a global as an inner message (any map will do for §7).
update = msgpack.packb({"v": 1, "t": "update", "fl": "fleet-a", "dev": "dev-7",
                        "r": 3, "mv": 3, "n": 10, "loss": 0.5,
                        "d": {"s": "q8", "n": 4, "b": 4, "c": b"\x01\x02\x03\x04",
                              "sc": b"\0\0\x80\x3f"}}, use_bin_type=True)
glob = msgpack.packb({"v": 1, "t": "global", "fl": "fleet-a", "r": 3},
                     use_bin_type=True)
write("update.bin", update)
write("global.bin", glob)

# --- keys: C makes one, Python reads it and agrees on the kid
res = tool("keygen", path("c.key"), path("c.pub"))
check(res.returncode == 0, "C makes a key pair")
c_kid = res.stdout.strip()
c_priv = serialization.load_pem_private_key(read("c.key"), None)
c_pub = serialization.load_pem_public_key(read("c.pub"))
check(isinstance(c_pub.curve, ec.SECP256R1), "C's key is P-256 to Python")
check(kid(c_pub) == c_kid, "kid = first 8 bytes of SHA-256(point), hex")
check(point(c_priv.public_key()) == point(c_pub), "C's private and public agree")

# --- C signs, Python verifies
check(tool("sign", path("c.key"), path("global.bin"),
           path("global.sig")).returncode == 0, "C signs a global")
env = msgpack.unpackb(read("global.sig"), raw=False)
check(env["t"] == "signed" and env["kid"] == c_kid and env["body"] == glob,
      "the signed envelope holds kid and the body")
sig = env["sig"]
check(len(sig) == 64, "sig is raw r||s, 64 bytes")
der = encode_dss_signature(int.from_bytes(sig[:32], "big"),
                           int.from_bytes(sig[32:], "big"))
try:
    c_pub.verify(der, env["body"], ec.ECDSA(hashes.SHA256()))
    check(True, "Python verifies C's signature")
except InvalidSignature:
    check(False, "Python verifies C's signature")

# --- C seals, Python opens
res = tool("seal", path("c.pub"), "fleet-a", "dev-7", "3", path("update.bin"),
           path("update.seal"))
check(res.returncode == 0, "C seals an update")
s = msgpack.unpackb(read("update.seal"), raw=False)
check(s["t"] == "sealed" and s["kid"] == c_kid and s["r"] == 3 and
      len(s["epk"]) == 65 and len(s["iv"]) == 12, "the sealed envelope's fields")
epk_pub = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), s["epk"])
k = derive(c_priv, epk_pub, s["epk"], point(c_pub))
try:
    pt = AESGCM(k).decrypt(s["iv"], s["ct"], aad("fleet-a", "dev-7", 3))
    check(pt == update, "Python opens C's sealed update, byte-equal")
except Exception as ex:  # InvalidTag
    check(False, "Python opens C's sealed update (%r)" % ex)
try:
    AESGCM(k).decrypt(s["iv"], s["ct"], aad("fleet-a", "dev-8", 3))
    check(False, "Python refuses C's update on another device's AAD")
except Exception:
    check(True, "Python refuses C's update on another device's AAD")

# --- Python signs, C verifies (a PKCS#8 key made by Python)
p_priv = ec.generate_private_key(ec.SECP256R1())
p_pub = p_priv.public_key()
write("p.key", p_priv.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
write("p.pub", p_pub.public_bytes(serialization.Encoding.PEM,
                                  serialization.PublicFormat.SubjectPublicKeyInfo))
res = tool("kid", path("p.pub"))
check(res.stdout.strip() == kid(p_pub), "C computes the kid of Python's key")


def py_signed(body, kid_=None, flip=None):
    r, s_ = decode_dss_signature(p_priv.sign(body, ec.ECDSA(hashes.SHA256())))
    raw = bytearray(r.to_bytes(32, "big") + s_.to_bytes(32, "big"))
    if flip is not None:
        raw[flip] ^= 1
    return msgpack.packb({"v": 1, "t": "signed", "kid": kid_ or kid(p_pub),
                          "body": body, "sig": bytes(raw)}, use_bin_type=True)


write("py.sig", py_signed(glob))
res = tool("verify", path("p.pub"), path("py.sig"), path("py.body"))
check(res.returncode == 0 and read("py.body") == glob,
      "C verifies Python's signature and returns the body")
write("py-bad.sig", py_signed(glob, flip=40))
check(reason(tool("verify", path("p.pub"), path("py-bad.sig"),
                  path("x"))) == "sig", "C refuses a flipped signature: sig")
write("py-other.sig", py_signed(glob, kid_="0011223344556677"))
check(reason(tool("verify", path("p.pub"), path("py-other.sig"),
                  path("x"))) == "key", "C refuses an unknown kid: key")
check(reason(tool("verify", path("p.pub"), path("global.bin"),
                  path("x"))) == "sig", "C refuses an unsigned global: sig")

# --- Python seals, C opens (to C's key, and to Python's PKCS#8 key)
write("py.seal", seal(c_pub, "fleet-a", "dev-7", 3, update))
res = tool("open", path("c.key"), "fleet-a", "dev-7", path("py.seal"),
           path("py.open"))
check(res.returncode == 0 and res.stdout.strip() == "3" and
      read("py.open") == update, "C opens Python's sealed update, byte-equal")
write("py2.seal", seal(p_pub, "fleet-a", "dev-7", 3, update))
res = tool("open", path("p.key"), "fleet-a", "dev-7", path("py2.seal"),
           path("py2.open"))
check(res.returncode == 0 and read("py2.open") == update,
      "C opens with a PKCS#8 key made by Python")
check(reason(tool("open", path("c.key"), "fleet-a", "dev-8", path("py.seal"),
                  path("x"))) == "seal", "C refuses it on another device's topic: seal")
moved = msgpack.unpackb(read("py.seal"), raw=False)
moved["r"] = 4
write("py-r.seal", msgpack.packb(moved, use_bin_type=True))
check(reason(tool("open", path("c.key"), "fleet-a", "dev-7", path("py-r.seal"),
                  path("x"))) == "seal", "C refuses a changed round: seal")
write("py-aad.seal", seal(c_pub, "fleet-b", "dev-7", 3, update))
check(reason(tool("open", path("c.key"), "fleet-a", "dev-7",
                  path("py-aad.seal"), path("x"))) == "seal",
      "C refuses an update sealed for another fleet: seal")

print("trust interop: %s" % ("all agree" if not failures else
                             "%d failed" % failures))
sys.exit(1 if failures else 0)
