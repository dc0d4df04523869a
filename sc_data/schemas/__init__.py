"""The JSON Schemas of the pair record, the scored record and the manifest, and the taxonomy."""
