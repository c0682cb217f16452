"""Trust between the control plane and volunteers: worker identity (Ed25519 keys and signed
messages, :mod:`.identity`), signed chunk results (:mod:`.results`) and the control host's TLS
certificates (:mod:`.tls`)."""
