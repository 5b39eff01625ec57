"""The durable state, below everything that sends or serves: the ledger (who was told what, and what is
due again) and the subscriber store. Neither imports anything that sends."""
