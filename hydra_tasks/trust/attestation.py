"""Trusted execution environments (TEEs): what a volunteer's machine has, and what the control plane
can verify about it.

**Detection** (:func:`detect`, on the volunteer) looks for the kernel's real interfaces under a root
directory (``/`` in production; a test's temporary directory in tests):

* ``/dev/sev-guest``: the guest runs in an AMD SEV-SNP confidential VM (the sev-guest driver);
* ``/dev/tdx_guest``: the guest runs in an Intel TDX trust domain (the tdx-guest driver);
* ``/dev/sgx_enclave``: the CPU and kernel can run SGX enclaves. This says the *machine* can run
  enclaves, not that the worker runs in one: Hydra has no enclave runner, so its worker never does;
* ``/sys/kernel/config/tsm/report``: the configfs-tsm report interface (Linux >= 6.7), through which
  SEV-SNP and TDX guests produce reports; an existing report entry's ``provider`` file names the TEE
  (``sev_guest``, ``tdx_guest``).

What a worker detects is a **claim**: it reports it in its registration (``tee``) and the control
plane records it, but counts the worker as attested only if a :class:`Verifier` accepted evidence.

**Verification** (:func:`assess`, on the control plane). Real verification of an SEV-SNP report
needs AMD's certificate chain (ARK -> ASK -> the chip's VCEK, from the AMD Key Distribution Service);
a TDX or SGX quote needs Intel's collateral (the PCK certificate chain, TCB info and QE identity
from the Intel PCS, checked with DCAP). None of that is available to this control plane (no network,
no bundled chains), and Hydra has no challenge protocol yet, so workers send no evidence. The
verifiers therefore check what can be checked offline (the report's structure, its TEE type, that its
report data binds the control plane's nonce) and then **refuse**: :class:`UnverifiableEvidence`.
No evidence is ever accepted without its signature being checked, so today no worker is attested,
and confidential jobs wait (see :func:`eligible` and ``scheduling/grants.py``).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..errors import AttestationError, UnverifiableEvidence


class Tee(str, enum.Enum):
    """A trusted execution environment a worker may run in."""

    NONE = "none"
    SEV_SNP = "sev-snp"
    TDX = "tdx"
    SGX = "sgx"


class Status(str, enum.Enum):
    """What the control plane concluded about a worker's TEE claim (its record's ``attestation``)."""

    NONE = "none"                # it claims no TEE
    UNVERIFIED = "unverified"    # it claims one; no verifier accepted evidence (``attestation_note`` says why)
    VERIFIED = "verified"        # a verifier checked its evidence, signature included


#: Attestation policies (``HYDRA_ATTESTATION``): "none" = no attestation required (confidential jobs
#: refused); a TEE = a worker must have that TEE, verified; "auto" = whatever TEE it has, verified.
POLICIES = ("none", "auto", Tee.SEV_SNP.value, Tee.TDX.value, Tee.SGX.value)

DEVICES: tuple[tuple[Tee, str], ...] = ((Tee.SEV_SNP, "dev/sev-guest"), (Tee.TDX, "dev/tdx_guest"),
                                        (Tee.SGX, "dev/sgx_enclave"))
TSM_REPORT = "sys/kernel/config/tsm/report"
_TSM_PROVIDERS = {"sev_guest": Tee.SEV_SNP, "tdx_guest": Tee.TDX}


@dataclass(frozen=True)
class Detection:
    """What a machine exposes: its TEE (the first found: a confidential VM before SGX), the path through
    which evidence would be produced, and every TEE interface present."""

    tee: Tee
    evidence_path: str                 # "" with no TEE
    interfaces: tuple[str, ...] = ()


def detect(root: Path | str = "/") -> Detection:
    """The TEE this machine runs in, from the kernel's interfaces under ``root``."""
    base = Path(root)
    found: list[tuple[Tee, str]] = [(tee, "/" + rel) for tee, rel in DEVICES if (base / rel).exists()]
    tsm = base / TSM_REPORT
    interfaces = [path for _, path in found]
    if tsm.is_dir():
        interfaces.append("/" + TSM_REPORT)
        for entry in sorted(p for p in tsm.iterdir() if p.is_dir()):
            try:
                provider = (entry / "provider").read_text(encoding="utf-8").strip()
            except OSError:
                continue
            if provider in _TSM_PROVIDERS:
                found.insert(0, (_TSM_PROVIDERS[provider], "/" + TSM_REPORT))
                break
    if not found:
        return Detection(Tee.NONE, "", tuple(interfaces))
    tee, path = found[0]
    if tee is not Tee.SGX and tsm.is_dir():
        path = "/" + TSM_REPORT  # the newer interface, where present, produces the report
    return Detection(tee, path, tuple(interfaces))


@dataclass(frozen=True)
class Evidence:
    """An attestation report or quote, and the control plane's nonce it must bind."""

    tee: Tee
    report: bytes
    nonce: bytes


@dataclass(frozen=True)
class VerifiedAttestation:
    tee: Tee
    measurement: str                   # hex: the launch measurement / MRTD / MRENCLAVE


class Verifier(Protocol):
    """Checks evidence completely (signature and certificate chain included) or raises AttestationError."""

    tee: Tee

    def verify(self, evidence: Evidence) -> VerifiedAttestation: ...


def _expect(evidence: Evidence, tee: Tee) -> None:
    if evidence.tee is not tee:
        raise AttestationError(f"{evidence.tee.value} evidence given to the {tee.value} verifier")
    if not 0 < len(evidence.nonce) <= 64:
        raise AttestationError("the nonce must be 1 to 64 bytes")


