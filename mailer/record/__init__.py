"""The durable state, below everything that sends or serves: the ledger (who was told what, and what is
due again) and the values it hands back (rows), the state folder (its run lock, the signs that a ledger
existed: state), and the subscriber store. None of them imports anything that sends."""
