"""CAF/MSA flux: reader (envelope, beneficiary, instruction), loader, replay, inbox."""