def _bound(report_data: bytes, nonce: bytes) -> None:
    if report_data[:len(nonce)] != nonce:
        raise AttestationError("the report does not carry the control plane's nonce (replayed or for another "
                               "challenge)")


class SevSnpVerifier:
    """AMD SEV-SNP attestation reports (SEV-SNP ABI, ATTESTATION_REPORT: 0x4A0 bytes)."""

    tee = Tee.SEV_SNP
    SIZE = 0x4A0

    def verify(self, evidence: Evidence) -> VerifiedAttestation:
        _expect(evidence, self.tee)
        report = evidence.report
        if len(report) != self.SIZE:
            raise AttestationError(f"an SEV-SNP report is {self.SIZE} bytes, not {len(report)}")
        version, _svn, _policy = struct.unpack_from("<IIQ", report, 0)
        (algo,) = struct.unpack_from("<I", report, 0x34)
        if version < 2 or algo != 1:
            raise AttestationError(f"unsupported SEV-SNP report (version {version}, signature algorithm {algo}; "
                                   "expected version >= 2, ECDSA P-384 = 1)")
        _bound(report[0x50:0x90], evidence.nonce)
        raise UnverifiableEvidence(
            f"SEV-SNP report (measurement {report[0x90:0xC0].hex()[:16]}...) is well formed, but its ECDSA P-384 "
            "signature can only be checked against the chip's VCEK certificate and AMD's ARK/ASK chain (AMD KDS), "
            "which this control plane does not have; refused")


class _IntelQuoteVerifier:
    """Intel DCAP quotes: the 48-byte header, then the report body."""

    tee = Tee.TDX
    TEE_TYPE = 0x81
    VERSIONS: tuple[int, ...] = (4, 5)
    BODY = 584                          # the TD report body (quote v4)
    MEASUREMENT = (136, 48)             # MRTD
    REPORT_DATA = 520

    def verify(self, evidence: Evidence) -> VerifiedAttestation:
        _expect(evidence, self.tee)
        quote = evidence.report
        if len(quote) < 48 + self.BODY + 4:
            raise AttestationError(f"a {self.tee.value} quote has at least {48 + self.BODY + 4} bytes, not {len(quote)}")
        version, key_type, tee_type = struct.unpack_from("<HHI", quote, 0)
        if version not in self.VERSIONS or key_type != 2 or tee_type != self.TEE_TYPE:
            raise AttestationError(f"not a {self.tee.value} ECDSA quote (version {version}, key type {key_type}, "
                                   f"TEE type {tee_type:#x})")
        body = quote[48:48 + self.BODY]
        _bound(body[self.REPORT_DATA:self.REPORT_DATA + 64], evidence.nonce)
        start, size = self.MEASUREMENT
        raise UnverifiableEvidence(
            f"{self.tee.value} quote (measurement {body[start:start + size].hex()[:16]}...) is well formed, but its "
            "ECDSA signature chain (quoting enclave, PCK certificate, Intel root CA) and TCB status can only be "
            "checked with Intel's PCS collateral through DCAP, which this control plane does not have; refused")


class TdxVerifier(_IntelQuoteVerifier):
    """Intel TDX quotes (v4/v5, TEE type 0x81)."""


class SgxVerifier(_IntelQuoteVerifier):
    """Intel SGX quotes (v3, TEE type 0): the report body of the enclave."""

    tee = Tee.SGX
    TEE_TYPE = 0x00
    VERSIONS = (3,)
    BODY = 384
    MEASUREMENT = (64, 32)              # MRENCLAVE
    REPORT_DATA = 320


def verifier_for(tee: Tee) -> Verifier:
    """The verifier for a TEE's evidence; AttestationError for "none" (nothing to verify)."""
    verifiers: dict[Tee, Verifier] = {Tee.SEV_SNP: SevSnpVerifier(), Tee.TDX: TdxVerifier(), Tee.SGX: SgxVerifier()}
    if tee not in verifiers:
        raise AttestationError("a worker without a TEE has nothing to attest")
    return verifiers[tee]


def assess(policy: str, claimed: Tee, evidence: Evidence | None) -> tuple[Status, str]:
    """The control plane's conclusion about a worker's claim, and why (its record's ``attestation`` and
    ``attestation_note``). Only a verifier's acceptance makes a worker VERIFIED."""
    if claimed is Tee.NONE:
        return Status.NONE, ""
    if policy == "none":
        return Status.UNVERIFIED, "HYDRA_ATTESTATION=none: the control plane verifies no attestation"
    if evidence is None:
        return Status.UNVERIFIED, (f"claims {claimed.value} but sent no attestation evidence (Hydra has no "
                                   "challenge protocol for it yet)")
    try:
        verifier_for(claimed).verify(evidence)
    except AttestationError as exc:
        return Status.UNVERIFIED, str(exc)
    return Status.VERIFIED, ""


def eligible(policy: str, tee: str, status: str) -> bool:
    """Whether a worker may run confidential jobs under ``policy`` (HYDRA_ATTESTATION): its attestation was
    verified and its TEE is the one the policy asks for (any, for "auto"). Never under "none"."""
    if policy == "none" or status != Status.VERIFIED.value or tee == Tee.NONE.value:
        return False
    return policy == "auto" or tee == policy


def waiting_reason(policy: str, live: int) -> str:
    """Why a confidential job gets no worker (the job's ``waiting`` field)."""
    wanted = "a TEE (any kind)" if policy == "auto" else policy
    return (f"confidential: waiting for a worker with {wanted} attestation verified by the control plane; "
            f"none of the {live} live worker(s) qualifies")
