"""The baseline stage's library: a classical classifier fitted on the texts prepare chose."""
