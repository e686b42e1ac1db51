"""Run records: claiming their folders (claim), writing and loading them (runs), comparing configs over seeds (compare), every figure (plots), all runs as one table (catalog).

Imports core, data and training.
"""
