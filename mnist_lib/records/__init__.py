"""Run records: writing and loading them (runs), comparing configs over seeds (compare), every figure (plots).

Imports core, data and training.
"""
