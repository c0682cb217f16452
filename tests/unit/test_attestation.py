"""Confidential compute: detecting TEEs through the kernel's interfaces, verifiers that refuse what they
cannot verify, the attestation policy, and confidential job specs."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from hydra_tasks.errors import AttestationError, ConfigError, InvalidJobSpec, UnverifiableEvidence
from hydra_tasks.jobs.spec import parse_job_spec
from hydra_tasks.settings import Settings
from hydra_tasks.trust import attestation
from hydra_tasks.trust.attestation import Evidence, Status, Tee

NONCE = bytes(range(32))


def test_a_machine_without_tee_interfaces_detects_none(tmp_path: Path) -> None:
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "null").touch()
    found = attestation.detect(tmp_path)
    assert found == attestation.Detection(Tee.NONE, "", ())


@pytest.mark.parametrize("device, tee", [("sev-guest", Tee.SEV_SNP), ("tdx_guest", Tee.TDX),
                                         ("sgx_enclave", Tee.SGX)])
def test_each_tee_is_detected_by_its_device_node(tmp_path: Path, device: str, tee: Tee) -> None:
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / device).touch()
    found = attestation.detect(tmp_path)
    assert found.tee is tee and found.evidence_path == f"/dev/{device}" and found.interfaces == (f"/dev/{device}",)


def test_the_configfs_tsm_report_interface_names_its_provider_and_is_preferred(tmp_path: Path) -> None:
    entry = tmp_path / "sys/kernel/config/tsm/report/hydra0"
    entry.mkdir(parents=True)
    (entry / "provider").write_text("tdx_guest\n")
    found = attestation.detect(tmp_path)
    assert found.tee is Tee.TDX and found.evidence_path == "/sys/kernel/config/tsm/report"
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "sev-guest").touch()
    (entry / "provider").write_text("sev_guest\n")
    found = attestation.detect(tmp_path)
    assert found.tee is Tee.SEV_SNP and found.evidence_path == "/sys/kernel/config/tsm/report"
    assert set(found.interfaces) == {"/dev/sev-guest", "/sys/kernel/config/tsm/report"}


def test_a_confidential_vm_wins_over_the_sgx_device(tmp_path: Path) -> None:
    (tmp_path / "dev").mkdir()
    for device in ("sgx_enclave", "tdx_guest"):
        (tmp_path / "dev" / device).touch()
    assert attestation.detect(tmp_path).tee is Tee.TDX


def test_this_machine_is_detected_through_the_real_root() -> None:
    found = attestation.detect()  # whatever it is, it must be one of the known answers
    assert found.tee in Tee and (found.evidence_path == "") == (found.tee is Tee.NONE)


def snp_report(*, nonce: bytes = NONCE, version: int = 2, algo: int = 1) -> bytes:
    report = bytearray(0x4A0)
    struct.pack_into("<IIQ", report, 0, version, 0, 0x30000)
    struct.pack_into("<I", report, 0x34, algo)
    report[0x50:0x50 + len(nonce)] = nonce
    report[0x90:0xC0] = b"\x5a" * 48
    return bytes(report)


def intel_quote(*, tee_type: int, version: int, body: int, report_data: int, nonce: bytes = NONCE) -> bytes:
    quote = bytearray(48 + body + 4 + 64)
    struct.pack_into("<HHI", quote, 0, version, 2, tee_type)
    quote[48 + report_data:48 + report_data + len(nonce)] = nonce
    return bytes(quote)


def test_a_well_formed_sev_snp_report_is_refused_because_its_signature_cannot_be_checked() -> None:
    with pytest.raises(UnverifiableEvidence, match="VCEK.*ARK/ASK"):
        attestation.SevSnpVerifier().verify(Evidence(Tee.SEV_SNP, snp_report(), NONCE))


def test_well_formed_tdx_and_sgx_quotes_are_refused_without_intels_collateral() -> None:
    tdx = intel_quote(tee_type=0x81, version=4, body=584, report_data=520)
    with pytest.raises(UnverifiableEvidence, match="PCS.*DCAP"):
        attestation.TdxVerifier().verify(Evidence(Tee.TDX, tdx, NONCE))
    sgx = intel_quote(tee_type=0, version=3, body=384, report_data=320)
    with pytest.raises(UnverifiableEvidence, match="PCS.*DCAP"):
        attestation.SgxVerifier().verify(Evidence(Tee.SGX, sgx, NONCE))


@pytest.mark.parametrize("evidence, why", [
    (Evidence(Tee.SEV_SNP, snp_report()[:-1], NONCE), "1184 bytes"),
    (Evidence(Tee.SEV_SNP, snp_report(version=1), NONCE), "unsupported"),
    (Evidence(Tee.SEV_SNP, snp_report(algo=0), NONCE), "unsupported"),
    (Evidence(Tee.SEV_SNP, snp_report(nonce=b"old challenge"), NONCE), "nonce"),
    (Evidence(Tee.TDX, snp_report(), NONCE), "not a tdx"),
    (Evidence(Tee.TDX, intel_quote(tee_type=0, version=3, body=584, report_data=520), NONCE), "not a tdx"),
    (Evidence(Tee.TDX, b"\x04\x00", NONCE), "at least"),
    (Evidence(Tee.SGX, intel_quote(tee_type=0, version=3, body=384, report_data=0), NONCE), "nonce"),
])
def test_malformed_or_replayed_evidence_is_refused_as_such(evidence: Evidence, why: str) -> None:
    with pytest.raises(AttestationError, match=why) as caught:
        attestation.verifier_for(evidence.tee).verify(evidence)
    assert not isinstance(caught.value, UnverifiableEvidence)


def test_no_verifier_accepts_anything_so_no_worker_is_ever_attested_here() -> None:
    samples = [(Tee.SEV_SNP, snp_report()), (Tee.TDX, intel_quote(tee_type=0x81, version=4, body=584,
                                                                   report_data=520)),
               (Tee.SGX, intel_quote(tee_type=0, version=3, body=384, report_data=320))]
    for policy in ("auto", "sev-snp", "tdx", "sgx"):
        for tee, report in samples:
            status, note = attestation.assess(policy, tee, Evidence(tee, report, NONCE))
            assert status is Status.UNVERIFIED and "refused" in note
        assert attestation.assess(policy, Tee.SEV_SNP, None)[0] is Status.UNVERIFIED
        assert attestation.assess(policy, Tee.NONE, None) == (Status.NONE, "")
    with pytest.raises(AttestationError):
        attestation.verifier_for(Tee.NONE)


def test_only_a_verified_worker_with_the_policys_tee_is_eligible() -> None:
    assert attestation.eligible("sev-snp", "sev-snp", "verified")
    assert attestation.eligible("auto", "tdx", "verified")
    assert not attestation.eligible("tdx", "sev-snp", "verified")
    assert not attestation.eligible("auto", "sev-snp", "unverified")   # a claim is not enough
    assert not attestation.eligible("auto", "none", "verified")
    assert not attestation.eligible("none", "sev-snp", "verified")     # "none" requires nothing: never eligible


def test_the_attestation_policy_accepts_the_documented_values_only() -> None:
    for value in ("none", "sev-snp", "TDX", "sgx", "auto"):
        assert Settings.from_env({"HYDRA_ATTESTATION": value}).attestation == value.lower()
    with pytest.raises(ConfigError, match="SEV without SNP.*sev-snp"):
        Settings.from_env({"HYDRA_ATTESTATION": "sev"})
    with pytest.raises(ConfigError, match="none, sev-snp, tdx, sgx, auto"):
        Settings.from_env({"HYDRA_ATTESTATION": "nitro"})


def test_confidential_by_default_needs_an_attestation_policy() -> None:
    with pytest.raises(ConfigError, match="HYDRA_CONFIDENTIAL=true needs an attestation policy"):
        Settings.from_env({"HYDRA_CONFIDENTIAL": "true"})
    settings = Settings.from_env({"HYDRA_CONFIDENTIAL": "true", "HYDRA_ATTESTATION": "sev-snp"})
    assert settings.confidential and settings.to_env()["HYDRA_ATTESTATION"] == "sev-snp"


def test_the_removed_enclave_path_setting_says_why() -> None:
    with pytest.raises(ConfigError, match="HYDRA_ENCLAVE_PATH.*no enclave runner"):
        Settings.from_env({"HYDRA_ENCLAVE_PATH": "/opt/enclave"})


def test_a_job_is_confidential_when_it_asks_or_by_default_and_never_without_a_policy() -> None:
    pi = {"kind": "pi", "params": {"samples": 1e6}}
    assert not parse_job_spec(pi).confidential
    assert parse_job_spec({**pi, "confidential": True}, attestation="auto").confidential
    assert parse_job_spec(pi, confidential_default=True, attestation="tdx").confidential
    assert not parse_job_spec({**pi, "confidential": False}, confidential_default=True, attestation="tdx").confidential
    assert parse_job_spec({**pi, "confidential": True}, attestation="auto").to_json()["confidential"] is True
    with pytest.raises(InvalidJobSpec, match="needs an attestation policy"):
        parse_job_spec({**pi, "confidential": True})
    with pytest.raises(InvalidJobSpec, match="true or false"):
        parse_job_spec({**pi, "confidential": "yes"}, attestation="auto")

