"""The token ledger (:mod:`.book`: accounts, mints, transfers, reads), its audit (:mod:`.audit`)
and the reward rule (:mod:`.rewards`)."""
