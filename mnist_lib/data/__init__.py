"""The data layer: IDX files read and verified (idx), the seeded train/validation split (splits), user pictures (images), summaries (explore).

Imports only core.
"""
