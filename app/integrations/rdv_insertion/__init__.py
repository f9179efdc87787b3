"""RDV-Insertion: its webhooks and its users' CSV export."""
