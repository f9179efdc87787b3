"""CAF/MSA beneficiary flux (VRSB0801): streaming parser -> typed records -> all-or-nothing loader."""
